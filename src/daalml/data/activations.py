"""Cached trunk activations: the frozen part of a backbone run once, its output kept on disk.

When only the last stages of a backbone train (``model.train_blocks``), the trunk before them
never changes, so its output map (B, C, H, W) for each image is computed once and stored in
float16 (or float32) as a ``.npy`` file that is memory-mapped when read: the training set as
``V`` augmented views per image (random resized crop + flip, each view seeded by its image
and view number), the evaluation sets as one centre view. The file is
``cache_dir/<sha1 of key>.npy`` with a ``.json`` beside it holding the key, shape and
labels; the JSON is written last, and both atomically, so an interrupted build is redone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from daalml.data.batches import map_batches
from daalml.data.seeding import mix_seed, seed_host
from daalml.errors import DaalmlError

ACTIVATIONS_FORMAT = 1
DTYPES = ("float16", "float32")
VIEW_SEED = 0xCAC4E  # views are a function of (image, view number), not of the run's seed
_HEADROOM = 64 * 2**20  # bytes left free on the disk after the cache is written


def activation_path(cache_dir: Path, key: Mapping[str, str]) -> Path:
    """``cache_dir/<sha1 of the sorted-key JSON>.npy``."""
    if not key or not all(isinstance(k, str) and isinstance(v, str) for k, v in key.items()):
        raise DaalmlError(f"activation cache key must map strings to strings, got {dict(key)!r}")
    digest = hashlib.sha1(json.dumps(dict(key), sort_keys=True).encode("utf-8")).hexdigest()
    return Path(cache_dir) / f"{digest}.npy"


def weights_digest(module: nn.Module) -> str:
    """sha1 of a module's parameters and buffers (names, shapes and values), for cache keys."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def format_bytes(size: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # unreachable


class CachedActivations(Dataset):
    """(activation, label) items read from a memory-mapped (N, V, C, H, W) array, as float32.

    ``dataset[i]`` is view 0 of image i; ``dataset[(i, seed)]`` is view ``seed % V``: the
    training loader passes the per-sample seed it derives from (run seed, epoch, batch, slot),
    so the view drawn is a fixed function of where the sample sits in its epoch.
    """

    def __init__(self, array: np.ndarray, labels: torch.Tensor) -> None:
        if array.ndim != 5 or array.shape[0] != len(labels):
            raise DaalmlError(
                f"activation cache: {tuple(array.shape)} activations for {len(labels)} labels"
            )
        self.array = array
        self.labels = labels
        self.views = int(array.shape[1])

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def view_of(self, key: int | tuple[int, int]) -> tuple[int, int]:
        """(image index, view number) that ``key`` reads."""
        if isinstance(key, tuple):
            index, seed = key
            return int(index), int(seed) % self.views
        return int(key), 0

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, view = self.view_of(key)
        values = np.array(self.array[index, view], dtype=np.float32)
        return torch.from_numpy(values), self.labels[index]


class _Views(Dataset):
    """``views`` items per image of ``dataset``; item ``i * views + v`` seeds the host first."""

    def __init__(self, dataset: Dataset, views: int) -> None:
        self.dataset = dataset
        self.views = views

    def __len__(self) -> int:
        return len(self.dataset) * self.views  # type: ignore[arg-type]

    def __getitem__(self, item: int) -> Any:
        index, view = divmod(item, self.views)
        seed_host(mix_seed(VIEW_SEED, index, view))
        return self.dataset[index]


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload) + "\n")
    os.replace(tmp, path)


def _load(path: Path, key: Mapping[str, str], shape: tuple[int, ...], dtype: str):
    """The cached (array, labels), or None (warning when a file is there but unusable)."""
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file() or not path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        array = np.load(path, mmap_mode="r")
        problem = None
        if meta.get("format") != ACTIVATIONS_FORMAT or meta.get("key") != dict(key):
            problem = "written for another key or format"
        elif tuple(array.shape[:2]) != shape[:2] or str(array.dtype) != dtype:
            problem = f"holds {tuple(array.shape)} {array.dtype}, expected {shape[:2]} {dtype}"
        labels = torch.tensor(meta.get("labels", []), dtype=torch.long)
        if problem is None and len(labels) != shape[0]:
            problem = f"has {len(labels)} labels for {shape[0]} images"
    except Exception as err:  # numpy/json raise many types for a damaged file
        problem = f"unreadable ({type(err).__name__}: {err})"
    if problem is not None:
        warnings.warn(f"activation cache {path}: {problem}; recomputing", stacklevel=3)
        return None
    return array, labels


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours, or a platform without signal 0
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Drop half-written files of ``path`` left by killed builds (their process is gone)."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _check_space(path: Path, size: int) -> None:
    free = shutil.disk_usage(path.parent).free
    if size + _HEADROOM > free:
        raise DaalmlError(
            f"activation cache {path}: needs {format_bytes(size)} but {path.parent} has "
            f"{format_bytes(free)} free (set train.cache_dir elsewhere, or lower "
            "data.cached_views or model.train_blocks)"
        )


