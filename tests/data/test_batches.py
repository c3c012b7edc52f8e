"""The one batch loop: in order, float32 on the CPU, no gradients, and every builder runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from daalml.data import batches as batches_module
from daalml.data.activations import cached_activations
from daalml.data.batches import concat_batches, map_batches
from daalml.data.cache import cached_features
from daalml.engine.inference import embed
from daalml.models.backbones import Backbone

CPU = torch.device("cpu")


class Items(Dataset):
    """``n`` (image, label[, name]) items; image i is filled with i (float64 by default)."""

    def __init__(self, n: int, extra: bool = False, dtype: torch.dtype = torch.float64) -> None:
        self.n = n
        self.extra = extra
        self.dtype = dtype

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        image = torch.full((3, 6, 6), float(index), dtype=self.dtype)
        item = (image, index % 3)
        return (*item, f"img{index}.png") if self.extra else item


def _sum(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(1, keepdim=True)


def test_batches_come_in_order_as_float32_and_int64_labels() -> None:
    got = list(map_batches(_sum, Items(7), batch_size=3, device=CPU))
    assert [out.shape for out, _ in got] == [(3, 1), (3, 1), (1, 1)]  # the last one short
    assert all(out.dtype == torch.float32 and out.device == CPU for out, _ in got)
    assert all(labels.dtype == torch.int64 and labels.ndim == 1 for _, labels in got)
    outputs, labels = concat_batches(got)
    assert torch.equal(outputs[:, 0], torch.arange(7, dtype=torch.float32) * 108)
    assert torch.equal(labels, torch.arange(7) % 3)


def test_fn_runs_without_gradients_and_the_caller_keeps_its_own_mode() -> None:
    seen: list[bool] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append(torch.is_grad_enabled())
        return _sum(x)

    between = [torch.is_grad_enabled() for _ in map_batches(fn, Items(5), batch_size=2, device=CPU)]
    assert seen == [False] * 3
    assert between == [True] * 3  # no_grad does not leak to the consumer across a yield
    assert torch.is_grad_enabled()


def test_items_may_carry_extra_fields_after_the_label() -> None:
    plain = concat_batches(map_batches(_sum, Items(5), batch_size=2, device=CPU))
    extra = concat_batches(map_batches(_sum, Items(5, extra=True), batch_size=2, device=CPU))
    embedded = embed(_sum, Items(5, extra=True), batch_size=4, device=CPU)
    for a, b, c in zip(plain, extra, embedded, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_the_caches_and_embed_all_run_the_one_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[DataLoader] = []

    def loader(*args, **kwargs) -> DataLoader:
        made.append(DataLoader(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(batches_module, "DataLoader", loader)
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1))
    backbone = Backbone(body, name="tiny", feature_dim=4)
    data = Items(5, dtype=torch.float32)

    features, _ = cached_features(
        backbone, data, cache_dir=tmp_path, key={"k": "f"}, batch_size=2, progress=False
    )
    assert len(made) == 1 and made[-1].batch_size == 2
    views = cached_activations(
        body[0], data, views=2, cache_dir=tmp_path, key={"k": "a"}, batch_size=3, progress=False
    )
    assert len(made) == 2 and len(made[-1].dataset) == 10  # 5 images x 2
    embedded, _ = embed(backbone.eval(), data, batch_size=4, device=CPU)
    assert len(made) == 3 and made[-1].batch_size == 4
    assert features.shape == embedded.shape == (5, 4) and views.array.shape[:2] == (5, 2)
    assert torch.allclose(features, embedded, atol=1e-5)  # channels-last conv on the CPU


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Under capture stderr is no terminal: a line at the start, each tenth and the end."""
    data = [(torch.zeros(2), 0)] * 25
    list(batches_module.map_batches(nn.Identity(), data, batch_size=1, device=torch.device(
        "cpu"), progress=True, description="features (x)"))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("features (x): 0/25 batches,") and len(lines) == 11
    assert lines[-1].startswith("features (x): 25/25 batches,")
    list(batches_module.map_batches(nn.Identity(), data, batch_size=5, device=torch.device(
        "cpu"), progress=False))
    assert capsys.readouterr().err == ""
