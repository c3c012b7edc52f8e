"""`daalml train` and `daalml evaluate`: a thin shell over daalml.workflows.train."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from daalml.cli.shell import SetOption, _guard, interrupted_run, metrics_table


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
    from daalml.workflows.train import train as run_train

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


def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by daalml train.")],
    set_: SetOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write metrics.json here.")
    ] = None,
) -> None:
    """Re-evaluate a checkpoint on its config's test split and print (and write) the metrics."""
    from daalml.workflows.evaluate import evaluate as run_evaluate

    results = _guard(lambda: run_evaluate(checkpoint, set_ or (), output))
    print(json.dumps(results, indent=2))
