"""CUB-200-2011 as the official archive unpacks (``CUB_200_2011/``).

Uses ``images.txt``, ``image_class_labels.txt`` and ``classes.txt``; the DML split is by class:
the first half of the class ids (1-100 of 200) train, the rest test. The archive's
``train_test_split.txt`` is an image-level split for classification and is ignored.
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
from daalml.data.splits import class_disjoint_split
from daalml.errors import DaalmlError

LAYOUT = "CUB-200-2011"
FILES = ("images.txt", "image_class_labels.txt", "classes.txt")
SUBDIR = "CUB_200_2011"


def _locate(root: Path) -> Path:
    """Accept the dataset folder itself or its parent holding ``CUB_200_2011/``."""
    if not (root / FILES[0]).is_file() and (root / SUBDIR).is_dir():
        return root / SUBDIR
    return root


def _read_id_map(path: Path, what: str) -> dict[int, tuple[int, str]]:
    """Read a two-column ``<int id> <value>`` file into ``{id: (line, value)}``."""
    result: dict[int, tuple[int, str]] = {}
    for line, (key, value) in read_rows(path, 2):
        ident = parse_int(key, path, line, what)
        if ident in result:
            raise DaalmlError(f"{path} line {line}: duplicate {what} {ident}")
        result[ident] = (line, value)
    return result


def load_cub(root: Path, *, train_classes: int | None = None) -> DatasetSplits:
    """Load CUB-200-2011 with the class-disjoint split (``train_classes`` overrides the cut)."""
    root = _locate(root)
    require_files(root, LAYOUT, FILES)
    images_txt, labels_txt, classes_txt = (root / name for name in FILES)
    images = _read_id_map(images_txt, "image id")
    labels = _read_id_map(labels_txt, "image id")
    classes = _read_id_map(classes_txt, "class id")
    class_index = {cid: i for i, cid in enumerate(sorted(classes))}

    records: list[ImageRecord] = []
    for image_id, (line, rel_path) in images.items():
        if image_id not in labels:
            raise DaalmlError(f"{labels_txt}: no class for image id {image_id} ({rel_path})")
        label_line, class_text = labels[image_id]
        class_id = parse_int(class_text, labels_txt, label_line, "class id")
        if class_id not in classes:
            raise DaalmlError(
                f"{labels_txt} line {label_line}: class id {class_id} not in {classes_txt}"
            )
        path = require_image(root / "images" / rel_path, images_txt, line)
        records.append(ImageRecord(path, class_index[class_id], classes[class_id][1]))
    extra = sorted(set(labels) - set(images))
    if extra:
        raise DaalmlError(f"{labels_txt}: image id {extra[0]} is not listed in {images_txt}")

    n_classes = len({r.label for r in records})
    cut = n_classes // 2 if train_classes is None else train_classes
    train, test = class_disjoint_split(records, cut, context=f"{LAYOUT} at {root}")
    return DatasetSplits(name="cub200", root=root, train=train, test=test)
