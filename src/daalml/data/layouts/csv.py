"""A CSV listing for user datasets: header ``path,label[,split]``, one image per row.

``root`` is the CSV file; relative paths resolve against its folder. Labels are class names,
ordered numerically when all are integers, else as strings. With a ``split`` column
(``train``/``test``) that split is used and must be class-disjoint; without one the first half of
the ordered labels (``n // 2``) trains, or the first ``train_classes``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from daalml.data.listing import label_order
from daalml.data.records import DatasetSplits, ImageRecord, require_image
from daalml.data.splits import class_disjoint_split, relabel
from daalml.errors import DaalmlError

LAYOUT = "csv"
SPLITS = ("train", "test")


def _read(path: Path) -> tuple[list[tuple[int, str, str, str | None]], bool]:
    """Rows ``(line, path, label, split)`` and whether the file has a split column."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            if header[:2] != ["path", "label"] or header[2:] not in ([], ["split"]):
                raise DaalmlError(
                    f"{path} line 1: expected header 'path,label' or 'path,label,split', "
                    f"got {','.join(header)!r}"
                )
            rows: list[tuple[int, str, str, str | None]] = []
            for fields in reader:
                if not any(f.strip() for f in fields):
                    continue
                line = reader.line_num
                if len(fields) != len(header) or not all(f.strip() for f in fields):
                    raise DaalmlError(
                        f"{path} line {line}: expected {len(header)} non-empty fields, "
                        f"got {fields!r}"
                    )
                split = fields[2].strip().lower() if len(header) == 3 else None
                rows.append((line, fields[0].strip(), fields[1].strip(), split))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DaalmlError(f"cannot read {path}: {err}") from err
    if not rows:
        raise DaalmlError(f"{path}: lists no images")
    return rows, len(header) == 3


def load_csv(root: Path, *, train_classes: int | None = None) -> DatasetSplits:
    """Load images listed in a CSV file with a class-disjoint split."""
    if root.is_dir():
        raise DaalmlError(f"{LAYOUT} dataset expects the CSV file path, got the folder {root}")
    rows, has_split = _read(root)
    index = {name: i for i, name in enumerate(label_order({label for _, _, label, _ in rows}))}
    records: list[ImageRecord] = []
    for line, rel_path, label, _ in rows:
        image = require_image(root.parent / rel_path, root, line)
        records.append(ImageRecord(image, index[label], label))

    if not has_split:
        cut = len(index) // 2 if train_classes is None else train_classes
        train, test = class_disjoint_split(records, cut, context=f"{LAYOUT} dataset {root}")
        return DatasetSplits(name="csv", root=root, train=train, test=test)

    if train_classes is not None:
        raise DaalmlError(f"{root}: has a split column, so train_classes cannot be used")
    seen: dict[str, str] = {}
    for line, _, label, split in rows:
        if split not in SPLITS:
            raise DaalmlError(f"{root} line {line}: split {split!r} is not 'train' or 'test'")
        if seen.setdefault(label, split) != split:
            raise DaalmlError(
                f"{root} line {line}: label {label!r} is in both train and test; "
                "the splits must be class-disjoint"
            )
    parts = {s: [r for r, row in zip(records, rows, strict=True) if row[3] == s] for s in SPLITS}
    for split in SPLITS:
        if not parts[split]:
            raise DaalmlError(f"{root}: no rows with split {split!r}")
    return DatasetSplits(
        name="csv", root=root, train=relabel(parts["train"]), test=relabel(parts["test"])
    )
