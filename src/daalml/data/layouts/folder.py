"""A class-per-folder tree: ``root/<class_name>/**/<image>``, for user datasets.

Classes are the sub-folders sorted by name (hidden ones skipped); images are the files with an
extension torchvision's ``ImageFolder`` accepts, searched recursively. The first
``n_classes // 2`` classes train (an odd count gives test the extra class), or the first
``train_classes``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from daalml.data.listing import class_folders
from daalml.data.records import DatasetSplits, ImageRecord
from daalml.data.splits import class_disjoint_split
from daalml.errors import DaalmlError

LAYOUT = "folder"


def load_folder(root: Path, *, train_classes: int | None = None) -> DatasetSplits:
    """Load a class-per-folder tree with a class-disjoint split by sorted class name."""
    if not root.is_dir():
        raise DaalmlError(f"{LAYOUT} layout expected at {root}: not a directory")
    found = class_folders(root)
    folders = list(found)
    empty = [name for name, images in found.items() if not images]
    if empty:  # e.g. a metadata folder beside the class folders: not a class
        warnings.warn(
            f"{LAYOUT} layout at {root}: ignoring folders without images "
            f"({', '.join(IMG_EXTENSIONS)}): {', '.join(empty)}",
            stacklevel=2,
        )
    classes = [name for name in folders if found[name]]
    if len(classes) < 2:
        raise DaalmlError(
            f"{LAYOUT} layout at {root}: found {len(classes)} class folders, need at least 2"
        )
    records: list[ImageRecord] = []
    for label, name in enumerate(classes):
        records.extend(ImageRecord(image, label, name) for image in found[name])
    cut = len(classes) // 2 if train_classes is None else train_classes
    train, test = class_disjoint_split(records, cut, context=f"{LAYOUT} layout at {root}")
    return DatasetSplits(name="folder", root=root, train=train, test=test)
