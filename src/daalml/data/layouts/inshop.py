"""DeepFashion In-Shop Clothes Retrieval as published.

``list_eval_partition.txt`` (at the root or in ``Eval/``) starts with the row count and the header
``image_name item_id evaluation_status``; rows are ``train``, ``query`` or ``gallery``. Images are
looked up under the root (``img/...``) or under ``Img/`` as the archive ships them. Test is
query followed by gallery, labelled jointly so a query and its gallery items share labels.
"""

from __future__ import annotations

from pathlib import Path

from daalml.data.records import (
    DatasetSplits,
    ImageRecord,
    parse_int,
    read_lines,
    read_rows,
    require_image,
)
from daalml.errors import DaalmlError

LAYOUT = "In-Shop"
PARTITION = "list_eval_partition.txt"
HEADER = ["image_name", "item_id", "evaluation_status"]
STATUSES = ("train", "query", "gallery")


def _partition_file(root: Path) -> Path:
    """Find the partition list at the root or in ``Eval/``."""
    for candidate in (root / PARTITION, root / "Eval" / PARTITION):
        if candidate.is_file():
            return candidate
    if not root.is_dir():
        raise DaalmlError(f"{LAYOUT} layout expected at {root}: not a directory")
    raise DaalmlError(f"{LAYOUT} layout expected at {root}: missing {PARTITION}")


def _image_base(root: Path) -> Path:
    """Images live under the root (``img/``) or under ``Img/img/`` as unzipped from the archive."""
    if not (root / "img").is_dir() and (root / "Img" / "img").is_dir():
        return root / "Img"
    return root


def _check_preamble(listing: Path) -> int:
    """Check the count line and header; return the announced row count."""
    lines = read_lines(listing)
    count = lines[0].split() if lines else []
    if len(count) != 1:
        raise DaalmlError(f"{listing} line 1: expected the number of images")
    expected = parse_int(count[0], listing, 1, "image count")
    if len(lines) < 2 or lines[1].split() != HEADER:
        raise DaalmlError(f"{listing} line 2: expected header {' '.join(HEADER)!r}")
    return expected


def load_inshop(root: Path, *, train_classes: int | None = None) -> DatasetSplits:
    """Load In-Shop with its published train/query/gallery split (``train_classes`` refused)."""
    if train_classes is not None:
        raise DaalmlError("train_classes is not supported for inshop: it uses the published split")
    listing = _partition_file(root)
    expected = _check_preamble(listing)
    base = _image_base(root)
    parts: dict[str, list[tuple[Path, str]]] = {status: [] for status in STATUSES}
    rows = read_rows(listing, 3, skip=2)
    for line, (rel_path, item_id, status) in rows:
        if status not in parts:
            raise DaalmlError(
                f"{listing} line {line}: evaluation_status {status!r} is not one of "
                f"{', '.join(STATUSES)}"
            )
        parts[status].append((require_image(base / rel_path, listing, line), item_id))
    if len(rows) != expected:
        raise DaalmlError(f"{listing} line 1: announces {expected} images but lists {len(rows)}")
    for status in STATUSES:
        if not parts[status]:
            raise DaalmlError(f"{listing}: no {status} images")

    train = _records(parts["train"])
    test = _records(parts["query"] + parts["gallery"])
    n_query = len(parts["query"])
    return DatasetSplits(
        name="inshop",
        root=root,
        train=train,
        test=test,
        query=test[:n_query],
        gallery=test[n_query:],
    )


def category(record: ImageRecord) -> str:
    """The clothing type: the two folders above the item's (``img/WOMEN/Dresses/id_.../``
    gives ``WOMEN/Dresses``), by which In-Shop results are also reported per category."""
    return f"{record.path.parents[2].name}/{record.path.parents[1].name}"


def _records(pairs: list[tuple[Path, str]]) -> list[ImageRecord]:
    """Label ``(image, item_id)`` pairs by the rank of the item id, so row order does not matter."""
    order = {item: i for i, item in enumerate(sorted({item for _, item in pairs}))}
    return [ImageRecord(image, order[item], item) for image, item in pairs]
