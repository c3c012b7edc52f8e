"""One preprocessing description: built from the config, saved in checkpoints, used everywhere."""

from __future__ import annotations

from pathlib import Path

import torch

from daalml.data.preprocessing import Preprocessing, preprocessing_for
from daalml.data.transforms import describe_transform
from daalml.engine.checkpoint import META_KEY, PREPROCESSING_KEY, load_checkpoint, load_module
from daalml.engine.data import prepare_data
from daalml.retrieval import preprocessing


def test_the_checkpoint_saves_the_preprocessing_its_config_gives(checkpoint: Path) -> None:
    module, cfg = load_module(checkpoint)
    saved = load_checkpoint(checkpoint)[META_KEY][PREPROCESSING_KEY]
    expected = preprocessing_for(cfg, module.model.backbone)
    assert saved == expected.to_dict()
    assert Preprocessing.from_dict(saved) == expected == preprocessing(module)


def test_training_evaluates_with_the_same_transform(checkpoint: Path) -> None:
    module, cfg = load_module(checkpoint)
    data = prepare_data(cfg, module.model.backbone)
    used = describe_transform(data.test.transform)  # type: ignore[union-attr]
    assert used == describe_transform(preprocessing(module).transform())


def test_the_saved_description_wins_and_old_checkpoints_fall_back(
    checkpoint: Path, tmp_path: Path
) -> None:
    raw = torch.load(checkpoint, map_location="cpu", weights_only=False)
    raw[META_KEY][PREPROCESSING_KEY]["image_size"] = 20
    edited = tmp_path / "edited.ckpt"
    torch.save(raw, edited)
    assert preprocessing(load_module(edited)[0]).image_size == 20
    del raw[META_KEY][PREPROCESSING_KEY]
    old = tmp_path / "old.ckpt"
    torch.save(raw, old)
    module, cfg = load_module(old)
    assert preprocessing(module) == preprocessing_for(cfg, module.model.backbone)
    assert preprocessing(module).image_size == cfg.data.image_size