def cached_activations(
    trunk: nn.Module,
    dataset: Dataset,
    *,
    views: int,
    cache_dir: Path,
    key: dict[str, str],
    dtype: str = "float16",
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> CachedActivations:
    """The trunk's output for ``views`` views of every image of ``dataset``, memory-mapped.

    Loaded when ``cache_dir`` holds a complete file for ``key``; otherwise its size is
    printed, checked against the free disk space, and it is computed (eval mode, no
    gradients, view ``v`` of image ``i`` under the host seed ``mix_seed(VIEW_SEED, i, v)``).
    ``key`` must describe everything that changes the activations, views included.
    """
    if dtype not in DTYPES:
        raise DaalmlError(f"train.cache_dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    if views < 1:
        raise DaalmlError(f"data.cached_views must be >= 1, got {views}")
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DaalmlError("activation cache: the dataset is empty")
    cache_dir = Path(cache_dir)
    path = activation_path(cache_dir, key)
    loaded = _load(path, key, (n, views), dtype)
    if loaded is not None:
        return CachedActivations(*loaded)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DaalmlError(f"activation cache directory {cache_dir}: cannot create ({err})") from err
    device = torch.device(device)
    was_training = trunk.training
    trunk.eval().to(device)
    try:
        with torch.no_grad():
            return _build(
                trunk, dataset, views, path, key, dtype, batch_size, num_workers, device, progress
            )
    finally:
        trunk.to("cpu").train(was_training)


def _build(
    trunk: nn.Module,
    dataset: Dataset,
    views: int,
    path: Path,
    key: dict[str, str],
    dtype: str,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    progress: bool,
) -> CachedActivations:
    """Probe the output shape, check the disk, then stream the one batch loop into the file.

    The views go through :func:`daalml.data.batches.map_batches` batch by batch, each written
    to the memory-mapped temporary at once, so the cache never has to fit in memory.
    """
    items = _Views(dataset, views)
    first = items[0]
    if not isinstance(first, (list, tuple)) or not isinstance(first[0], torch.Tensor):
        raise DaalmlError("activation cache: dataset items must be (image tensor, label) pairs")
    probe = trunk(first[0].unsqueeze(0).to(device))
    if probe.ndim != 4:
        raise DaalmlError(
            f"activation cache: the trunk gave {tuple(probe.shape)}, not (1, C, H, W)"
        )
    n = len(dataset)  # type: ignore[arg-type]
    shape = (n, views, *probe.shape[1:])
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    print(
        f"activation cache: {n} images x {views} views x {tuple(probe.shape[1:])} {dtype} = "
        f"{format_bytes(size)} -> {path}",
        file=sys.stderr,
        flush=True,
    )
    _remove_stale_temporaries(path)
    _check_space(path, size)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    labels = torch.empty(n, dtype=torch.long)
    batches = map_batches(
        trunk,
        items,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        progress=progress,
        description=f"activations ({key.get('point', '')})",
    )
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        flat = array.reshape(n * views, *shape[2:])
        start = 0
        with contextlib.closing(batches):  # streamed into the file: the cache may exceed RAM
            for out, batch_labels in batches:
                stop = start + out.shape[0]
                flat[start:stop] = out.numpy().astype(dtype)
                labels[torch.arange(start, stop) // views] = batch_labels
                start = stop
        array.flush()
        del flat, array
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    meta = {
        "format": ACTIVATIONS_FORMAT,
        "key": dict(key),
        "shape": list(shape),
        "dtype": dtype,
        "labels": labels.tolist(),
    }
    _write_json(path.with_suffix(".json"), meta)
    return CachedActivations(np.load(path, mmap_mode="r"), labels)
