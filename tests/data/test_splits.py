"""Class-disjoint cuts, validation carving and relabelling."""

from __future__ import annotations

from pathlib import Path

import pytest

from daalml.data.records import DatasetSplits, ImageRecord
from daalml.data.splits import carve_validation, class_disjoint_split, relabel
from daalml.errors import DaalmlError


def _records(labels: list[int]) -> list[ImageRecord]:
    return [
        ImageRecord(Path(f"/img/{i}.jpg"), label, f"c{label}") for i, label in enumerate(labels)
    ]


def test_relabel_keeps_order_and_makes_labels_contiguous() -> None:
    records = _records([7, 3, 7, 10, 3])
    out = relabel(records)
    assert [r.label for r in out] == [1, 0, 1, 2, 0]
    assert [r.path for r in out] == [r.path for r in records]
    assert [r.class_name for r in out] == ["c7", "c3", "c7", "c10", "c3"]


def test_class_disjoint_split_cuts_by_label_order() -> None:
    train, test = class_disjoint_split(_records([4, 1, 2, 4, 3, 1]), 2, context="ds")
    assert [r.class_name for r in train] == ["c1", "c2", "c1"]
    assert [r.label for r in train] == [0, 1, 0]
    assert [r.class_name for r in test] == ["c4", "c4", "c3"]
    assert [r.label for r in test] == [1, 1, 0]


def test_class_disjoint_split_needs_two_classes() -> None:
    with pytest.raises(DaalmlError, match=r"^ds: found 1 classes, need at least 2 to split$"):
        class_disjoint_split(_records([5, 5]), 1, context="ds")


def test_carve_validation_holds_out_last_classes() -> None:
    train = _records([0, 1, 2, 3, 4, 0, 4])
    kept, val = carve_validation(train, 2)
    assert sorted({r.class_name for r in kept}) == ["c0", "c1", "c2"]
    assert sorted({r.class_name for r in val}) == ["c3", "c4"]
    assert [r.label for r in val] == [0, 1, 1]
    assert {r.label for r in kept} == {0, 1, 2}
    assert not {r.path for r in kept} & {r.path for r in val}
    assert len(kept) + len(val) == len(train)


@pytest.mark.parametrize(
    ("val_classes", "message"),
    [
        (0, r"val_classes must be at least 1, got 0"),
        (3, r"val_classes=3 leaves 1 of 4 training classes; at least 2 must remain"),
        (9, r"val_classes=9 leaves 0 of 4"),
    ],
)
def test_carve_validation_errors(val_classes: int, message: str) -> None:
    with pytest.raises(DaalmlError, match=message):
        carve_validation(_records([0, 1, 2, 3]), val_classes)


def test_splits_properties_and_disjointness_check() -> None:
    train, test = _records([0, 0, 1]), _records([0, 1, 2])
    splits = DatasetSplits("x", Path("/data"), train, [])
    assert (splits.num_train_classes, splits.num_test_classes) == (2, 0)
    splits.check_class_disjoint()
    shared_class = DatasetSplits("x", Path("/data"), train, test)
    with pytest.raises(DaalmlError, match=r"x at /data: 2 classes are in both train and test"):
        shared_class.check_class_disjoint()
    same_image = [ImageRecord(train[0].path, 0, "other")]
    shared_path = DatasetSplits("x", Path("/data"), train, same_image)
    with pytest.raises(DaalmlError, match=r"image /img/0.jpg is in both train and test"):
        shared_path.check_class_disjoint()
