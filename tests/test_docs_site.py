"""The docs site's generated CLI page (docs/_hooks/daalml_docs.py) covers every command."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import typer.main

from daalml.cli import app

HOOKS = Path(__file__).resolve().parents[1] / "docs" / "_hooks" / "daalml_docs.py"


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("daalml_docs_hooks", HOOKS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_page_lists_every_command_with_its_usage_and_options() -> None:
    hooks = _hooks()
    page = hooks.on_page_markdown(f"# Command line\n\n{hooks.MARKER}\n")
    group = typer.main.get_command(app)
    names = group.list_commands(group.context_class(group, info_name="daalml"))
    assert {"train", "configs", "demo", "benchmark"} <= set(names)
    for name in names:
        assert f"| [`{name}`](#daalml-{name}) |" in page
        assert f"\n## daalml {name}\n" in page
    assert "daalml train [OPTIONS] CONFIG\n" in page
    assert "daalml configs [OPTIONS] [NAME]\n" in page
    assert "| `--output`, `-o` | Run directory (default runs/&lt;config&gt;). |" in page
    assert hooks.MARKER not in page
    assert hooks.on_page_markdown("no marker") == "no marker"


def test_sphinx_role_prefixes_are_dropped_from_rendered_code() -> None:
    html = "see :func:<code>knn</code> and :class:<code>Recipe</code>, a:b:<code>x</code>"
    assert _hooks().on_page_content(html) == (
        "see <code>knn</code> and <code>Recipe</code>, a:b:<code>x</code>"
    )
