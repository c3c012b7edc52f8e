"""The `daalml` command line: a thin shell over daalml.engine functions.

User errors (DaalmlError) are printed as one line on stderr with exit code 2.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from daalml.errors import DaalmlError

app = typer.Typer(
    help="Deep metric learning with DAAL, the Density-Aware Adaptive Line Margin loss.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
T = TypeVar("T")

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


@app.command()
def train(
    config: Annotated[
        Path, typer.Argument(help="YAML config file, or a shipped config's name (daalml configs).")
    ],
    set_: SetOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Run directory (default runs/<config>).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from last.ckpt.")] = False,
) -> None:
    """Train an embedding model; writes config.yaml, metrics.json, checkpoints/ and logs/."""
    from daalml.config import load_config
    from daalml.engine.run import train as run_train

    out = output or Path("runs") / config.stem

    def action() -> dict[str, Any]:
        return run_train(load_config(config, set_ or ()), out, resume=resume)

    started = time.time()
    results = _guard(action, lambda: interrupted_run(out, started))
    if results:
        rows = {"pretrained": results["pretrained"], "trained": results}
        Console(width=120).print(
            metrics_table(rows, title=f"test metrics (%) -> {out / 'metrics.json'}")
        )


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by daalml train.")],
    set_: SetOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write metrics.json here.")
    ] = None,
) -> None:
    """Re-evaluate a checkpoint on its config's test split and print (and write) the metrics."""
    from daalml.engine.run import evaluate as run_evaluate

    results = _guard(lambda: run_evaluate(checkpoint, set_ or (), output))
    print(json.dumps(results, indent=2))


# Commands of daalml.commands register themselves on `app` when imported.
from daalml.commands import benchmark, configs, demo, retrieval, viz  # noqa: E402,F401


def main() -> None:
    """Entry point of the `daalml` script."""
    app(prog_name="daalml")


if __name__ == "__main__":  # `python -m daalml.cli`: run the imported module, which has them all
    from daalml.cli import main as package_main

    sys.exit(package_main())
