"""Running the `daalml` CLI in-process in tests: success gives stdout, bad input one line."""

from __future__ import annotations

from typer.testing import CliRunner

from daalml.cli import app

runner = CliRunner()


def invoke_ok(*args: str) -> str:
    """stdout of a command that must succeed (exceptions propagate, with their traceback)."""
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def invoke_fails(*args: str) -> str:
    """Output of a command that must fail as bad input: exit code 2, no traceback."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output
