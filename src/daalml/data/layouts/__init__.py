"""Dataset loaders for the official on-disk layouts, behind one entry point ``load_splits``.

Each loader reads the annotation files as the archives unpack, checks every listed image exists
and returns class-disjoint train/test ``DatasetSplits`` with contiguous labels per split.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from daalml.data.layouts.cars import load_cars
from daalml.data.layouts.csv import load_csv
from daalml.data.layouts.cub import load_cub
from daalml.data.layouts.folder import load_folder
from daalml.data.layouts.inshop import load_inshop
from daalml.data.layouts.sop import load_sop
from daalml.data.records import DatasetSplits, require_root
from daalml.errors import DaalmlError

DATASETS = ("cub200", "cars196", "sop", "inshop", "folder", "csv")

_LOADERS: dict[str, Callable[..., DatasetSplits]] = {
    "cub200": load_cub,
    "cars196": load_cars,
    "sop": load_sop,
    "inshop": load_inshop,
    "folder": load_folder,
    "csv": load_csv,
}


def load_splits(
    dataset: str, root: str | Path, *, train_classes: int | None = None
) -> DatasetSplits:
    """Load ``dataset`` from ``root`` into class-disjoint train/test splits.

    ``train_classes`` moves the class cut for cub200/cars196/folder/csv (first N classes by
    official id or sorted name); sop and inshop keep their published split and refuse it.
    """
    if dataset not in _LOADERS:
        raise DaalmlError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    path = require_root(root)
    splits = _LOADERS[dataset](path, train_classes=train_classes)
    splits.check_class_disjoint()
    return splits


__all__ = ["DATASETS", "load_splits"]
