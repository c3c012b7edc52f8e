"""What every command module shares: the error guard, the stderr console, `--set`, tables.

User errors (DaalmlError) are printed as one line on stderr with exit code 2. This module
sits below the command modules and imports none of them, so no import runs back up.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from daalml.errors import DaalmlError

console = Console(stderr=True)
T = TypeVar("T")

Checkpoint = Annotated[Path, typer.Argument(help="A checkpoint written by `daalml train`.")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set train.lr=1e-3 (repeatable)."),
]


def _guard(action: Callable[[], T], on_interrupt: Callable[[], str] | None = None) -> T:
    """Run ``action``; a DaalmlError becomes one line on stderr and exit code 2.

    Ctrl-C exits with 130 after one line: ``on_interrupt()`` says what was kept, if anything.
    """
    try:
        return action()
    except DaalmlError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        message = on_interrupt() if on_interrupt else "interrupted"
        console.print(message, highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(code=130) from None


def interrupted_run(run_dir: Path, since: float) -> str:
    """What a Ctrl-C'd training left: a checkpoint written since ``since``, or nothing."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file() and last.stat().st_mtime >= since:
        return f"interrupted: {last} was saved; rerun with --resume to continue"
    return "interrupted before the first checkpoint: nothing to resume, rerun to start again"


def metrics_table(rows: dict[str, dict[str, Any]], title: str = "") -> Table:
    """A rich table: one row per method, one column per retrieval metric."""
    keys = [k for k in next(iter(rows.values())) if isinstance(next(iter(rows.values()))[k], float)]
    table = Table(title=title or None)
    table.add_column("model")
    for key in keys:
        table.add_column(key, justify="right")
    for name, metrics in rows.items():
        table.add_row(name, *(f"{100 * metrics[k]:.2f}" for k in keys))
    return table
