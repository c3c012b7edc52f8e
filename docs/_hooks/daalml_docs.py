"""MkDocs hooks: the CLI reference generated from the Typer app; Sphinx roles made readable.

``docs/api/cli.md`` holds the marker ``<!-- daalml-cli -->``; it is replaced with a table of
the commands and, per command, its usage line, arguments and options, so it cannot drift.
Docstrings here and there write Sphinx roles (``:func:`knn```); the rendered pages show the
name as code without the role prefix.
"""

from __future__ import annotations

import html
import re
from typing import Any

MARKER = "<!-- daalml-cli -->"
_ROLE = re.compile(r":(?:attr|class|data|exc|func|meth|mod|obj):(<code>)")


def _cell(text: str) -> str:
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def _is_argument(param: Any) -> bool:
    return param.param_type_name == "argument"  # Typer ships its own copy of click


def _usage(name: str, command: Any) -> str:
    args = []
    for param in command.params:
        if _is_argument(param):
            arg = param.name.upper()
            args.append(arg if param.required else f"[{arg}]")
    return " ".join(["daalml", name, "[OPTIONS]", *args])


def _param_row(param: Any) -> str:
    if _is_argument(param):
        name = f"`{param.name.upper()}`"
    else:
        name = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
    default = param.default
    shown = "" if default in (None, False, ()) or callable(default) else f"`{default}`"
    required = "yes" if param.required else ""
    return f"| {name} | {_cell(getattr(param, 'help', None) or '')} | {shown} | {required} |"


def cli_reference() -> str:
    """Markdown for every `daalml` command, in the order `daalml --help` lists them."""
    import typer.main

    from daalml.cli import app

    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="daalml")
    names = group.list_commands(ctx)
    commands = {name: group.get_command(ctx, name) for name in names}
    lines = ["| command | what it does |", "|---|---|"]
    lines += [
        f"| [`{n}`](#daalml-{n}) | {_cell((c.help or '').split(chr(10))[0])} |"
        for n, c in commands.items()
    ]
    for name, command in commands.items():
        lines += ["", f"## daalml {name}", "", _cell(command.help or ""), ""]
        lines += ["```", _usage(name, command), "```", ""]
        params = [p for p in command.params if p.name != "help"]
        if params:
            lines += ["| argument / option | meaning | default | required |", "|---|---|---|---|"]
            lines += [_param_row(p) for p in params]
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Fill the marker (MkDocs calls this for every page)."""
    return markdown.replace(MARKER, cli_reference()) if MARKER in markdown else markdown


def on_page_content(html_text: str, **_: Any) -> str:
    """Drop Sphinx role prefixes (``:class:``) left in front of rendered code spans."""
    return _ROLE.sub(r"\1", html_text)
