"""The `daalml` command line: a thin shell over daalml.workflows functions.

``daalml.cli:main`` is the script's entry point; ``app`` the typer app (tests invoke it).
"""

from __future__ import annotations

from daalml.cli.app import app, main
from daalml.cli.shell import interrupted_run

__all__ = ["app", "interrupted_run", "main"]
