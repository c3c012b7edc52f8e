"""`daalml visualize` and `daalml report`: pictures and an HTML report of a training run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daalml.cli.shell import _guard

RunDir = Annotated[Path, typer.Argument(help="A run directory written by `daalml train`.")]


def visualize(
    run_dir: RunDir,
    method: Annotated[
        str, typer.Option("--method", "-m", help="2-D projection: tsne, umap or pca.")
    ] = "tsne",
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            "-k",
            help="map (test embeddings by class), segments (DAAL), margins (DAAL: class "
            "thickness vs margin), retrieval (grid), curves.",
        ),
    ] = "map",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="PNG file (default RUN_DIR/<method>.png or <kind>.png)."
        ),
    ] = None,
) -> None:
    """Draw the test embeddings of a run in 2-D by class (or another picture with --kind)."""
    from daalml.workflows.visualize import visualize as draw

    path = _guard(lambda: draw(run_dir, kind=kind, method=method, output=output))
    print(path)


def report(
    run_dir: RunDir,
    method: Annotated[
        str, typer.Option("--method", "-m", help="2-D projection of the map: tsne, umap or pca.")
    ] = "tsne",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="HTML file (default RUN_DIR/report.html).")
    ] = None,
) -> None:
    """Write one self-contained HTML page: config, metrics and all pictures of a run."""
    from daalml.workflows.report import write_report

    path = _guard(lambda: write_report(run_dir, method=method, output=output))
    print(path)
