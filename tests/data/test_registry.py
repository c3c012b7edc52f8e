"""The dataset registry: a registered layout or in-memory build is named in a config and built."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from daalml.config import DATASETS, config_from_dict
from daalml.data import registry
from daalml.data.layouts.folder import load_folder
from daalml.data.preprocessing import preprocessing_for
from daalml.data.registry import (
    BuiltDatasets,
    available_datasets,
    categories_of,
    dataset_entry,
    register_dataset,
)
from daalml.engine.data import prepare_data
from daalml.errors import DaalmlError
from daalml.models.build import build_model
from tests.data.builders import make_folder
from tests.runs import tiny_run_config


@pytest.fixture
def datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test are dropped after it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_the_built_in_datasets_are_registered_with_their_channels() -> None:
    assert available_datasets() == DATASETS
    assert dataset_entry("glyphs").channels == 1 and dataset_entry("glyphs").build is not None
    assert all(dataset_entry(n).channels == 3 for n in DATASETS if n != "glyphs")


def test_a_registered_layout_is_named_in_a_config_and_built(datasets, tmp_path: Path) -> None:
    calls: list[int | None] = []

    def my_layout(root: Path, *, train_classes: int | None = None):
        calls.append(train_classes)
        splits = load_folder(root, train_classes=train_classes)
        splits.name = "my_layout"
        return splits

    raw = tiny_run_config(make_folder(tmp_path / "data"), tmp_path / "cache")
    raw["data"]["dataset"] = "my_layout"
    with pytest.raises(DaalmlError, match=r"data\.dataset: expected one of"):
        config_from_dict(raw)
    register_dataset("my_layout", layout=my_layout)
    cfg = config_from_dict(raw)
    assert cfg.data.channels == 3
    model = build_model(cfg)
    data = prepare_data(cfg, model.backbone)
    assert calls == [None]
    assert data.num_train_classes == 2 and data.test is not None and len(data.test) == 6


def test_a_registered_layout_brings_its_categories(datasets, tmp_path: Path) -> None:
    """Categories (per_category metrics) come from the registry entry, not a table of names."""
    splits = load_folder(make_folder(tmp_path / "data"), train_classes=None)
    assert categories_of("folder", splits.test) is None
    assert registry.dataset_entry("sop").category is not None
    register_dataset(
        "grouped", layout=load_folder, category=lambda record: record.class_name[:1]
    )
    assert categories_of("grouped", splits.test) == [r.class_name[:1] for r in splits.test]


def test_a_registered_build_gives_its_channels_and_preprocessing(datasets, tmp_path) -> None:
    generator = torch.Generator().manual_seed(0)

    def tensors(n: int, classes: int) -> torch.utils.data.TensorDataset:
        images = torch.rand(n, 2, 8, 8, generator=generator)
        labels = torch.arange(n) % classes
        dataset = torch.utils.data.TensorDataset(images, labels)
        dataset.labels = labels  # type: ignore[attr-defined]
        return dataset

    def build(cfg, cache_dir: Path) -> BuiltDatasets:
        train = tensors(8, 2)
        return BuiltDatasets(train=train, num_train_classes=2, test=tensors(6, 3), train_eval=train)

    def two_channel_input(cfg, channels: int):
        from daalml.data.preprocessing import Preprocessing

        return Preprocessing(8, None, (0.0,) * channels, (1.0,) * channels, "RGB")

    register_dataset("pairs", build=build, channels=2, preprocessing=two_channel_input)
    with pytest.raises(DaalmlError, match="already registered"):
        register_dataset("pairs", build=build)
    with pytest.raises(DaalmlError, match="a layout or a build"):
        register_dataset("neither")
    raw = tiny_run_config(tmp_path, tmp_path / "cache", data={"dataset": "pairs", "root": None})
    cfg = config_from_dict(raw)
    model = build_model(cfg)
    assert model.backbone.in_chans == 2  # small_cnn takes the dataset's channels
    data = prepare_data(cfg, model.backbone)
    assert data.num_train_classes == 2 and len(data.test) == 6
    prep = preprocessing_for(cfg, model.backbone)
    assert prep.image_size == 8 and prep.mean == (0.0, 0.0)


def test_glyph_configs_build_a_one_channel_small_cnn() -> None:
    cfg = config_from_dict({"data": {"dataset": "glyphs"}, "model": {"backbone": "small_cnn"}})
    assert build_model(cfg).backbone.in_chans == 1
    assert preprocessing_for(cfg, build_model(cfg).backbone).mode == "L"
