"""The frozen-backbone feature cache."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from daalml.data import cache as cache_module
from daalml.data.cache import cache_path, cached_features
from daalml.errors import DaalmlError
from daalml.models.backbones import Backbone

KEY = {"backbone": "tiny", "dataset": "pngs", "split": "train", "size": "12"}


class PngDataset(Dataset):
    """(image tensor, label) pairs read from tiny PNG files."""

    def __init__(self, root: Path, n: int = 10) -> None:
        gen = torch.Generator().manual_seed(0)
        self.items: list[tuple[Path, int]] = []
        for i in range(n):
            pixels = torch.randint(0, 256, (12, 12, 3), generator=gen, dtype=torch.uint8)
            path = root / f"img{i}.png"
            Image.fromarray(pixels.numpy()).save(path)
            self.items.append((path, i % 3))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        return TF.to_tensor(Image.open(path).convert("RGB")), label


class CountingBackbone(Backbone):
    """A small conv backbone that counts its forward calls and records the input layout."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        body = nn.Sequential(
            nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )
        super().__init__(body, name="tiny", feature_dim=5)
        # non-trivial running statistics, so eval and train mode give different features
        body[1].running_mean.fill_(0.3)
        body[1].running_var.fill_(2.0)
        self.calls = 0
        self.channels_last_inputs: list[bool] = []
        self.grad_enabled: list[bool] = []
        body.register_forward_pre_hook(self._record_layout)

    def _record_layout(self, module: nn.Module, args: tuple[torch.Tensor]) -> None:
        images = args[0]
        self.channels_last_inputs.append(
            images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.grad_enabled.append(torch.is_grad_enabled())
        return super().forward(images)


@pytest.fixture
def dataset(tmp_path: Path) -> PngDataset:
    root = tmp_path / "images"
    root.mkdir()
    return PngDataset(root)


def _expected(backbone: Backbone, dataset: PngDataset) -> torch.Tensor:
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    backbone.eval()
    with torch.no_grad():
        return nn.Module.__call__(backbone, images)


def test_cache_path_is_sha1_of_sorted_key(tmp_path: Path) -> None:
    digest = hashlib.sha1(json.dumps(KEY, sort_keys=True).encode()).hexdigest()
    assert cache_path(tmp_path, KEY) == tmp_path / f"{digest}.pt"
    assert cache_path(tmp_path, dict(reversed(list(KEY.items())))) == cache_path(tmp_path, KEY)
    assert cache_path(tmp_path, {**KEY, "split": "test"}) != cache_path(tmp_path, KEY)


def test_computes_once_then_loads(tmp_path: Path, dataset: PngDataset) -> None:
    backbone = CountingBackbone().train()
    cache_dir = tmp_path / "cache" / "nested"
    features, labels = cached_features(
        backbone, dataset, cache_dir=cache_dir, key=KEY, batch_size=4, progress=True
    )
    assert backbone.calls == 3  # 10 images in batches of 4
    assert backbone.grad_enabled == [False, False, False]
    assert features.dtype == torch.float32 and features.shape == (10, 5)
    assert labels.dtype == torch.int64
    assert labels.tolist() == [i % 3 for i in range(10)]
    assert not features.requires_grad
    assert cache_path(cache_dir, KEY).is_file()
    assert [p.name for p in cache_dir.iterdir()] == [cache_path(cache_dir, KEY).name]
    assert backbone.training  # mode restored
    assert not backbone.channels_last  # memory format restored
    expected = _expected(backbone, dataset)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)

    again, again_labels = cached_features(
        backbone, dataset, cache_dir=cache_dir, key=dict(KEY), progress=False
    )
    assert backbone.calls == 4  # only the one _expected call above
    assert torch.equal(again, features) and torch.equal(again_labels, labels)


def test_features_are_usable_in_training(tmp_path: Path, dataset: PngDataset) -> None:
    features, _ = cached_features(
        CountingBackbone(), dataset, cache_dir=tmp_path, key=KEY, progress=False
    )
    head = nn.Linear(5, 2)
    head(features).sum().backward()  # no inference-mode tensors
    assert head.weight.grad is not None


def test_channels_last_on_cpu_by_default(tmp_path: Path, dataset: PngDataset) -> None:
    backbone = CountingBackbone()
    cached_features(backbone, dataset, cache_dir=tmp_path, key=KEY, progress=False)
    assert backbone.channels_last_inputs == [True]
    backbone = CountingBackbone()
    cached_features(
        backbone,
        dataset,
        cache_dir=tmp_path,
        key={**KEY, "layout": "nchw"},
        progress=False,
        channels_last=False,
    )
    assert backbone.channels_last_inputs == [False]


