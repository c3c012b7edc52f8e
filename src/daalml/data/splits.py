"""Class-disjoint splitting and relabelling of image records.

Deep metric learning evaluates on classes never seen in training, so every cut here is by class,
never by image, and each part gets contiguous labels ``0..k-1`` (what losses and heads expect).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from daalml.data.records import ImageRecord
from daalml.errors import DaalmlError


def relabel(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    """Map the distinct labels to ``0..k-1`` keeping their order; records keep their order."""
    mapping = {old: new for new, old in enumerate(sorted({r.label for r in records}))}
    return [
        r if r.label == mapping[r.label] else replace(r, label=mapping[r.label]) for r in records
    ]


def class_disjoint_split(
    records: Sequence[ImageRecord], train_classes: int, *, context: str
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Put the first ``train_classes`` labels (in label order) in train and the rest in test.

    ``records`` carry dataset-wide labels ordered like the official class ids (or sorted names);
    both parts are relabelled contiguously. ``context`` names the dataset in error messages.
    """
    labels = sorted({r.label for r in records})
    if len(labels) < 2:
        raise DaalmlError(f"{context}: found {len(labels)} classes, need at least 2 to split")
    if not 1 <= train_classes <= len(labels) - 1:
        raise DaalmlError(
            f"{context}: train_classes={train_classes} is out of range for {len(labels)} "
            f"classes (need 1..{len(labels) - 1})"
        )
    cut = labels[train_classes - 1]
    train = [r for r in records if r.label <= cut]
    test = [r for r in records if r.label > cut]
    return relabel(train), relabel(test)


def carve_validation(
    train: list[ImageRecord], val_classes: int
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Hold out the last ``val_classes`` training classes as a class-disjoint validation set.

    Returns ``(train_part, val_part)``, both relabelled contiguously from 0.
    """
    labels = sorted({r.label for r in train})
    if val_classes < 1:
        raise DaalmlError(f"val_classes must be at least 1, got {val_classes}")
    remaining = max(0, len(labels) - val_classes)
    if remaining < 2:
        raise DaalmlError(
            f"val_classes={val_classes} leaves {remaining} of {len(labels)} training classes; "
            "at least 2 must remain for training"
        )
    cut = labels[len(labels) - val_classes - 1]
    kept = [r for r in train if r.label <= cut]
    held = [r for r in train if r.label > cut]
    return relabel(kept), relabel(held)
