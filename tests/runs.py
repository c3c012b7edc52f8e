"""Configs of tiny training runs shared by the engine, viz and demo tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any


def tiny_run_config(data_root: Path, cache_dir: Path, **sections: dict[str, Any]) -> dict:
    """A small_cnn run on a generated folder dataset that trains in seconds on one CPU core.

    ``sections`` (e.g. ``train={"epochs": 2}``) update the defaults key by key.
    """
    config: dict[str, dict[str, Any]] = {
        "data": {
            "dataset": "folder",
            "root": str(data_root),
            "num_workers": 0,
            "image_size": 32,
            "resize": 36,
        },
        "model": {
            "backbone": "small_cnn",
            "pretrained": False,
            "embedding_size": 16,
            "head": "linear",
        },
        "loss": {"name": "daal"},
        "train": {
            "epochs": 1,
            "batch_size": 8,
            "samples_per_class": 2,
            "lr": 1e-3,
            "accelerator": "cpu",
            "cache_dir": str(cache_dir),
            "deterministic": True,
        },
    }
    for section, values in sections.items():
        config[section].update(copy.deepcopy(values))
    return config
