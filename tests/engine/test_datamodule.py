"""RunDataModule: local rank 0's prepare_data fills the caches, every rank's setup reads them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from daalml.config import config_from_dict
from daalml.engine.data import list_images
from daalml.engine.datamodule import RunDataModule
from daalml.models.build import build_model
from tests.data.builders import make_folder
from tests.runs import tiny_run_config


def _module(tmp: Path) -> RunDataModule:
    root = make_folder(tmp / "ds", n_classes=8, per_class=3, size=32)
    cfg = config_from_dict(
        tiny_run_config(root, tmp / "cache", train={"cache_features": True, "val_classes": 2})
    )
    torch.manual_seed(0)
    module = RunDataModule(cfg, build_model(cfg).backbone, list_images(cfg))
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    module.trainer = SimpleNamespace(strategy=cpu, world_size=1, global_rank=0)  # type: ignore[assignment]
    return module


def _cached(tmp: Path) -> list[Path]:
    return sorted(p for p in (tmp / "cache").rglob("*") if p.is_file())


def test_prepare_data_builds_the_caches_and_setup_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rank_zero = _module(tmp_path)
    with pytest.raises(RuntimeError, match="setup has not run"):
        _ = rank_zero.run_data
    assert _cached(tmp_path) == []
    rank_zero.prepare_data()
    written = _cached(tmp_path)
    assert written  # the feature caches of every split
    rank_zero.setup("fit")
    other = _module(tmp_path)  # another rank: no prepare_data, its setup reads what was written

    def no_backbone(images: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a cache hit runs no backbone")

    monkeypatch.setattr(other.backbone, "forward", no_backbone)
    other.setup("fit")
    assert _cached(tmp_path) == written
    mine, theirs = rank_zero.run_data, other.run_data
    assert mine.features and theirs.features
    for split in ("train", "val", "test"):
        torch.testing.assert_close(getattr(theirs, split).tensors, getattr(mine, split).tensors)
    assert other.excluded_queries == rank_zero.excluded_queries == 0
