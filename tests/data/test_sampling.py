"""Properties of the m-per-class batch sampler: composition, determinism and rank slicing."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from daalml.data.sampling import MPerClassBatchSampler
from daalml.errors import DaalmlError


@st.composite
def sampler_setups(draw: st.DrawFn) -> tuple[list[int], int, int, int, int]:
    """Labels (shuffled, possibly sparse ids), batch size, m, replicas and seed."""
    counts = draw(st.lists(st.integers(1, 6), min_size=2, max_size=8))
    ids = draw(
        st.lists(st.integers(0, 50), min_size=len(counts), max_size=len(counts), unique=True)
    )
    labels = [label for label, n in zip(ids, counts, strict=True) for _ in range(n)]
    labels = draw(st.permutations(labels))
    m = draw(st.integers(1, 4))
    k = draw(st.integers(1, len(counts)))
    batch_size = k * m
    replicas = draw(st.sampled_from([r for r in (1, 2, 3, 4) if batch_size % r == 0]))
    return list(labels), batch_size, m, replicas, draw(st.integers(0, 2**32))


def _blocks(batch: list[int], m: int) -> list[list[int]]:
    return [batch[i : i + m] for i in range(0, len(batch), m)]


@settings(max_examples=60, deadline=None)
@given(setup=sampler_setups(), epoch=st.integers(0, 5))
def test_batches_are_m_per_class(setup: tuple[list[int], int, int, int, int], epoch: int) -> None:
    labels, batch_size, m, _, seed = setup
    sampler = MPerClassBatchSampler(labels, batch_size=batch_size, samples_per_class=m, seed=seed)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert len(batches) == len(sampler) == max(1, len(labels) // batch_size)
    counts = Counter(labels)
    for batch in batches:
        assert len(batch) == batch_size
        assert all(isinstance(i, int) and 0 <= i < len(labels) for i in batch)
        block_labels = [{labels[i] for i in block} for block in _blocks(batch, m)]
        assert all(len(b) == 1 for b in block_labels)
        assert len({next(iter(b)) for b in block_labels}) == batch_size // m
        for block in _blocks(batch, m):
            if counts[labels[block[0]]] >= m:
                assert len(set(block)) == m  # no replacement when the class has m images


@settings(max_examples=40, deadline=None)
@given(setup=sampler_setups(), epoch=st.integers(0, 3))
def test_rank_slices_tile_the_global_batch(
    setup: tuple[list[int], int, int, int, int], epoch: int
) -> None:
    labels, batch_size, m, replicas, seed = setup
    single = MPerClassBatchSampler(labels, batch_size=batch_size, samples_per_class=m, seed=seed)
    single.set_epoch(epoch)
    ranks = [
        MPerClassBatchSampler(
            labels,
            batch_size=batch_size,
            samples_per_class=m,
            seed=seed,
            num_replicas=replicas,
            rank=r,
        )
        for r in range(replicas)
    ]
    for sampler in ranks:
        sampler.set_epoch(epoch)
        assert len(sampler) == len(single)
    per_rank = [list(s) for s in ranks]
    for step, global_batch in enumerate(single):
        slices = [batches[step] for batches in per_rank]
        assert all(len(s) == batch_size // replicas for s in slices)
        assert [i for s in slices for i in s] == global_batch


def test_same_seed_and_epoch_repeat_other_epochs_and_seeds_differ() -> None:
    labels = np.repeat(np.arange(20), 5)

    def make(seed: int) -> MPerClassBatchSampler:
        return MPerClassBatchSampler(labels, batch_size=20, samples_per_class=4, seed=seed)

    a, b = make(3), make(3)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again without set_epoch repeats the epoch
    a.set_epoch(1)
    b.set_epoch(1)
    first = list(a)
    assert first == list(b)
    a.set_epoch(2)
    assert list(a) != first
    other_seed = make(4)
    other_seed.set_epoch(1)
    assert list(other_seed) != first


def test_balanced_epoch_visits_every_image_once() -> None:
    labels = torch.arange(8).repeat_interleave(4)
    sampler = MPerClassBatchSampler(labels, batch_size=8, samples_per_class=4, seed=1)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        seen = [i for batch in sampler for i in batch]
        assert sorted(seen) == list(range(32))


def test_small_classes_sampled_with_replacement() -> None:
    labels = [0, 1, 1, 1, 1, 2, 2, 2, 2]
    sampler = MPerClassBatchSampler(labels, batch_size=9, samples_per_class=3)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        (batch,) = list(sampler)
        blocks = {labels[b[0]]: b for b in _blocks(batch, 3)}
        assert blocks[0] == [0, 0, 0]
        assert len(set(blocks[1])) == 3


def test_works_as_dataloader_batch_sampler() -> None:
    labels = torch.arange(6).repeat_interleave(3)
    data = TensorDataset(torch.arange(18).float(), labels)
    sampler = MPerClassBatchSampler(labels, batch_size=6, samples_per_class=3, seed=0)
    loader = DataLoader(data, batch_sampler=sampler)
    batches = list(loader)
    assert len(batches) == 3
    for values, batch_labels in batches:
        assert values.shape == (6,)
        assert torch.equal(batch_labels[:3], batch_labels[:1].expand(3))
        assert torch.equal(labels[values.long()], batch_labels)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"batch_size": 10, "samples_per_class": 4},
            r"batch_size \(10\) must be a positive multiple of samples_per_class \(4\)",
        ),
        ({"batch_size": 8, "samples_per_class": 0}, r"samples_per_class must be at least 1, got 0"),
        (
            {"batch_size": 0, "samples_per_class": 2},
            r"batch_size \(0\) must be a positive multiple",
        ),
        (
            {"batch_size": 12, "samples_per_class": 2},
            r"needs 6 classes per batch but labels have 4",
        ),
        (
            {"batch_size": 8, "samples_per_class": 2, "num_replicas": 3},
            r"batch_size \(8\) must be divisible by num_replicas \(3\)",
        ),
        (
            {"batch_size": 8, "samples_per_class": 2, "num_replicas": 2, "rank": 2},
            r"rank \(2\) must be in 0..num_replicas-1 \(2\)",
        ),
        (
            {"batch_size": 8, "samples_per_class": 2, "seed": -1},
            r"seed must be non-negative, got -1",
        ),
    ],
)
def test_invalid_settings(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(DaalmlError, match=message):
        MPerClassBatchSampler(list(range(4)) * 3, **kwargs)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([], r"labels must be a non-empty 1-D sequence, got shape \(0,\)"),
        ([[0, 1], [1, 0]], r"labels must be a non-empty 1-D sequence, got shape \(2, 2\)"),
        ([0.5, 1.5], r"labels must be integers, got dtype float64"),
    ],
)
def test_invalid_labels(labels: list[object], message: str) -> None:
    with pytest.raises(DaalmlError, match=message):
        MPerClassBatchSampler(labels, batch_size=2, samples_per_class=1)  # type: ignore[arg-type]