def test_other_key_recomputes(tmp_path: Path, dataset: PngDataset) -> None:
    backbone = CountingBackbone()
    cached_features(backbone, dataset, cache_dir=tmp_path, key=KEY, progress=False)
    cached_features(
        backbone, dataset, cache_dir=tmp_path, key={**KEY, "size": "16"}, progress=False
    )
    assert backbone.calls == 2
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_corrupt_file_is_recomputed_with_warning(tmp_path: Path, dataset: PngDataset) -> None:
    path = cache_path(tmp_path, KEY)
    path.write_bytes(b"\x00garbage")
    backbone = CountingBackbone()
    with pytest.warns(UserWarning, match=re.escape(f"feature cache {path}: unreadable")):
        features, _ = cached_features(
            backbone, dataset, cache_dir=tmp_path, key=KEY, progress=False
        )
    assert backbone.calls == 1
    reloaded, _ = cached_features(backbone, dataset, cache_dir=tmp_path, key=KEY, progress=False)
    assert backbone.calls == 1
    assert torch.equal(reloaded, features)


def test_stale_file_is_recomputed_with_warning(tmp_path: Path, dataset: PngDataset) -> None:
    backbone = CountingBackbone()
    cached_features(backbone, dataset, cache_dir=tmp_path, key=KEY, progress=False)
    del dataset.items[-2:]
    with pytest.warns(
        UserWarning, match=r"holds \(10, 5\) features, expected \(8, 5\); recomputing"
    ):
        features, labels = cached_features(
            backbone, dataset, cache_dir=tmp_path, key=KEY, progress=False
        )
    assert features.shape == (8, 5) and labels.shape == (8,)
    assert backbone.calls == 2


def test_file_for_other_key_is_not_trusted(tmp_path: Path, dataset: PngDataset) -> None:
    backbone = CountingBackbone()
    cached_features(backbone, dataset, cache_dir=tmp_path, key=KEY, progress=False)
    other = {**KEY, "split": "test"}
    cache_path(tmp_path, KEY).rename(cache_path(tmp_path, other))
    with pytest.warns(UserWarning, match="written for another key"):
        cached_features(backbone, dataset, cache_dir=tmp_path, key=other, progress=False)
    assert backbone.calls == 2


def test_failed_save_leaves_nothing(
    tmp_path: Path, dataset: PngDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_save(obj: object, f: object) -> None:
        f.write(b"partial")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.torch, "save", broken_save)
    cache_dir = tmp_path / "cache"
    with pytest.raises(OSError, match="disk full"):
        cached_features(CountingBackbone(), dataset, cache_dir=cache_dir, key=KEY, progress=False)
    assert list(cache_dir.iterdir()) == []


def test_backbone_error_restores_mode_and_writes_nothing(
    tmp_path: Path, dataset: PngDataset
) -> None:
    backbone = CountingBackbone().train()
    backbone.feature_dim = 7  # lies about its output
    with pytest.raises(DaalmlError, match=r"backbone tiny gave \(10, 5\) features for 10 images"):
        cached_features(backbone, dataset, cache_dir=tmp_path, key=KEY, progress=False)
    assert backbone.training and not backbone.channels_last
    assert list(tmp_path.glob("*.pt")) == []


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ({}, "feature cache key is empty"),
        ({"size": 12}, "feature cache key 'size': keys and values must be strings"),
    ],
)
def test_bad_keys(tmp_path: Path, dataset: PngDataset, key: dict, message: str) -> None:
    with pytest.raises(DaalmlError, match=message):
        cached_features(CountingBackbone(), dataset, cache_dir=tmp_path, key=key, progress=False)


def test_bad_datasets_and_arguments(tmp_path: Path, dataset: PngDataset) -> None:
    backbone = CountingBackbone()
    with pytest.raises(DaalmlError, match="the dataset is empty"):
        cached_features(backbone, [], cache_dir=tmp_path, key=KEY, progress=False)
    with pytest.raises(DaalmlError, match="batch_size must be positive, got 0"):
        cached_features(backbone, dataset, cache_dir=tmp_path, key=KEY, batch_size=0)
    with pytest.raises(DaalmlError, match=r"dataset items must be \(image, label\) pairs"):
        cached_features(
            backbone, [torch.zeros(3, 8, 8)] * 2, cache_dir=tmp_path, key=KEY, progress=False
        )
    pil_items = [(Image.new("RGB", (8, 8)), 0)] * 2
    with pytest.raises(DaalmlError, match="add ToTensor"):
        cached_features(backbone, pil_items, cache_dir=tmp_path, key=KEY, progress=False)


def test_cache_dir_that_is_a_file(tmp_path: Path, dataset: PngDataset) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(
        DaalmlError, match=re.escape(f"feature cache directory {blocker}: cannot create")
    ):
        cached_features(CountingBackbone(), dataset, cache_dir=blocker, key=KEY, progress=False)
