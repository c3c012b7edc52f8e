"""The typer app: every command of `daalml`, registered in the order `daalml --help` lists them.

The command modules define plain functions and import nothing of this package but
:mod:`daalml.cli.shell`; this module registers them, so no import runs back up.
"""

from __future__ import annotations

import typer

from daalml.cli import comparison, configs, exporting, pictures, search, tour, training

app = typer.Typer(
    help="Deep metric learning with DAAL, the Density-Aware Adaptive Line Margin loss.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for command in (
    training.train,
    training.evaluate,
    comparison.benchmark,
    configs.configs,
    tour.demo,
    search.embed,
    search.index,
    search.search,
    exporting.export,
    pictures.visualize,
    pictures.report,
):
    app.command()(command)


def main() -> None:
    """Entry point of the `daalml` script."""
    app(prog_name="daalml")
