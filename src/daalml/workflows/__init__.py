"""Workflows: what a user asks for, as plain functions of a config or of paths.

train, evaluate, benchmark, demo, embed/index/search, export, visualize/report. They compose the
engine and the libraries below it; the CLI is a thin shell over them. Nothing here imports cli/.
"""
