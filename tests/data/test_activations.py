"""The trunk-activation cache: size printed, views seeded, stale files never reused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from daalml.data import activations as act
from daalml.data.activations import CachedActivations, activation_path, cached_activations
from daalml.data.dataset import ImageDataset
from daalml.data.layouts import load_splits
from daalml.data.transforms import train_transform
from daalml.errors import DaalmlError
from tests.data.builders import make_noise_folder

KEY = {"backbone": "tiny", "point": "tiny:1:x", "views": "3"}


class CountingTrunk(nn.Module):
    """A conv trunk that counts the images it sees."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return self.conv(x)


@pytest.fixture
def images(tmp_path: Path) -> ImageDataset:
    root = make_noise_folder(tmp_path / "ds", n_classes=3, per_class=3, size=24)
    records = load_splits("folder", root, train_classes=2).train
    return ImageDataset(records, train_transform(16))


def _cache(trunk, dataset, tmp_path: Path, key=KEY, views=3, dtype="float16"):
    return cached_activations(
        trunk,
        dataset,
        views=views,
        cache_dir=tmp_path / "cache",
        key=dict(key),
        dtype=dtype,
        batch_size=4,
        progress=False,
    )


def test_builds_once_then_memory_maps(images, tmp_path: Path, capsys) -> None:
    trunk = CountingTrunk()
    first = _cache(trunk, images, tmp_path)
    printed = capsys.readouterr().err
    assert "6 images x 3 views x (4, 7, 7) float16 = 6.9 KiB" in printed
    assert trunk.images == 1 + 6 * 3  # the size probe, then every view
    assert isinstance(first.array, np.memmap) and first.array.dtype == np.float16
    again = _cache(trunk, images, tmp_path)
    assert trunk.images == 19 and "activation cache" not in capsys.readouterr().err
    np.testing.assert_array_equal(np.asarray(again.array), np.asarray(first.array))
    assert torch.equal(again.labels, images.labels)


def test_views_are_seeded_distinct_and_match_the_trunk(images, tmp_path: Path) -> None:
    trunk = CountingTrunk()
    cache = _cache(trunk, images, tmp_path, dtype="float32")
    views = np.asarray(cache.array)
    assert not np.array_equal(views[0, 0], views[0, 1])  # crops differ between views
    from daalml.data.seeding import mix_seed, seed_host

    seed_host(mix_seed(act.VIEW_SEED, 4, 2))  # view 2 of image 4, recomputed by hand
    with torch.no_grad():
        expected = trunk(images[4][0].unsqueeze(0))[0]
    np.testing.assert_allclose(views[4, 2], expected.numpy(), atol=1e-6)
    # the other cache directory, the same views
    other = cached_activations(
        CountingTrunk(),
        images,
        views=3,
        cache_dir=tmp_path / "b",
        key=dict(KEY),
        dtype="float32",
        progress=False,
    )
    np.testing.assert_array_equal(np.asarray(other.array), views)


def test_stale_key_is_not_reused(images, tmp_path: Path) -> None:
    trunk = CountingTrunk()
    _cache(trunk, images, tmp_path)
    for key, views in (({**KEY, "views": "2"}, 2), ({**KEY, "point": "tiny:2:y"}, 3)):
        before = trunk.images
        cache = _cache(trunk, images, tmp_path, key=key, views=views)
        assert trunk.images > before and cache.views == views
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3


def test_tampered_file_is_recomputed_with_a_warning(images, tmp_path: Path) -> None:
    trunk = CountingTrunk()
    _cache(trunk, images, tmp_path)
    meta = activation_path(tmp_path / "cache", KEY).with_suffix(".json")
    record = json.loads(meta.read_text())
    record["key"]["views"] = "9"
    meta.write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="another key"):
        _cache(trunk, images, tmp_path)
    assert trunk.images == 2 * 19


def test_a_cache_larger_than_the_disk_is_one_line_error(images, tmp_path: Path, monkeypatch):
    class Usage:
        free = 1000

    monkeypatch.setattr(act.shutil, "disk_usage", lambda path: Usage())
    with pytest.raises(DaalmlError) as info:
        _cache(CountingTrunk(), images, tmp_path)
    assert "\n" not in str(info.value) and "needs 6.9 KiB" in str(info.value)
    assert not list((tmp_path / "cache").glob("*.npy"))


def test_seeded_key_picks_the_view() -> None:
    array = np.arange(4 * 3, dtype=np.float16).reshape(4, 3, 1, 1, 1)
    data = CachedActivations(array, torch.arange(4))
    assert data[(2, 7)][0].item() == 2 * 3 + 7 % 3
    assert data[1][0].item() == 3  # a plain index reads view 0
    assert data[(2, 7)][0].dtype == torch.float32


def test_a_killed_build_leaves_nothing_behind(images, tmp_path: Path) -> None:
    path = activation_path(tmp_path / "cache", KEY)
    path.parent.mkdir(parents=True)
    dead = path.with_name(f".{path.name}.tmp-999999999")  # no such process
    dead.write_bytes(b"half")
    _cache(CountingTrunk(), images, tmp_path)
    assert not dead.exists() and path.is_file()
