"""Datasets by name: the official layouts, a folder, a CSV file, the glyphs, and any registered.

An entry is either an image-file *layout* (``layout(root, *, train_classes)`` returns the
class-disjoint records of :class:`~daalml.data.records.DatasetSplits`; the engine decodes,
checks, transforms and caches them) or an in-memory *build* (``build(cfg, cache_dir)``
returns :class:`BuiltDatasets`, whole). Either way the entry carries the metadata the layers
above need without naming a dataset: the images' ``channels``, where the model's input is
not the usual resized and normalised photo its ``preprocessing``, and where the layout groups
its classes (SOP super-classes, In-Shop clothing types) each image's ``category``. ``data.dataset`` in a config
may name any registered entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch.utils.data import Dataset

from daalml.data.layouts import _LOADERS
from daalml.data.layouts.inshop import category as inshop_category
from daalml.data.layouts.sop import category as sop_category
from daalml.data.records import DatasetSplits, ImageRecord, require_root
from daalml.errors import DaalmlError, check_registration

if TYPE_CHECKING:
    from daalml.data.preprocessing import Preprocessing

Layout = Callable[..., DatasetSplits]
Build = Callable[[Any, Path], "BuiltDatasets"]
InputForm = Callable[[Any, int], "Preprocessing"]
Category = Callable[[ImageRecord], str]


@dataclass
class BuiltDatasets:
    """The splits of an in-memory dataset (tensors or other ready items), with their metadata."""

    train: Dataset
    num_train_classes: int
    test: Dataset
    train_eval: Dataset  # the training set without augmentation (PCA, data initialisation)
    val: Dataset | None = None
    families: list[str] | None = None  # a group per test sample (glyphs: font family), for plots


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset: a layout or a build, and the metadata of its images."""

    name: str
    layout: Layout | None = None
    build: Build | None = None
    channels: int = 3  # image channels: the backbone's input is built for them
    preprocessing: InputForm | None = None  # (cfg, channels) -> evaluation input; None: photos
    category: Category | None = None  # an image's category (per_category metrics); None: none


def _build_glyphs(cfg: Any, cache_dir: Path) -> BuiltDatasets:
    from daalml.data.glyph_datasets import build_glyph_datasets  # renders fonts: loaded late

    return build_glyph_datasets(cfg, cache_dir)


def _glyph_input(cfg: Any, channels: int) -> Preprocessing:
    from daalml.data.glyph_datasets import glyph_preprocessing

    return glyph_preprocessing(cfg, channels)


_REGISTRY: dict[str, DatasetEntry] = {
    **{name: DatasetEntry(name, layout=layout) for name, layout in _LOADERS.items()},
    "sop": DatasetEntry("sop", layout=_LOADERS["sop"], category=sop_category),
    "inshop": DatasetEntry("inshop", layout=_LOADERS["inshop"], category=inshop_category),
    "glyphs": DatasetEntry("glyphs", build=_build_glyphs, channels=1, preprocessing=_glyph_input),
}


def register_dataset(
    name: str,
    *,
    layout: Layout | None = None,
    build: Build | None = None,
    channels: int = 3,
    preprocessing: InputForm | None = None,
    category: Category | None = None,
    replace: bool = False,
) -> None:
    """Make ``data.dataset: name`` load with ``layout`` (image files) or ``build`` (in memory)."""
    if (layout is None) == (build is None):
        raise DaalmlError(f"dataset {name!r}: give a layout or a build, one of the two")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise DaalmlError(
            f"dataset {name!r}: channels must be a positive integer, got {channels!r}"
        )
    check_registration("dataset", name, _REGISTRY, replace=replace)
    _REGISTRY[name] = DatasetEntry(name, layout, build, channels, preprocessing, category)


def available_datasets() -> tuple[str, ...]:
    """Registered dataset names, the built-ins first."""
    return tuple(_REGISTRY)


def dataset_entry(name: str) -> DatasetEntry:
    """The entry called ``name``; a DaalmlError names the registered ones."""
    if name not in _REGISTRY:
        raise DaalmlError(f"unknown dataset {name!r}; valid: {', '.join(available_datasets())}")
    return _REGISTRY[name]


def categories_of(name: str, records: list[ImageRecord]) -> list[str] | None:
    """Each record's category where the entry has them, for the metrics' ``categories``."""
    category = dataset_entry(name).category
    return None if category is None else [category(record) for record in records]


def load_layout(name: str, root: str | Path, *, train_classes: int | None = None) -> DatasetSplits:
    """The class-disjoint train/test records of the layout ``name`` at ``root``."""
    layout = dataset_entry(name).layout
    if layout is None:
        raise DaalmlError(f"dataset {name!r} is built in memory: it has no files to load")
    splits = layout(require_root(root), train_classes=train_classes)
    splits.check_class_disjoint()
    return splits
