"""Frozen-backbone feature cache: run the backbone over a dataset once, reuse the features.

With a frozen backbone only the head trains, so each image's features never change. They
are computed once (eval mode, no gradients) and stored as ``cache_dir/<sha1 of key>.pt``;
the key must describe everything that changes the features (backbone, weights, dataset,
split, image size, transform). Files are written atomically (temp file + ``os.replace``),
so an interrupted run never leaves a half-written cache; an unreadable or mismatching file
is recomputed with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from daalml.data.batches import concat_batches, map_batches
from daalml.errors import DaalmlError

if TYPE_CHECKING:  # data/ does not import models/ at run time: any backbone-like module will do
    from daalml.models.backbones import Backbone

CACHE_FORMAT = 1


def cache_path(cache_dir: Path, key: Mapping[str, str]) -> Path:
    """Where the features for ``key`` live: ``cache_dir/<sha1 of the sorted-key JSON>.pt``."""
    if not key:
        raise DaalmlError("feature cache key is empty: name the backbone, dataset and transform")
    for name, value in key.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise DaalmlError(
                f"feature cache key {name!r}: keys and values must be strings, got {value!r}"
            )
    digest = hashlib.sha1(json.dumps(dict(key), sort_keys=True).encode("utf-8")).hexdigest()
    return Path(cache_dir) / f"{digest}.pt"


def _load(path: Path, key: Mapping[str, str], n: int, dim: int) -> tuple[torch.Tensor, ...] | None:
    """The cached (features, labels), or None (with a warning) if unusable."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        features, labels = blob["features"], blob["labels"]
        problem = None
        if blob.get("format") != CACHE_FORMAT or blob.get("key") != dict(key):
            problem = "written for another key or format"
        elif tuple(features.shape) != (n, dim) or tuple(labels.shape) != (n,):
            problem = f"holds {tuple(features.shape)} features, expected ({n}, {dim})"
    except Exception as err:  # torch/pickle/zip raise many types for a damaged file
        problem = f"unreadable ({type(err).__name__}: {err})"
    if problem is not None:
        warnings.warn(f"feature cache {path}: {problem}; recomputing", stacklevel=3)
        return None
    return features.float(), labels.long()


def _save(path: Path, key: Mapping[str, str], features: torch.Tensor, labels: torch.Tensor) -> None:
    blob: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "key": dict(key),
        "features": features,
        "labels": labels,
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(blob, handle)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _inference_setup(
    backbone: Backbone, device: torch.device, channels_last: bool
) -> Iterator[None]:
    """Eval mode, target device and memory format for the duration; all restored after."""
    was_training = backbone.training
    was_channels_last = backbone.channels_last
    param = next(backbone.parameters(), None)
    home = param.device if param is not None else torch.device("cpu")
    backbone.eval().to(device)
    backbone.set_channels_last(channels_last)
    try:
        yield
    finally:
        backbone.set_channels_last(was_channels_last)
        backbone.to(home).train(was_training)


def _check_item(item: Any) -> None:
    """Fail early, with a clear message, on datasets that do not yield (image, label)."""
    if not isinstance(item, (list, tuple)) or len(item) < 2:
        raise DaalmlError("feature cache: dataset items must be (image, label) pairs")
    if not isinstance(item[0], torch.Tensor) or item[0].ndim != 3:
        raise DaalmlError(
            "feature cache: dataset images must be (C, H, W) tensors (add ToTensor to the transform)"
        )


def cached_features(
    backbone: Backbone,
    dataset: Dataset,
    *,
    cache_dir: Path,
    key: dict[str, str],
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    channels_last: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, feature_dim) float32 and labels (N,) int64 of ``dataset``, on the CPU.

    Loaded from the cache file when it exists and matches ``key`` and the dataset size;
    otherwise computed by the one batch loop (:func:`daalml.data.batches.map_batches`: no
    gradients, in dataset order) with the backbone in eval mode, and saved.
    ``channels_last=None`` uses channels-last on CPU, where it is faster. The backbone's mode,
    device and memory format are restored afterwards.
    """
    cache_dir = Path(cache_dir)
    path = cache_path(cache_dir, key)
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DaalmlError(f"feature cache {path}: the dataset is empty")
    if batch_size < 1:
        raise DaalmlError(f"feature cache: batch_size must be positive, got {batch_size}")
    if path.exists():
        loaded = _load(path, key, n, backbone.feature_dim)
        if loaded is not None:
            return loaded[0], loaded[1]
    _check_item(dataset[0])
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DaalmlError(f"feature cache directory {cache_dir}: cannot create ({err})") from err
    device = torch.device(device)
    if channels_last is None:
        channels_last = device.type == "cpu"
    with _inference_setup(backbone, device, channels_last):
        batches = map_batches(
            backbone,
            dataset,
            batch_size=batch_size,
            device=device,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            progress=progress,
            description=f"features ({backbone.name})",
        )
        features, labels = concat_batches(batches)
    if features.shape != (n, backbone.feature_dim) or labels.shape != (n,):
        raise DaalmlError(
            f"feature cache {path}: backbone {backbone.name} gave {tuple(features.shape)} "
            f"features for {n} images, expected ({n}, {backbone.feature_dim})"
        )
    _save(path, key, features, labels)
    return features, labels
