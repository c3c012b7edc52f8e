"""ImageDataset over loaded splits, alone and behind a DataLoader with the m-per-class sampler."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from daalml.data.dataset import ImageDataset
from daalml.data.layouts import load_splits
from daalml.data.sampling import MPerClassBatchSampler
from daalml.data.transforms import eval_transform, train_transform
from daalml.errors import DaalmlError
from tests.data.builders import make_cub, make_folder


def test_items_and_labels(tmp_path: Path) -> None:
    splits = load_splits("cub200", make_cub(tmp_path, n_classes=4, per_class=3, size=20))
    dataset = ImageDataset(splits.train, eval_transform(image_size=16, resize=16))
    assert len(dataset) == 6
    image, label = dataset[4]
    assert image.shape == (3, 16, 16)
    assert label == splits.train[4].label == 1
    assert dataset.labels.dtype == torch.long
    assert dataset.labels.tolist() == [r.label for r in splits.train]
    assert dataset.num_classes == 2
    dataset.labels[0] = 99  # the property hands out a copy
    assert dataset.labels[0] == 0


def test_default_transform_is_to_tensor(tmp_path: Path) -> None:
    splits = load_splits("folder", make_folder(tmp_path, n_classes=2, per_class=1, size=12))
    image, label = ImageDataset(splits.test)[0]
    assert image.shape == (3, 12, 12)
    assert 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
    assert label == 0


def test_broken_image_raises_naming_file(tmp_path: Path) -> None:
    splits = load_splits("folder", make_folder(tmp_path, n_classes=2, per_class=1, size=12))
    splits.train[0].path.write_bytes(b"broken")
    with pytest.raises(DaalmlError, match=rf"cannot read image {splits.train[0].path}"):
        ImageDataset(splits.train)[0]


def test_dataloader_with_m_per_class_sampler(tmp_path: Path) -> None:
    splits = load_splits("cub200", make_cub(tmp_path, n_classes=8, per_class=4, size=20))
    dataset = ImageDataset(splits.train, train_transform(image_size=16))
    sampler = MPerClassBatchSampler(dataset.labels, batch_size=8, samples_per_class=4, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=0)
    batches = list(loader)
    assert len(batches) == 2
    for images, labels in batches:
        assert images.shape == (8, 3, 16, 16)
        assert labels.unique(return_counts=True)[1].tolist() == [4, 4]
