"""Cars196 (Stanford Cars) as used in DML: ``cars_annos.mat`` plus the ``car_ims/`` folder.

The MATLAB file holds a struct array ``annotations`` (``relative_im_path``, ``bbox_*``, 1-based
``class``, ``test``) and a cell array ``class_names``. The DML split is by class: the first half
of the class ids (1-98 of 196) train, the rest test; the image-level ``test`` flag is ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from daalml.data.records import DatasetSplits, ImageRecord, require_files
from daalml.data.splits import class_disjoint_split
from daalml.errors import DaalmlError

LAYOUT = "Cars196"
ANNOTATIONS = "cars_annos.mat"
FIELDS = ("relative_im_path", "class")


def _read_mat(path: Path) -> dict[str, np.ndarray]:
    """Load the MATLAB file with scipy, naming the file if it is not a readable .mat."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        return loadmat(str(path), squeeze_me=True)
    except (MatReadError, OSError, ValueError, TypeError, NotImplementedError) as err:
        raise DaalmlError(f"{path}: not a readable MATLAB file ({err})") from err


def _as_str(value: object) -> str:
    """A MATLAB char array loads as ``str`` (or a 0-d array of one); normalise to ``str``."""
    return str(np.asarray(value).item()) if isinstance(value, np.ndarray) else str(value)


def load_cars(root: Path, *, train_classes: int | None = None) -> DatasetSplits:
    """Load Cars196 with the class-disjoint split (``train_classes`` overrides the cut)."""
    require_files(root, LAYOUT, (ANNOTATIONS,))
    mat_path = root / ANNOTATIONS
    mat = _read_mat(mat_path)
    for key in ("annotations", "class_names"):
        if key not in mat:
            raise DaalmlError(f"{mat_path}: missing variable {key!r}")
    annotations = np.atleast_1d(mat["annotations"])
    names = dict(annotations.dtype.fields or {})
    for field in FIELDS:
        if field not in names:
            raise DaalmlError(f"{mat_path}: 'annotations' has no field {field!r}")
    class_names = [_as_str(n) for n in np.atleast_1d(mat["class_names"])]

    records: list[ImageRecord] = []
    for index, entry in enumerate(annotations, start=1):
        rel_path = _as_str(entry["relative_im_path"])
        try:
            class_id = int(np.asarray(entry["class"]).item())
        except (TypeError, ValueError):
            raise DaalmlError(
                f"{mat_path}: annotation {index} ({rel_path}) has a non-integer class"
            ) from None
        if not 1 <= class_id <= len(class_names):
            raise DaalmlError(
                f"{mat_path}: annotation {index} ({rel_path}) has class {class_id}, "
                f"outside 1..{len(class_names)}"
            )
        image = root / rel_path
        if not image.is_file():
            raise DaalmlError(f"{mat_path}: annotation {index} image not found: {image}")
        records.append(ImageRecord(image, class_id - 1, class_names[class_id - 1]))

    n_classes = len({r.label for r in records})
    cut = n_classes // 2 if train_classes is None else train_classes
    train, test = class_disjoint_split(records, cut, context=f"{LAYOUT} at {root}")
    return DatasetSplits(name="cars196", root=root, train=train, test=test)
