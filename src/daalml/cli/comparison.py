"""`daalml benchmark`: a fair comparison of losses, with seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from daalml.cli.shell import SetOption, _guard


def benchmark(
    config: Annotated[Path, typer.Argument(help="YAML config: data and model are enough.")],
    losses: Annotated[
        str,
        typer.Option(
            "--losses",
            help="Comma-separated loss names or variants NAME@key=value[@key=value...] "
            "(daal@kappa=1.0), or 'all'.",
        ),
    ] = "daal,proxy_anchor",
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per loss (0..N-1).")] = 3,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Folder (default benchmark-runs/<config>)."),
    ] = None,
    set_: SetOption = None,
) -> None:
    """Train every loss with every seed on the same protocol; write results.csv and results.md."""
    from daalml.config import load_config
    from daalml.workflows.benchmark import parse_losses, run_benchmark

    out = output or Path("benchmark-runs") / config.stem

    def action():
        cfg = load_config(config, set_ or ())
        return run_benchmark(cfg, parse_losses(losses), seeds, out)

    _guard(action, lambda: f"interrupted: finished runs stay in {out}; rerun to resume the rest")
    Console(width=140).print((out / "results.md").read_text(), markup=False)
