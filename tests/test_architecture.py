"""The house plan is enforced: the import-linter contracts of pyproject.toml hold on src/."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    found = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    found = found or shutil.which("lint-imports")
    if found is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    return found


def test_every_import_contract_is_kept() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [_lint_imports(), "--no-cache"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kept, 0 broken" in done.stdout


def test_a_back_edge_breaks_the_layers(tmp_path: Path) -> None:
    # a copy of the package in which the engine imports a workflow: the contract must fail
    copy = tmp_path / "src"
    shutil.copytree(REPO / "src", copy, ignore=shutil.ignore_patterns("__pycache__"))
    probe = copy / "daalml" / "engine" / "inference.py"
    probe.write_text(probe.read_text() + "\nimport daalml.workflows.train  # back edge\n")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    done = subprocess.run(
        [_lint_imports(), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "daalml.engine.inference -> daalml.workflows.train" in done.stdout


MAX_LINES = 400
COHESIVE = "One cohesive thing over 400 lines:"


def test_no_module_is_over_400_lines_unless_its_docstring_says_why() -> None:
    long = []
    for path in sorted((REPO / "src" / "daalml").rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_LINES:
            docstring = ast.get_docstring(ast.parse("\n".join(lines))) or ""
            if COHESIVE not in " ".join(docstring.split()):
                long.append(f"{path.relative_to(REPO)} ({len(lines)} lines)")
    assert not long, "split these, or say in the docstring what one thing they are: " + ", ".join(
        long
    )


def test_tests_mirror_the_source_packages() -> None:
    packages = {
        p.name for p in (REPO / "src" / "daalml").iterdir() if (p / "__init__.py").is_file()
    }
    folders = {p.name for p in (REPO / "tests").iterdir() if (p / "__init__.py").is_file()}
    assert packages - {"cli"} <= folders  # the CLI is tested through each workflow's tests
    assert folders <= packages
