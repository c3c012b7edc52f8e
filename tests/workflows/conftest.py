"""Shared fixtures: an easy generated dataset and one tiny run trained once per test session.

The dataset has classes of solid colours far apart in hue, each image slightly jittered, so
that even a briefly trained model finds an image's own class first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from daalml.config import load_config
from daalml.workflows.train import train
from tests.runs import tiny_run_config

# Twelve well separated colours (RGB): six train classes, six unseen test classes.
PALETTE = (
    (230, 25, 25),
    (25, 200, 25),
    (30, 30, 230),
    (240, 220, 20),
    (20, 210, 220),
    (220, 30, 220),
    (250, 140, 10),
    (120, 60, 10),
    (250, 250, 250),
    (10, 10, 10),
    (128, 128, 128),
    (10, 100, 60),
)
SIZE = 40
PER_CLASS = 4


def colour_image(path: Path, colour: tuple[int, int, int], seed: int, size: int = SIZE) -> Path:
    """A lossless PNG of ``colour`` plus a little seeded per-pixel noise (+-6 levels)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(-6, 7, size=(size, size, 3))
    pixels = np.clip(np.asarray(colour)[None, None, :] + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def make_colour_folder(root: Path, per_class: int = PER_CLASS) -> Path:
    """root/class_XX/img_YYY.png for every colour of PALETTE; returns root."""
    for c, colour in enumerate(PALETTE):
        for j in range(per_class):
            colour_image(root / f"class_{c:02d}" / f"img_{j:03d}.png", colour, seed=100 * c + j)
    return root


def run_config(tmp: Path, data_root: Path, **sections: dict) -> dict:
    """A small_cnn run on ``data_root`` that trains in about a second on one CPU core."""
    config = tiny_run_config(
        data_root, tmp / "cache", train={"epochs": 3, "lr": 3e-3, "val_classes": 2}
    )
    for section, values in sections.items():
        config[section].update(values)
    return config


def train_run(tmp: Path, data_root: Path, **sections: dict) -> Path:
    """Train a run into tmp/run and return its directory."""
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(run_config(tmp, data_root, **sections)))
    run = tmp / "run"
    train(load_config(path, ()), run, progress=False)
    return run


@pytest.fixture(scope="session")
def colour_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The easy dataset: 12 colour classes x 4 images of 40 px."""
    return make_colour_folder(tmp_path_factory.mktemp("colours") / "ds")


@pytest.fixture(scope="session")
def daal_run(tmp_path_factory: pytest.TempPathFactory, colour_data: Path) -> Path:
    """A DAAL run trained once for the whole session (do not write into it in tests)."""
    return train_run(tmp_path_factory.mktemp("daal"), colour_data)


@pytest.fixture(scope="session")
def checkpoint(daal_run: Path) -> Path:
    """The run's selected checkpoint."""
    return daal_run / "checkpoints" / "best.ckpt"
