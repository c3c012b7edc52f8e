"""Tests for daalml.evaluation.knn_backends: the certified bf16 backend gives the exact neighbours."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import daalml.evaluation.kmeans as KM
import daalml.evaluation.knn_backends as K
import daalml.evaluation.knn_heaps as H
import daalml.evaluation.knn_tiles as T
from daalml.errors import DaalmlError
from daalml.metrics import knn, query_gallery_metrics, retrieval_metrics


def unit(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return F.normalize(torch.as_tensor(x, dtype=torch.float32), dim=1)


def random_unit(n: int, d: int, seed: int) -> torch.Tensor:
    return unit(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)))


def dyadic_unit(n: int, d: int, seed: int) -> torch.Tensor:
    """Unit vectors with four entries of +-1/2: every dot product is a multiple of 1/4,
    exact in any summation order and in bf16, so there are ties everywhere."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, d), np.float32)
    for row in x:
        row[rng.choice(d, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return torch.from_numpy(x)


def reference(
    q: torch.Tensor, g: torch.Tensor, k: int, exclude_self: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Top k by (float64 score descending, index ascending), from the full matrix."""
    sim = q.double().numpy() @ g.double().numpy().T
    if exclude_self:
        np.fill_diagonal(sim, -np.inf)
    cols = np.arange(sim.shape[1])
    order = np.stack([np.lexsort((cols, -row))[:k] for row in sim])
    return np.take_along_axis(sim, order, 1), order


def both(
    q: torch.Tensor, g: torch.Tensor, k: int, exclude_self: bool, chunk_size: int = 1024
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    kwargs = {"exclude_self": exclude_self, "chunk_size": chunk_size}
    return knn(q, g, k, backend="exact", **kwargs), knn(q, g, k, backend="bf16", **kwargs)


def assert_same(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]):
    assert torch.equal(a[1], b[1])
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-6)


@pytest.fixture
def sample_small_galleries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let small test galleries take the sampled-threshold candidate path."""
    monkeypatch.setattr(K, "SAMPLE_MIN_RATIO", 2)


def count_rows(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    """Replace ``module.name`` (a redo taking (q, gallery, k, self_idx)) by a spy that
    records how many queries each call recomputes."""
    calls: list[int] = []
    original = getattr(module, name)

    def spy(q, gallery, k, self_idx):
        calls.append(q.shape[0])
        return original(q, gallery, k, self_idx)

    monkeypatch.setattr(module, name, spy)
    return calls


@pytest.fixture
def redo_counter(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Number of queries each exact redo of the bf16 backend recomputes."""
    return count_rows(monkeypatch, K, "_exact_block")


@pytest.fixture
def tile_redo_counter(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Number of queries each redo of the tiled paths (scan or heaps) recomputes."""
    return count_rows(monkeypatch, T, "exact_rows")


# --- bf16 agrees with exact ---------------------------------------------------------------


@pytest.mark.parametrize("sampled", [False, True])
@pytest.mark.parametrize(
    ("n_q", "n_g", "d", "k", "exclude_self", "chunk"),
    [
        (300, 300, 24, 10, True, 128),  # chunks that do not divide N
        (211, 700, 32, 7, False, 50),
        (90, 90, 16, 89, True, 33),  # k = all available
        (90, 90, 16, 80, True, 1024),  # k near N: every item is a candidate
        (60, 95, 8, 95, False, 7),  # k = gallery size
        (5, 400, 16, 3, False, 2),  # blocks smaller than a rescoring group
    ],
)
def test_bf16_matches_exact_on_random_data(
    n_q: int,
    n_g: int,
    d: int,
    k: int,
    exclude_self: bool,
    chunk: int,
    sampled: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if sampled:
        monkeypatch.setattr(K, "SAMPLE_MIN_RATIO", 2)
    g = random_unit(n_g, d, seed=n_g)
    q = g[:n_q] if exclude_self else random_unit(n_q, d, seed=n_q + 1)
    exact, bf16 = both(q, g, k, exclude_self, chunk)
    assert exact[1].shape == (n_q, k)
    assert_same(exact, bf16)
    # A true top k: the float64 scores of the items returned are the best k, in order
    # (items within fp32 rounding of each other may swap, hence the tolerance).
    ref_scores, _ = reference(q, g, k, exclude_self)
    sim = q.double() @ g.double().T
    np.testing.assert_allclose(sim.gather(1, exact[1]).numpy(), ref_scores, rtol=0, atol=1e-6)


@pytest.mark.usefixtures("sample_small_galleries")
@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("chunk", [1, 37, 1024])
def test_ties_and_duplicates_resolved_by_index(exclude_self: bool, chunk: int) -> None:
    # Exact ties at every rank, the k boundary included, and exact duplicate rows.
    base = dyadic_unit(150, 8, seed=1)
    g = torch.cat([base, base[:40], base[:10]])
    q = g if exclude_self else dyadic_unit(70, 8, seed=2)
    k = 25
    exact, bf16 = both(q, g, k, exclude_self, chunk)
    assert torch.equal(exact[0], bf16[0]) and torch.equal(exact[1], bf16[1])
    ref_scores, ref_idx = reference(q, g, k, exclude_self)
    assert exact[1].numpy().tolist() == ref_idx.tolist()
    assert exact[0].numpy().tolist() == ref_scores.astype(np.float32).tolist()
    if exclude_self:
        assert not bool((exact[1] == torch.arange(len(g))[:, None]).any())


def test_zero_vectors_and_single_direction() -> None:
    # All scores tie (zero queries) or two values only: every query is redone exactly.
    g = torch.cat([torch.zeros(5, 4), unit(torch.ones(40, 4))])
    exact, bf16 = both(g, g, 6, True)
    assert_same(exact, bf16)
    assert exact[1][0].tolist() == [1, 2, 3, 4, 5, 6]


def test_metrics_do_not_depend_on_backend() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 30, size=600)
    x = rng.standard_normal((30, 32))[y] + rng.standard_normal((600, 32))
    backends = ("exact", "bf16", "tiled", "tiled-bf16", "auto")
    loo = [retrieval_metrics(x, y, backend=b, kmeans_niter=5) for b in backends]
    assert all(m == loo[0] for m in loo)
    qg = [
        query_gallery_metrics(x[:200], y[:200], x[200:], y[200:], backend=b)
        for b in ("exact", "bf16", "tiled", "tiled-bf16")
    ]
    assert all(m == qg[0] for m in qg)


# --- the certificate ----------------------------------------------------------------------


def test_bound_holds_for_random_and_worst_case_vectors() -> None:
    # Not normalised: the bound takes the actual norms. Entries of 2^-5 (1 + 2^-8) sit
    # halfway between two bf16 values and all round down; 2^-5 (1 + 3 2^-9) round up.
    worst = torch.full((3, 512), 2.0**-5)
    worst[0] *= 1 + 2.0**-8
    worst[1] *= 1 + 3 * 2.0**-9
    worst[2, :256] *= 1 + 2.0**-8
    worst[2, 256:] *= 1 + 3 * 2.0**-9
    sparse = random_unit(100, 512, seed=1) * (torch.rand(100, 512) < 0.02)
    x = torch.cat([worst, random_unit(300, 512, seed=0), sparse, torch.zeros(1, 512)])
    x16 = x.bfloat16()
    exact = x @ x.T
    b = (x16 @ x16.T).float()
    norms, residuals = K._norms_up(x), K._residual_norms(x, x16)
    err = K.bf16_error(norms, residuals, float(norms.max()), float(residuals.max()), 512)
    bound = K.bf16_score_bound(b, err[:, None])
    assert bool((exact < bound).all())
    assert float(exact[0, 0] - b[0, 0]) > 0.0035  # the rounding term is nearly attained
    assert float((bound - b).max()) < 0.01  # and the bound is not vacuous
    minus_inf = torch.tensor([float("-inf")])
    assert float(K.bf16_score_bound(minus_inf, err[:1])[0]) == float("-inf")


def test_near_ties_below_bf16_resolution_are_redone_exactly(redo_counter: list[int]) -> None:
    # 300 items whose cosines to the query differ by ~1e-5: bf16 cannot order them, so no
    # query gets a certificate and every one is recomputed in fp32.
    angles = torch.linspace(0.30, 0.31, 300, dtype=torch.float64)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    g = torch.zeros(300, 16, dtype=torch.float64)
    g[:, 0], g[:, 1] = torch.cos(angles[perm]), torch.sin(angles[perm])
    q = torch.zeros(20, 16, dtype=torch.float64)
    q[:, 0] = 1.0
    q[:, 2] = torch.linspace(0, 1e-3, 20)
    exact, bf16 = both(unit(q), unit(g), 10, False)
    assert sum(redo_counter) > 0
    assert torch.equal(exact[1], bf16[1])
    assert exact[1][0].tolist() == perm.argsort()[:10].tolist()


def test_failing_certificates_widen_then_give_up(
    monkeypatch: pytest.MonkeyPatch, redo_counter: list[int]
) -> None:
    monkeypatch.setattr(K, "bf16_score_bound", lambda b, err: torch.full_like(b, float("inf")))
    g = random_unit(400, 16, seed=3)
    searcher = K._Bf16Searcher(g, 5)
    widths = []
    for start in range(0, 200, 40):
        if searcher.gave_up:
            break
        widths.append(searcher._n_cand(searcher.widen))
        searcher.search(g[start : start + 40], torch.arange(start, start + 40))
    assert widths == [21, 37, 69] and searcher.gave_up
    exact = knn(g, g, 5, exclude_self=True, chunk_size=40, backend="exact")
    redo_counter.clear()
    bf16 = knn(g, g, 5, exclude_self=True, chunk_size=40, backend="bf16")
    assert_same(exact, bf16)
    assert redo_counter == [40] * 10  # 3 blocks redone, 7 exact: each query once


@pytest.mark.usefixtures("sample_small_galleries")
def test_thresholds_that_keep_too_few_or_too_many_get_a_second_chance(
    monkeypatch: pytest.MonkeyPatch, redo_counter: list[int]
) -> None:
    wide: list[int] = []
    topk = K._candidates_topk
    monkeypatch.setattr(K, "_candidates_topk", lambda s, n: wide.append(len(s)) or topk(s, n))
    g = random_unit(500, 16, seed=4)
    for fake in (0.99, 1e-30, -0.5):  # keeps < k items; keeps all items; not positive
        monkeypatch.setattr(
            K._Bf16Searcher,
            "_thresholds",
            lambda self, q16, self_idx, n_cand, v=fake: torch.full(
                (q16.shape[0],), v, dtype=torch.bfloat16
            ),
        )
        wide.clear()
        exact = knn(g[:50], g, 8, exclude_self=False, backend="exact")
        redo_counter.clear()
        bf16 = knn(g[:50], g, 8, exclude_self=False, backend="bf16")
        assert_same(exact, bf16)
        assert wide == [50] and redo_counter == []  # all rescued by the wider topk


# --- pieces -------------------------------------------------------------------------------


def test_topk_lex_takes_lowest_indices_at_a_tied_boundary() -> None:
    sim = torch.tensor([[0.5, 0.75, 0.5, 0.5, 0.125, 0.5], [0.25, 0.25, 0.25, 0.25, 0.25, 0.25]])
    scores, idx = K.topk_lex(sim, 3)
    assert idx.tolist() == [[1, 0, 2], [0, 1, 2]]
    assert scores.tolist() == [[0.75, 0.5, 0.5], [0.25, 0.25, 0.25]]
    assert K.topk_lex(sim, 6)[1].tolist() == [[1, 0, 2, 3, 5, 4], [0, 1, 2, 3, 4, 5]]


def test_where_at_least_matches_a_plain_comparison() -> None:
    sim = torch.randn(37, 129, generator=torch.Generator().manual_seed(5)).bfloat16()
    sim[3, 7] = float("-inf")
    sim[4, :] = -0.0
    threshold = torch.rand(37, generator=torch.Generator().manual_seed(6)).bfloat16() + 0.01
    rows, cols = K._where_at_least(sim, threshold)
    expected = torch.nonzero(sim.float() >= threshold.float()[:, None], as_tuple=True)
    assert torch.equal(rows, expected[0]) and torch.equal(cols, expected[1])


def test_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    big = {"n_gallery": 20000, "k": 70}
    assert K.resolve_backend("exact", cpu, 10**9) == "exact"
    assert K.resolve_backend("bf16", cpu, 1) == "bf16"
    assert K.resolve_backend("tiled", cpu, 1) == "tiled"
    assert K.resolve_backend("auto", cpu, (1 << 23) - 1) == "exact"
    assert K.resolve_backend("auto", cpu, (1 << 23) - 1, **big) == "tiled"
    # "auto" never picks bf16, however fast the probe says it is: its rescoring is not
    # bit-exact on every CPU (24 of 20,000 rows differed on an AMX Xeon)
    for speedup in (3.0, 5.0, 50.0):
        monkeypatch.setitem(K._bf16_speedup, "cpu", speedup)
        assert K.resolve_backend("auto", cpu, 10**9, **big) == "tiled"
        assert K.resolve_backend("auto", cpu, 10**9, symmetric=True, **big) == "tiled"
        assert K.resolve_backend("auto", cpu, 10**9, symmetric=True) == "exact"
        assert K.resolve_backend("auto", cpu, 10**9) == "exact"
    assert K.resolve_backend("auto", cuda, 10**9) == "exact"
    assert K.resolve_backend("auto", cuda, 10**9, **big) == "tiled"
    monkeypatch.setitem(K._bf16_speedup, "cpu", 1.0)
    assert K.resolve_backend("auto", cpu, 10**9) == "exact"
    assert K.resolve_backend("auto", cpu, 10**9, **big) == "tiled"
    with pytest.raises(DaalmlError, match="CPU tensors only"):
        K.resolve_backend("bf16", cuda, 1)
    with pytest.raises(DaalmlError, match="backend: 'fast'"):
        knn(np.eye(3), np.eye(3), 1, exclude_self=False, backend="fast")  # type: ignore[arg-type]
    with pytest.raises(DaalmlError, match="backend"):
        retrieval_metrics(np.eye(3), [0, 0, 1], backend="faiss")  # type: ignore[arg-type]


def test_probe_is_measured_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(K, "_bf16_speedup", {})
    threads = torch.get_num_threads()
    first = K.bf16_speedup()  # measured on one thread
    assert torch.get_num_threads() == threads
    assert K._bf16_speedup == {"cpu": first} and first > 0
    assert K.bf16_matmul_is_faster() is (first >= K.BF16_MIN_SPEEDUP)
    monkeypatch.setattr(K, "_best_times", lambda fns: pytest.fail("probed twice"))
    assert K.bf16_speedup() == first


# --- the tiled fp32 backend -------------------------------------------------------------


TILED = pytest.mark.parametrize("impl", [T, H], ids=["scan", "heaps"])
"""The threshold scan (any device) and the faiss-heap merge (CPU, what "tiled" runs there)."""


def tiled(
    q: torch.Tensor, g: torch.Tensor, k: int, exclude_self: bool, block: int, impl=T
) -> tuple[torch.Tensor, torch.Tensor]:
    blocks = list(impl.iter_blocks(q, g, k, exclude_self=exclude_self, block=block))
    assert [b[0] for b in blocks] == T.block_bounds(q.shape[0], block)[:-1]
    return torch.cat([b[1] for b in blocks]), torch.cat([b[2] for b in blocks])


@pytest.mark.parametrize(
    ("n_q", "n_g", "d", "k", "exclude_self", "block"),
    [
        (700, 700, 24, 10, True, 64),  # symmetric, 11 row blocks, last one short
        (700, 700, 24, 10, True, 50),  # blocks not a multiple of the scan segment
        (211, 1300, 32, 7, False, 128),
        (90, 90, 16, 89, True, 32),  # k = all available: every row redone exactly
        (60, 95, 8, 95, False, 32),  # k = gallery size
        (5, 400, 16, 3, False, 32),  # fewer queries than GEMM_MIN_ROWS
        (500, 500, 16, 60, True, 4096),  # one tile
    ],
)
@TILED
def test_tiled_matches_exact_on_random_data(
    n_q: int, n_g: int, d: int, k: int, exclude_self: bool, block: int, impl
) -> None:
    g = random_unit(n_g, d, seed=n_g)
    q = g[:n_q] if exclude_self else random_unit(n_q, d, seed=n_q + 1)
    exact = knn(q, g, k, exclude_self=exclude_self, backend="exact")
    scores, idx = tiled(q, g, k, exclude_self, block, impl)
    assert torch.equal(idx, exact[1])
    torch.testing.assert_close(scores, exact[0], rtol=0, atol=1e-6)  # GEMM shapes differ
    assert torch.equal(knn(q, g, k, exclude_self=exclude_self, backend="tiled")[1], exact[1])


@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("block", [32, 48, 4096])
@TILED
def test_tiled_ties_and_duplicates_resolved_by_index(exclude_self: bool, block: int, impl) -> None:
    base = dyadic_unit(150, 8, seed=1)
    g = torch.cat([base, base[:40], base[:10]])
    q = g if exclude_self else dyadic_unit(70, 8, seed=2)
    ref_scores, ref_idx = reference(q, g, 25, exclude_self)
    scores, idx = tiled(q, g, 25, exclude_self, block, impl)
    assert idx.numpy().tolist() == ref_idx.tolist()
    assert scores.numpy().tolist() == ref_scores.astype(np.float32).tolist()


def test_tiled_rows_without_enough_entries_are_redone(
    monkeypatch: pytest.MonkeyPatch, tile_redo_counter: list[int]
) -> None:
    g = random_unit(600, 16, seed=7)
    exact = knn(g, g, 9, exclude_self=True, backend="exact")
    redone = tile_redo_counter
    for fake in (0.999, float("-inf")):  # keeps < k: too high; keeps all: past the cap
        monkeypatch.setattr(T, "_thresholds", lambda q, *a, v=fake: torch.full((len(q),), v))
        monkeypatch.setattr(T, "CAP_FACTOR", 0)  # cap = k: every row past it with -inf
        redone.clear()
        assert torch.equal(tiled(g, g, 9, True, 64)[1], exact[1])
        assert sum(redone) == 600


@pytest.mark.parametrize("exclude_self", [True, False])
@TILED
def test_tiled_does_not_depend_on_workers_and_closes_early(exclude_self: bool, impl) -> None:
    """The next sweep runs while a finished block is merged and used: same neighbours for
    1-3 workers, and a search left after its first block restores torch's threads."""
    g = random_unit(700, 16, seed=11)
    q = g if exclude_self else random_unit(300, 16, seed=12)
    exact = knn(q, g, 12, exclude_self=exclude_self, backend="exact")[1]
    threads = torch.get_num_threads()
    for workers in (1, 2, 3):
        blocks = impl.iter_blocks(q, g, 12, exclude_self=exclude_self, block=64, workers=workers)
        idx = [b[2].clone() for b in blocks]
        assert torch.equal(torch.cat(idx), exact)
        first = impl.iter_blocks(q, g, 12, exclude_self=exclude_self, block=64, workers=workers)
        assert torch.equal(next(first)[2], exact[:64])
        first.close()
        assert torch.get_num_threads() == threads


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("exclude_self", [True, False])
def test_heaps_redo_the_rows_tied_at_the_k_boundary(
    tile_redo_counter: list[int], exclude_self: bool, workers: int
) -> None:
    """The buffers take an entry only above their threshold, so at an exact tie at the k
    boundary they may have left out a lower index: such rows fail the certificate and are
    recomputed, and only those (a gallery without ties redoes none), whatever the number of
    workers whose buffers a row's candidates come from."""
    redone = tile_redo_counter

    def search(q: torch.Tensor, g: torch.Tensor, k: int, exclude_self: bool, block: int):
        blocks = list(
            H.iter_blocks(q, g, k, exclude_self=exclude_self, block=block, workers=workers)
        )
        return torch.cat([b[1] for b in blocks]), torch.cat([b[2] for b in blocks])

    base = dyadic_unit(150, 8, seed=1)
    g = torch.cat([base, base[:40], base[:10]])
    q = g if exclude_self else dyadic_unit(70, 8, seed=2)
    ref_scores, ref_idx = reference(q, g, 25, exclude_self)
    scores, idx = search(q, g, 25, exclude_self, 32)
    assert idx.numpy().tolist() == ref_idx.tolist()
    assert scores.numpy().tolist() == ref_scores.astype(np.float32).tolist()
    assert sum(redone) > 0
    redone.clear()
    g = random_unit(600, 16, seed=7)
    assert torch.equal(search(g, g, 9, True, 64)[1], knn(g, g, 9, exclude_self=True)[1])
    assert redone == []


def test_heaps_redo_rows_whose_floor_too_few_items_reach(
    monkeypatch: pytest.MonkeyPatch, tile_redo_counter: list[int]
) -> None:
    """A floor above a row's (k + 1)-th score leaves it fewer than k entries: redone."""
    g = random_unit(600, 16, seed=7)
    monkeypatch.setattr(T, "_thresholds", lambda q, *a: torch.full((len(q),), 0.999))
    assert torch.equal(tiled(g, g, 9, True, 64, H)[1], knn(g, g, 9, exclude_self=True)[1])
    assert sum(tile_redo_counter) == 600


def test_heap_floors_come_from_a_sparser_sample_and_stay_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The floors' sample is 1/64 of large galleries (never under SAMPLE_MIN columns, never
    denser than the scan's 1/16); the search stays exact with it."""
    assert H.floor_fraction(4096) == T.SAMPLE_FRACTION  # 256 columns either way
    assert H.floor_fraction(10_000) == 10_000 // T.SAMPLE_MIN
    assert H.floor_fraction(20_000) == H.FLOOR_SAMPLE_FRACTION == 64
    assert H.floor_fraction(1_000_000) == 64
    seen: list[int] = []
    thresholds = T.row_thresholds

    def spy(*args) -> torch.Tensor:
        seen.append(args[-1])
        return thresholds(*args)

    monkeypatch.setattr(T, "row_thresholds", spy)
    g = random_unit(9000, 8, seed=5)  # d = 8: many near-ties among 9000 neighbours
    scores, idx = knn(g, g, 20, exclude_self=True, backend="tiled")  # the heaps, on CPU
    ref_scores, ref_idx = knn(g, g, 20, exclude_self=True, backend="exact")
    assert seen == [9000 // T.SAMPLE_MIN] and torch.equal(idx, ref_idx)
    assert torch.equal(scores, ref_scores)


def test_heap_bytes_do_not_grow_with_the_workers() -> None:
    """One shared buffer set for all rows; per worker only OWN_SETS sets of one block's rows;
    rows that keep more candidates (bf16 products) take more."""
    k, sets = 79, H.OWN_SETS
    row = H.row_bytes(k)
    assert row == 2 * 80 * 8 + 8  # capacity 2 (k + 1) int64 keys, an int32 count, a threshold
    assert H.row_bytes(k, kept=120) == 2 * 120 * 8 + 8
    for workers in (1, 2, 16):
        extra = sets * workers * T.CPU_BLOCK * row  # the workers' block buffers
        assert H.heap_bytes(100_000, k, workers) == 100_000 * row + extra
        assert H.heap_bytes(200_000, k, workers) == 200_000 * row + extra
        assert H.heap_bytes(100_000, k, workers, symmetric=False) == extra
    assert 16 * 100_000 * row > H.HEAP_BYTES_MAX  # a set per worker for all rows did not fit
    assert H.fits(100_000, k, 16) and H.fits(800_000, k, 16)
    assert not H.fits(900_000, k, 1)
    assert H.fits(900_000, k, 1, symmetric=False)  # queries to a gallery: no shared set
    assert H.usable(torch.device("cpu"), 900_000, k, 1, symmetric=False) == H.kernels.AVAILABLE
    assert not H.fits(800_000, k, 16, kept=120)
    assert H.heap_bytes(700, 9, 3, block=64) == (700 + sets * 3 * 64) * H.row_bytes(9)
    assert H.heap_bytes(70, 9, 3, block=64) == (70 + sets * 3 * 70) * H.row_bytes(9)  # short


def test_tile_products_go_into_reused_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A search's tiles are multiplied into a few tensors reused tile after tile (a fresh
    1 MB result per tile cost up to 5% of the CPU), with the bits of a plain product; a tile too
    small for the GEMM's kernels is padded and ignores the tensor."""
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(40, 24, generator=gen), torch.randn(33, 24, generator=gen)
    out = torch.empty(40, 33)
    assert T.tile_product(a, b, out) is out and torch.equal(out, a @ b.T)
    small = T.tile_product(a[:5], b, torch.empty(5, 33))
    assert torch.equal(small, T.tile_product(a[:5], b))
    results: list[torch.Tensor] = []
    plain = T.tile_product

    def spy(x: torch.Tensor, y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        results.append(out)
        return plain(x, y, out)

    monkeypatch.setattr(T, "tile_product", spy)
    x = F.normalize(torch.randn(700, 24, generator=gen), dim=1)
    found = list(H.iter_blocks(x, x, 5, exclude_self=True, block=64, workers=2))
    into = [r for r in results if r is not None]  # the others: the floors' sample products
    assert len(into) == 11 * 12 // 2  # every tile on and above the diagonal
    assert len({r.data_ptr() for r in into}) <= 2 * 4  # per worker: full, last row/column
    monkeypatch.setattr(H._TileOutputs, "get", lambda self, rows, cols: None)  # fresh results
    fresh = list(H.iter_blocks(x, x, 5, exclude_self=True, block=64, workers=2))
    for (start, scores, indices), (start_f, scores_f, indices_f) in zip(found, fresh, strict=True):
        assert start == start_f and torch.equal(scores, scores_f) and torch.equal(indices, indices_f)


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("exclude_self", [True, False])
def test_heaps_allocate_the_bytes_said(
    monkeypatch: pytest.MonkeyPatch, exclude_self: bool, workers: int
) -> None:
    allocated: list[int] = []
    init = H._Buffers.__init__

    def spy(self, *args) -> None:
        init(self, *args)
        allocated.append(sum(a.nbytes for a in self.arrays))

    monkeypatch.setattr(H._Buffers, "__init__", spy)
    g = random_unit(700, 16, seed=11)
    q = g if exclude_self else random_unit(300, 16, seed=12)
    list(H.iter_blocks(q, g, 12, exclude_self=exclude_self, block=64, workers=workers))
    expected = H.heap_bytes(q.shape[0], 12, workers, block=64, symmetric=exclude_self)
    assert sum(allocated) == expected


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("exclude_self", [True, False])
def test_heaps_each_heap_row_has_one_writer_at_a_time(
    monkeypatch: pytest.MonkeyPatch, exclude_self: bool, workers: int
) -> None:
    """Records every offer (sweep, worker's part, buffer set, rows), for the tile's rows and
    for its columns: within a sweep no two parts write the same rows of a set; sweep i + 1,
    which runs while block i is finished, writes none of the sets that block i is read from
    (the shared rows of blocks <= i and sweep i's per-worker sets: the double buffer)."""
    local = threading.local()
    writes: list[tuple[int, int, int, int, int]] = []  # sweep, part, buffers, first, end row
    parts: dict[int, list[int]] = {}  # sweep -> its parts' per-worker buffers
    shared_ids: set[int] = set()
    sweep_part, offer, calls = H._sweep_part, H._Buffers.offer, itertools.count()

    def spy_part(*args) -> None:
        i, direct, shared = args[4], args[6], args[8]
        local.tag = (i, next(calls))  # the part: one call of _sweep_part
        if shared is not None:
            shared_ids.add(id(shared))
        if direct is not shared:
            parts.setdefault(i, []).append(id(direct))
        sweep_part(*args)

    def spy_offer(self, sim, row0, col0, columns_to=None, col_row0=0, col_id0=0) -> None:
        writes.append((*local.tag, id(self), row0, row0 + sim.shape[0]))
        if columns_to is not None:
            writes.append((*local.tag, id(columns_to), col_row0, col_row0 + sim.shape[1]))
        offer(self, sim, row0, col0, columns_to, col_row0, col_id0)

    monkeypatch.setattr(H, "_sweep_part", spy_part)
    monkeypatch.setattr(H._Buffers, "offer", spy_offer)
    g = random_unit(700, 16, seed=11)
    q = g if exclude_self else random_unit(300, 16, seed=12)
    exact = knn(q, g, 12, exclude_self=exclude_self, backend="exact")[1]
    blocks = H.iter_blocks(q, g, 12, exclude_self=exclude_self, block=64, workers=workers)
    assert torch.equal(torch.cat([b[2] for b in blocks]), exact)
    bounds = T.block_bounds(q.shape[0], 64)
    assert len(shared_ids) == exclude_self and len({w[0] for w in writes}) == len(bounds) - 1
    for i, owns in parts.items():
        assert len(set(owns)) == len(owns) <= workers  # a buffer set per part
        if i + 1 in parts:
            assert not set(owns) & set(parts[i + 1])  # the double buffer
    for a, b in itertools.combinations(writes, 2):
        if a[0] == b[0] and a[1] != b[1] and a[2] == b[2]:
            assert a[4] <= b[3] or b[4] <= a[3], (a, b)  # same sweep, set, rows: one part
    for i, _, buffers, first, _ in writes:
        if buffers in shared_ids:
            assert first >= bounds[i]  # sweep i writes no shared row of a block before i


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("exclude_self", [True, False])
def test_heaps_sweeps_run_on_without_writing_what_a_finish_reads(
    monkeypatch: pytest.MonkeyPatch, exclude_self: bool, workers: int
) -> None:
    """The workers sweep on while blocks are finished (no join per sweep), so every offer
    and every block's finish is stamped with a shared clock at its start and end: no offer
    to a set's rows overlaps a finish reading those rows, each shared row and each
    per-worker set has one writing thread, and the workers did run ahead of the finishes
    (slowed here so that they can)."""
    clock, lock = itertools.count(), threading.Lock()
    writes: list[tuple[str, int, int, int, int, int]] = []  # thread, set, rows, start, end
    reads: list[tuple[int, int, int, int, int]] = []  # set, rows, start, end
    offer, finish = H._Buffers.offer, H._finish

    def stamp() -> int:
        with lock:
            return next(clock)

    sweeps: list[tuple[int, str, int, int]] = []  # sweep, thread, start, end of its part
    sweep_part = H._sweep_part

    def spy_part(*args) -> None:
        start = stamp()
        sweep_part(*args)
        sweeps.append((args[4], threading.current_thread().name, start, stamp()))

    def spy_offer(self, sim, row0, col0, columns_to=None, col_row0=0, col_id0=0) -> None:
        start = stamp()
        threading.Event().wait(0.0005)  # tiles take long next to the threads' start-up
        offer(self, sim, row0, col0, columns_to, col_row0, col_id0)
        end, thread = stamp(), threading.current_thread().name
        writes.append((thread, id(self), row0, row0 + sim.shape[0], start, end))
        if columns_to is not None:
            writes.append((thread, id(columns_to), col_row0, col_row0 + sim.shape[1], start, end))

    def spy_finish(k, buffers, n_rows, *rest):
        start = stamp()
        threading.Event().wait(0.004)  # a slow finish: the workers run ahead meanwhile
        result = finish(k, buffers, n_rows, *rest)
        end = stamp()
        reads.extend((id(b), r0, r0 + n_rows, start, end) for b, r0 in buffers)
        return result

    monkeypatch.setattr(H._Buffers, "offer", spy_offer)
    monkeypatch.setattr(H, "_finish", spy_finish)
    monkeypatch.setattr(H, "_sweep_part", spy_part)
    g = random_unit(900, 16, seed=11)
    q = g if exclude_self else random_unit(700, 16, seed=12)
    exact = knn(q, g, 12, exclude_self=exclude_self, backend="exact")[1]
    blocks = H.iter_blocks(q, g, 12, exclude_self=exclude_self, block=32, workers=workers)
    assert torch.equal(torch.cat([b[2] for b in blocks]), exact)
    for thread, buffers, first, end, w_start, w_end in writes:
        for read_buffers, r_first, r_end, r_start, r_stop in reads:
            if buffers == read_buffers and first < r_end and r_first < end:
                assert w_end < r_start or r_stop < w_start, (thread, first, r_first)
    writers: dict[tuple[int, int], set[str]] = {}
    for thread, buffers, first, end, *_ in writes:
        for row in range(first, end):
            writers.setdefault((buffers, row), set()).add(thread)
    assert all(len(threads) == 1 for threads in writers.values())
    ahead = [r for r in reads if any(w[4] > r[2] and w[5] < r[3] for w in writes)]
    assert ahead  # offers (to other rows) ran during finishes
    # no join per sweep: a worker started sweep i + 1 while another still ran sweep i
    assert any(
        a[0] == b[0] + 1 and a[1] != b[1] and a[2] < b[3] for a in sweeps for b in sweeps
    )


@pytest.mark.timeout(60)
def test_heaps_search_stops_its_workers_when_left_or_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A caller that stops reading ends the workers' sweeps (no sweep thread is left once
    the generator is closed); a worker's failure reaches the caller as itself, not as a
    hang."""
    g = random_unit(2000, 16, seed=3)
    parts: list[int] = []
    sweep_part = H._sweep_part

    def counting(*args) -> None:
        parts.append(args[4])
        sweep_part(*args)

    monkeypatch.setattr(H, "_sweep_part", counting)
    blocks = H.iter_blocks(g, g, 10, exclude_self=True, block=32, workers=2)
    next(blocks)
    blocks.close()
    assert max(parts) < len(T.block_bounds(2000, 32)) - 2  # not every sweep ran
    assert not [t for t in threading.enumerate() if t.name.startswith("daalml-sweeps")]

    def failing(*args) -> None:
        if args[4] == 5 and threading.current_thread().name == "daalml-sweeps-0":
            threading.Event().wait(0.3)  # the main thread waits for sweep 5 meanwhile
            raise MemoryError("sweep 5")
        sweep_part(*args)

    monkeypatch.setattr(H, "_sweep_part", failing)
    with pytest.raises(MemoryError, match="sweep 5"):
        list(H.iter_blocks(g, g, 10, exclude_self=True, block=32, workers=2))


@pytest.mark.timeout(120)
def test_a_search_left_open_until_the_interpreter_exits_ends_cleanly() -> None:
    """A started search kept in a variable that lives to the end is never closed, so its
    workers wait for blocks that the main thread no longer finishes: the exit must stop and
    join them itself. Joined as pool threads, they hung the exit; left running as bare
    daemon threads, the teardown aborted the process in 9 of 20 runs ("terminate called
    without an active exception"). Three runs, each must exit 0."""
    script = (
        "import torch\n"
        "import daalml.evaluation.knn_heaps as H\n"
        "g = torch.nn.functional.normalize(torch.randn(2000, 16), dim=1)\n"
        "search = H.iter_blocks(g, g, 10, exclude_self=True, block=32, workers=2)\n"
        "next(search)\n"
        "print('left open', flush=True)\n"
    )
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0 and done.stdout.strip() == "left open", done.stderr[-2000:]
    from daalml.evaluation import sweep_progress

    list(H.iter_blocks(random_unit(300, 8, seed=1), random_unit(300, 8, seed=1), 5,
                       exclude_self=True, block=32, workers=2))
    assert not list(sweep_progress._OPEN)  # a finished search leaves nothing for the exit


def test_heap_owners_deal_column_blocks_back_and_forth() -> None:
    """Column block j (j + 1 tiles of a leave-one-out search) goes to owner(j): on two
    workers 0, 1, 1, 0, 0, 1, ..., so that their tile totals differ by at most two column
    blocks' tiles (by 20 tiles of 820 at N = 20,000 dealt in turn, by none so)."""
    assert [H.owner(j, 2) for j in range(8)] == [0, 1, 1, 0, 0, 1, 1, 0]
    assert [H.owner(j, 3) for j in range(7)] == [0, 1, 2, 2, 1, 0, 0]
    for workers in (1, 2, 3, 4):
        for n_blocks in (1, 7, 40, 117):
            totals = [0] * workers
            for j in range(n_blocks):
                totals[H.owner(j, workers)] += j + 1
            assert max(totals) - min(totals) <= 2 * n_blocks
    totals = [sum(j + 1 for j in range(40) if H.owner(j, 2) == w) for w in (0, 1)]
    assert totals == [410, 410]


def test_auto_runs_the_heap_merge_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = H.iter_blocks

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(H, "iter_blocks", spy)
    g = random_unit(5000, 16, seed=5)
    assert torch.equal(knn(g, g, 10, exclude_self=True)[1], knn(g, g, 10, exclude_self=True,
                                                             backend="exact")[1])
    assert calls == [1]
    with pytest.raises(ValueError, match="CPU"):
        next(H.iter_blocks(g.to("meta"), g.to("meta"), 10, exclude_self=True))
    calls.clear()
    monkeypatch.setattr(H, "HEAP_BYTES_MAX", H.heap_bytes(5000, 10, torch.get_num_threads()) - 1)
    assert torch.equal(knn(g, g, 10, exclude_self=True)[1], knn(g, g, 10, backend="exact",
                                                              exclude_self=True)[1])
    assert calls == []  # heaps past their memory bound: the threshold scan ran
    q = random_unit(5000, 16, seed=6)  # queries to a gallery: no shared set, within the bound
    assert torch.equal(
        knn(q, g, 10, exclude_self=False, backend="tiled")[1],  # fp32 tiles: k + 1 kept
        knn(q, g, 10, exclude_self=False, backend="exact")[1],
    )
    assert calls == [1]


def test_without_numba_the_threshold_scan_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where numba does not import, "auto" and "tiled" on CPU run the scan, exactly."""
    import daalml.evaluation.heap_kernels as HK

    calls: list[str] = []
    for name, impl in (("heaps", H), ("scan", T)):
        original = impl.iter_blocks
        monkeypatch.setattr(
            impl, "iter_blocks",
            lambda *a, _o=original, _n=name, **kw: (calls.append(_n), _o(*a, **kw))[1],
        )
    g = random_unit(5000, 16, seed=5)
    exact = knn(g, g, 10, exclude_self=True, backend="exact")[1]
    assert torch.equal(knn(g, g, 10, exclude_self=True)[1], exact) and calls == ["heaps"]
    monkeypatch.setattr(HK, "AVAILABLE", False)
    calls.clear()
    assert torch.equal(knn(g, g, 10, exclude_self=True)[1], exact)
    assert torch.equal(knn(g, g, 10, exclude_self=True, backend="tiled")[1], exact)
    assert calls == ["scan", "scan"]
    assert not H.usable(torch.device("cpu"), 5000, 10, 2)
    with pytest.raises(RuntimeError, match="numba"):
        next(H.iter_blocks(g, g, 10, exclude_self=True))


def test_score_keys_order_like_score_then_lower_index() -> None:
    vals = torch.tensor([-2.5, -0.0, 0.0, 1.5, 1.5, -1e-30, 3.0, float("-inf")])
    cols = torch.tensor([4, 1, 0, 9, 2, 5, 7, 3])
    keys = T.score_keys(vals, cols)
    order = torch.argsort(keys, descending=True).tolist()
    expected = sorted(range(8), key=lambda i: (-float(vals[i]), int(cols[i])))
    assert order == expected  # -0.0 ties with +0.0 and goes by index
    back, back_cols = T.decode_keys(keys)
    assert torch.equal(back_cols, cols) and back.tolist() == (vals + 0.0).tolist()


@pytest.mark.parametrize("k", [1, 10, 69, 500])
def test_sample_rank_bounds_the_chance_of_a_redo(k: int) -> None:
    r, p = T.sample_rank(k, T.SAMPLE_FRACTION), 1 / T.SAMPLE_FRACTION
    tail = sum(math.comb(k - 1, i) * p**i * (1 - p) ** (k - 1 - i) for i in range(r, k))
    assert tail <= T.REDO_PROBABILITY
    below = sum(math.comb(k - 1, i) * p**i * (1 - p) ** (k - 1 - i) for i in range(r - 1, k))
    assert r == 1 or below > T.REDO_PROBABILITY  # the smallest such rank


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tiled_on_cuda_matches_cpu() -> None:
    g = random_unit(5000, 64, seed=3)
    cpu = knn(g, g, 20, exclude_self=True, backend="exact")
    gpu = knn(g.cuda(), g.cuda(), 20, exclude_self=True, backend="tiled")
    assert gpu[1].device.type == "cuda"
    assert (gpu[1].cpu() == cpu[1]).float().mean() > 0.999  # cuBLAS may differ in last bits
    assert torch.equal(gpu[1], knn(g.cuda(), g.cuda(), 20, exclude_self=True, backend="exact")[1])


# --- NMI's k-means ----------------------------------------------------------------------


def test_lloyd_stops_at_a_fixed_point_with_the_labels_of_more_iterations() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(12), 30)
    x = torch.from_numpy(rng.standard_normal((12, 16))[y] + 0.3 * rng.standard_normal((360, 16)))
    x = x.float()
    seeds = x[torch.from_numpy(rng.choice(360, 12, replace=False))]
    labels, iters = KM.lloyd(x, seeds, 50, seed=0)
    assert iters < 50  # converged
    assert torch.equal(KM.lloyd(x, seeds, 200, seed=0)[0], labels)
    assert torch.equal(KM.lloyd(x, seeds, 50, seed=0)[0], labels)  # deterministic
    centroids = torch.stack([x[labels == c].mean(0) for c in range(12)])
    assert torch.equal(KM.assign(x, centroids), labels)  # a fixed point of Lloyd's map


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 200_000), st.integers(1, 4))
def test_assign_blocks_are_equal_shares_for_the_workers(n: int, workers: int) -> None:
    bounds = KM._assign_bounds(n, workers)
    sizes = np.diff(bounds)
    assert bounds[0] == 0 and bounds[-1] == n and sizes.min() >= min(n, KM.GEMM_MIN_ROWS)
    assert sizes.max() - sizes.min() <= 1 and sizes.max() <= KM.ASSIGN_BLOCK
    if n >= KM.GEMM_MIN_ROWS * workers:
        assert len(sizes) % workers == 0


def test_assign_does_not_depend_on_workers() -> None:
    gen = torch.Generator().manual_seed(3)
    x, centroids = torch.randn(9000, 32, generator=gen), torch.randn(50, 32, generator=gen)
    d2 = torch.cdist(x.double(), centroids.double())
    labels = KM.assign(x, centroids)
    assert torch.equal(labels, d2.argmin(dim=1))
    for workers in (2, 3):
        with T.worker_pool(x.device, workers) as (pool, _):
            assert torch.equal(KM.assign(x, centroids, pool), labels)


def test_lloyd_refills_empty_clusters() -> None:
    x = torch.cat([torch.zeros(20, 4), torch.ones(20, 4)]) + 0.01 * torch.randn(
        40, 4, generator=torch.Generator().manual_seed(0)
    )
    seeds = torch.tensor([[0.0] * 4, [0.01] * 4, [100.0] * 4])  # the third gets no point
    labels, _ = KM.lloyd(x, seeds, 20, seed=0)
    assert len(torch.unique(labels)) == 3


# --- NMI's k-means seeding --------------------------------------------------------------


def test_subsampled_kmeans_pp_seeding_finds_separated_clusters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import daalml.evaluation.clustering as M

    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(20), 40)
    x = rng.standard_normal((20, 32))[y] + 0.05 * rng.standard_normal((800, 32))
    monkeypatch.setattr(M, "KMEANS_SEED_MIN_POINTS", 100)  # seed from 10 x 20 of 800
    nmis = [retrieval_metrics(x, y, ks=(1,), seed=s)["nmi"] for s in range(10)]
    # All 20 classes found for most seeds; random seeding (PML's) stays below 0.97 here.
    assert sum(v == pytest.approx(1.0, abs=1e-9) for v in nmis) >= 5
    assert min(nmis) > 0.98
    assert retrieval_metrics(x, y, ks=(1,), seed=2)["nmi"] == nmis[2]


def bench_metrics_rows(n: int) -> list[str]:
    """The table rows of ``bench_metrics.py`` at N = n (d = 16, 20 per class, 1 round)."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_metrics.py"
    args = ["--sizes", str(n), "--dim", "16", "--per-class", "20", "--repeats", "1"]
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [line for line in done.stdout.splitlines() if line.startswith(f"| {n} |")]


def test_bench_metrics_runs_at_a_tiny_size() -> None:
    rows = bench_metrics_rows(600)
    assert len(rows) == 5 and "= exact: True" in rows[1]
    # where the time goes, wall and CPU: N, path, clock, 10 figures (no tile stages: exact)
    for row, clock in zip(rows[2:4], ("wall", "CPU"), strict=True):
        stages = [cell.strip() for cell in row.strip("|").split("|")]
        assert stages[1:3] == ["exact", clock] and len(stages) == 13 and stages[7] == "-"
        assert stages[11].endswith(" it") and float(stages[3]) > 0
    alone = [cell.strip() for cell in rows[4].strip("|").split("|")]  # Lloyd without lists
    assert len(alone) == 13 and "without the search's lists" in alone[2]
    assert alone[11].endswith(" it") and float(alone[11].split(",")[0]) > 0


def test_bench_metrics_prints_the_heap_merge_beside_the_scan_on_cpu() -> None:
    """fp32 tiles beside the scan; where bf16 products run (a CPU with fast bf16 and a GEMM
    order gemm_dots reproduces), they beside the fp32 tiles."""
    rows = bench_metrics_rows(4200)  # past 4096 items: the tiled path
    assert len(rows) == 6 and "without the search's lists" in rows[5]
    bf16 = "bf16 products" in rows[1]
    path = "tiled (heaps, bf16 products)" if bf16 else "tiled (heaps)"
    assert f"{path} | kNN" in rows[1]
    assert ("tiled-bf16 = exact: True" if bf16 else "tiled = exact: True") in rows[1]
    if bf16:
        assert "tiled (heaps) | kNN" in rows[2] and "bf16 / fp32 products" in rows[2]
    else:
        assert "tiled (scan) | kNN" in rows[2] and "heaps / scan" in rows[2]
    for row in rows[3:5]:  # the stages: tile products measured, no threshold stage on CPU
        stages = [cell.strip() for cell in row.strip("|").split("|")]
        assert stages[1] == path and stages[7] != "-" and stages[8] == "-"


def test_search_runs_at_full_fp32_precision_and_restores_the_setting() -> None:
    g = random_unit(300, 16, seed=8)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        seen: list[str] = []
        blocks = K.iter_knn(g, g, 5, exclude_self=True, chunk_size=64, backend="exact")
        for _ in blocks:
            seen.append(torch.get_float32_matmul_precision())
        assert seen and set(seen) == {"highest"}
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)
