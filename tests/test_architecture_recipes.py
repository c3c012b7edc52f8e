"""The recipes of docs/architecture.md run as written: a loss, a backbone, a layout, a command."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from daalml.config import config_from_dict, load_config
from daalml.data import registry as datasets
from daalml.engine.data import prepare_data
from daalml.losses import registry as losses
from daalml.models import backbones
from daalml.models.build import build_model
from tests.data.builders import make_folder

PAGE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _recipes() -> dict[str, str]:
    """The python block under each `### ` heading of the Recipes section."""
    text = PAGE.read_text(encoding="utf-8").split("## Recipes", 1)[1]
    blocks = {}
    for part in text.split("\n### ")[1:]:
        title, body = part.split("\n", 1)
        found = re.search(r"```python\n(.*?)```", body, re.S)
        assert found, f"recipe {title!r} has no python block"
        blocks[title.strip()] = found.group(1)
    return blocks


def _run(title: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "recipe"}
    exec(compile(_recipes()[title], f"{PAGE.name}: {title}", "exec"), namespace)
    return namespace


@pytest.fixture(autouse=True)
def registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a recipe registers is dropped after its test."""
    monkeypatch.setattr(losses, "_RECIPES", dict(losses._RECIPES))
    monkeypatch.setattr(losses, "RECIPE_NOTES", dict(losses.RECIPE_NOTES))
    monkeypatch.setattr(backbones, "_REGISTRY", dict(backbones._REGISTRY))
    monkeypatch.setattr(datasets, "_REGISTRY", dict(datasets._REGISTRY))


def test_the_page_has_the_four_recipes() -> None:
    assert list(_recipes()) == ["A loss", "A backbone", "A dataset layout", "A command"]


def test_the_loss_recipe_registers_a_loss_configs_can_name() -> None:
    namespace = _run("A loss")
    assert namespace["loss"].name == "my_contrastive"
    assert "my_contrastive" in losses.loss_names()
    assert "Hadsell" in losses.RECIPE_NOTES["my_contrastive"]
    assert load_config(overrides=["loss.name=my_contrastive"]).loss.name == "my_contrastive"


def test_the_backbone_recipe_is_named_in_a_config_and_built() -> None:
    _run("A backbone")
    cfg = config_from_dict({"data": {"dataset": "glyphs"}, "model": {"backbone": "tiny"}})
    model = build_model(cfg)
    assert model.backbone.name == "tiny" and model.backbone.in_chans == 1


def test_the_layout_recipe_trains_on_its_files(tmp_path: Path) -> None:
    _run("A dataset layout")
    make_folder(tmp_path / "images")
    cfg = config_from_dict(
        {
            "data": {"dataset": "my_layout", "root": str(tmp_path), "num_workers": 0},
            "model": {"backbone": "small_cnn", "pretrained": False, "head": "linear"},
            "train": {"cache_dir": str(tmp_path / "cache")},
        }
    )
    data = prepare_data(cfg, build_model(cfg).backbone)
    assert data.num_train_classes == 2 and len(data.train) == 6


def test_the_command_recipe_runs_under_the_guard(tmp_path: Path) -> None:
    namespace = _run("A command")
    app = typer.Typer()
    app.command()(namespace["which_checkpoint"])
    app.command()(lambda: None)  # two commands: typer keeps the command's name
    result = CliRunner().invoke(app, ["which-checkpoint", str(tmp_path)])
    assert result.exit_code == 2
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    result = CliRunner().invoke(app, ["which-checkpoint", str(tmp_path)])
    assert result.exit_code == 0 and result.stdout.strip().endswith("last.ckpt")
