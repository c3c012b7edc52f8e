"""`daalml configs`: the configs shipped in the package, usable by name anywhere."""

from __future__ import annotations

from typing import Annotated

import typer

from daalml.cli.shell import _guard


def configs(
    name: Annotated[
        str | None,
        typer.Argument(help="Print this shipped config's YAML (e.g. to copy and edit it)."),
    ] = None,
) -> None:
    """List the shipped configs (name and description); `daalml train NAME` uses one."""
    from daalml.shipped import shipped_config, shipped_configs

    if name is not None:
        print(_guard(lambda: shipped_config(name)).read_text(encoding="utf-8"), end="")
        return
    listing = shipped_configs()
    width = max(map(len, listing), default=0)
    for config_name, description in listing.items():
        print(f"{config_name:<{width}}  {description}".rstrip())
