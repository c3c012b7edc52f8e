"""Embeddings of image files as an .npz: vectors, paths, labels and class names when known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from daalml.data.listing import ImageList
from daalml.errors import DaalmlError


def save_embeddings(
    path: str | Path,
    embeddings: torch.Tensor | np.ndarray,
    images: ImageList,
    *,
    checkpoint: str | Path | None = None,
) -> Path:
    """Write an .npz: ``embeddings`` (N, d) float32, ``paths``, and when known ``labels``
    (int64), ``class_names`` and ``checkpoint``."""
    path = Path(path)
    array = np.asarray(embeddings, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != len(images.paths):
        raise DaalmlError(
            f"{path}: {array.shape[0] if array.ndim else 0} embeddings for {len(images.paths)} "
            "images"
        )
    payload: dict[str, np.ndarray] = {
        "embeddings": array,
        "paths": np.array([str(p) for p in images.paths], dtype=str),
    }
    if images.labels is not None:
        payload["labels"] = np.asarray(images.labels, dtype=np.int64)
    if images.class_names is not None:
        payload["class_names"] = np.array(images.class_names, dtype=str)
    if checkpoint is not None:
        payload["checkpoint"] = np.array(str(Path(checkpoint).resolve()))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:  # np.savez would append .npz to a name without it
        np.savez(handle, **payload)
    return path


def load_embeddings(path: str | Path) -> tuple[np.ndarray, ImageList]:
    """Read what :func:`save_embeddings` wrote: (embeddings, the images and their labels)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise DaalmlError(f"embeddings file {path}: not a readable .npz ({err})") from err
    for key in ("embeddings", "paths"):
        if key not in arrays:
            raise DaalmlError(f"embeddings file {path}: missing array {key!r}")
    labels = arrays.get("labels")
    names = arrays.get("class_names")
    images = ImageList(
        paths=[Path(p) for p in arrays["paths"].tolist()],
        labels=None if labels is None else [int(v) for v in labels],
        class_names=None if names is None else [str(n) for n in names.tolist()],
    )
    return arrays["embeddings"].astype(np.float32), images
