"""`daalml demo`: the first thing a new user runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from daalml.cli.shell import _guard, metrics_table


def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path(
        "daalml-demo"
    ),
    seed: Annotated[int, typer.Option("--seed", help="Random seed (data, init, batches).")] = 0,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="About 10 s: 40 characters, 5 epochs (for tests and a first look)."
        ),
    ] = False,
) -> None:
    """Train DAAL and Proxy-Anchor side by side on the built-in glyphs (no download)."""
    from daalml.workflows.demo import run_demo

    result = _guard(lambda: run_demo(output, seed=seed, quick=quick))
    console = Console(width=120)
    console.print(metrics_table(result.metrics, title="glyphs: unseen test characters (%)"))
    console.print(
        f"{result.seconds:.0f} s. Report: {result.output / 'report.md'}, "
        f"picture: {result.output / 'tsne.png'}, metrics: {result.output / 'metrics.json'}"
    )
