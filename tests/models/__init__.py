"""Tests for daalml.models and the feature cache."""
