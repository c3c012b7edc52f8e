"""CLI commands beyond train/evaluate, one module per group; each registers on daalml.cli.app."""
