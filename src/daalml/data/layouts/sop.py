"""Stanford Online Products as published (``Stanford_Online_Products/``).

``Ebay_train.txt`` and ``Ebay_test.txt`` list ``image_id class_id super_class_id path`` under a
header line; the published split is already class-disjoint (11,318 train / 11,316 test products).
"""

from __future__ import annotations

from pathlib import Path

from daalml.data.records import (
    DatasetSplits,
    ImageRecord,
    parse_int,
    read_rows,
    require_files,
    require_image,
)
from daalml.data.splits import relabel
from daalml.errors import DaalmlError

LAYOUT = "Stanford Online Products"
FILES = ("Ebay_train.txt", "Ebay_test.txt")
HEADER = ["image_id", "class_id", "super_class_id", "path"]
SUBDIR = "Stanford_Online_Products"


def _locate(root: Path) -> Path:
    """Accept the dataset folder itself or its parent holding ``Stanford_Online_Products/``."""
    if not (root / FILES[0]).is_file() and (root / SUBDIR).is_dir():
        return root / SUBDIR
    return root


def _read_split(root: Path, listing: Path) -> list[ImageRecord]:
    """Read one Ebay_*.txt into records labelled by class id (relabelled by the caller)."""
    rows = read_rows(listing, 4)
    if not rows or rows[0][1] != HEADER:
        raise DaalmlError(f"{listing} line 1: expected header {' '.join(HEADER)!r}")
    records: list[ImageRecord] = []
    for line, (image_id, class_text, super_text, rel_path) in rows[1:]:
        parse_int(image_id, listing, line, "image_id")
        parse_int(super_text, listing, line, "super_class_id")
        class_id = parse_int(class_text, listing, line, "class_id")
        image = require_image(root / rel_path, listing, line)
        name = f"{Path(rel_path).parent.as_posix()}/{class_id}"
        records.append(ImageRecord(image, class_id, name))
    if not records:
        raise DaalmlError(f"{listing}: lists no images")
    return records


def category(record: ImageRecord) -> str:
    """The product's super-class: the image's folder (``bicycle_final``), one per
    ``super_class_id``, by which SOP results are also reported per category."""
    return record.path.parent.name


def load_sop(root: Path, *, train_classes: int | None = None) -> DatasetSplits:
    """Load SOP with its published split; ``train_classes`` is refused (the split is fixed)."""
    if train_classes is not None:
        raise DaalmlError("train_classes is not supported for sop: it uses the published split")
    root = _locate(root)
    require_files(root, LAYOUT, FILES)
    train = relabel(_read_split(root, root / FILES[0]))
    test = relabel(_read_split(root, root / FILES[1]))
    return DatasetSplits(name="sop", root=root, train=train, test=test)
