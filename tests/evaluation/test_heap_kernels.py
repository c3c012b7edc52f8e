"""Tests for daalml.evaluation.heap_kernels: the compiled merge kernels of knn_heaps.

The kernels are checked against a plain-Python model of the same rules (an entry enters a
row only above its threshold; a full row keeps its ``size`` largest keys and raises its
threshold to the smallest of them), on small tiles full of ties, signed zeros, infinities
and NaNs, and end to end against the exact search with buffers that fill many times.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import daalml.evaluation.heap_kernels as HK
import daalml.evaluation.knn_heaps as H
import daalml.evaluation.knn_tiles as T
from daalml.metrics import knn

pytestmark = pytest.mark.skipif(not HK.AVAILABLE, reason="numba is not installed")

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)

# few distinct values, so that ties are everywhere; -0.0 and +0.0, both infinities, NaN
SCORES = [float("-inf"), -1.0, -0.5, -0.0, 0.0, 0.25, 0.5, 1.0, float("inf"), float("nan")]
FLOORS = [float("-inf"), -1.0, -0.5, -0.0, 0.0, 0.5]

score = st.one_of(st.sampled_from(SCORES), st.floats(-2, 2, width=32))
no_nan = st.one_of(st.sampled_from(SCORES[:-1]), st.floats(-2, 2, width=32))


def keys_of(scores: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The reference keys (knn_tiles.score_keys) of fp32 ``scores`` at int64 ``cols``."""
    return T.score_keys(torch.from_numpy(scores), torch.from_numpy(cols)).numpy()


def score_of(key: int) -> float:
    """The fp32 score of one key (knn_tiles.decode_keys)."""
    return float(T.decode_keys(torch.tensor([key], dtype=torch.int64))[0][0])


def new_buffers(n_rows: int, size: int, floor: list[float]) -> tuple[np.ndarray, ...]:
    """An empty buffer set as knn_heaps._Buffers builds it, thresholds ``floor``."""
    keys = np.full((n_rows, HK.capacity(size)), -1, dtype=np.int64)
    return keys, np.zeros(n_rows, dtype=np.int32), np.asarray(floor, dtype=np.float32)


class Model:
    """Plain-Python buffer rows under the kernels' rules, and the log of every offer."""

    def __init__(self, floor: list[float], size: int) -> None:
        self.size, self.capacity = size, HK.capacity(size)
        self.rows: list[list[int]] = [[] for _ in floor]
        self.thr = [float(np.float32(f)) for f in floor]
        self.offered: list[list[int]] = [[] for _ in floor]  # keys of all non-NaN offers
        self.fills = 0

    def offer(self, r: int, s: float, key: int) -> None:
        if not np.isnan(s):
            self.offered[r].append(key)
        if s > self.thr[r]:
            self.rows[r].append(key)
            if len(self.rows[r]) == self.capacity:
                self.rows[r] = sorted(self.rows[r], reverse=True)[: self.size]
                self.thr[r] = score_of(self.rows[r][-1])
                self.fills += 1

    def offer_tile(
        self, sim: np.ndarray, row0: int, col0: int, col_row0: int, col_id0: int, columns: bool
    ) -> None:
        """Entry (a, b) to row row0 + a, then (if ``columns``) to row col_row0 + b, in the
        kernel's order (row a by row a, columns ascending)."""
        m, n = sim.shape
        row_keys = keys_of(sim, col0 + np.arange(n, dtype=np.int64)[None, :].repeat(m, 0))
        col_keys = keys_of(sim, col_id0 + np.arange(m, dtype=np.int64)[:, None].repeat(n, 1))
        for a in range(m):
            for b in range(n):
                s = float(sim[a, b])
                self.offer(row0 + a, s, int(row_keys[a, b]))
                if columns:
                    self.offer(col_row0 + b, s, int(col_keys[a, b]))


def check_state(buffers: tuple[np.ndarray, ...], model: Model) -> None:
    """The kernel's buffers hold what the model's do (as multisets), and the invariants:
    count <= capacity, no NaN and no duplicate enters, every key held was offered, every
    offered entry above the final threshold is held."""
    keys, count, thr = buffers
    assert np.all(count <= model.capacity)
    for r, held in enumerate(model.rows):
        got = keys[r, : count[r]]
        assert sorted(got.tolist()) == sorted(held), r
        assert len(set(got.tolist())) == len(got)
        assert float(thr[r]) == model.thr[r] or (np.isnan(thr[r]) and np.isnan(model.thr[r]))
        scores = T.decode_keys(torch.from_numpy(got))[0].numpy()
        assert not np.isnan(scores).any()
        assert set(got.tolist()) <= set(model.offered[r])
        offered = np.asarray(model.offered[r], dtype=np.int64)
        above = offered[T.decode_keys(torch.from_numpy(offered))[0].numpy() > thr[r]]
        assert set(above.tolist()) <= set(got.tolist())


@st.composite
def tiles_case(draw: st.DrawFn) -> dict:
    """A buffer set, 1-3 tiles of 1-5 x 1-19 entries offered in sequence, rows then columns
    in disjoint ranges of the same set, with ``columns`` on or off."""
    m = draw(st.integers(1, 5))
    n = draw(st.integers(1, 19))
    size = draw(st.integers(1, 4))
    columns = draw(st.booleans())
    n_rows = m + n + draw(st.integers(0, 2))
    floor = draw(st.lists(st.sampled_from(FLOORS), min_size=n_rows, max_size=n_rows))
    n_tiles = draw(st.integers(1, 3))
    sims = [
        np.array(draw(st.lists(score, min_size=m * n, max_size=m * n)), dtype=np.float32)
        .reshape(m, n) for _ in range(n_tiles)
    ]
    col_first = draw(st.booleans())  # the column rows before or after the row rows
    row0, col_row0 = (n, 0) if col_first else (0, m)
    return {"sims": sims, "size": size, "columns": columns, "floor": floor,
            "row0": row0, "col_row0": col_row0}


def run_tiles(case: dict) -> None:
    """Offer the case's tiles to the kernel and to the model; compare after each tile."""
    size, floor, columns = case["size"], case["floor"], case["columns"]
    buffers = new_buffers(len(floor), size, floor)
    model = Model(floor, size)
    for t, sim in enumerate(case["sims"]):
        m, n = sim.shape
        col0, col_id0 = 1000 + t * n, 5000 + t * m  # distinct columns per tile
        before = buffers[2].copy()
        HK.offer_tile(
            sim, buffers, case["row0"], col0, buffers, case["col_row0"], col_id0, columns, size
        )
        model.offer_tile(sim, case["row0"], col0, case["col_row0"], col_id0, columns)
        assert np.all(buffers[2] >= before)  # thresholds only rise
        check_state(buffers, model)


@SETTINGS
@given(tiles_case())
def test_offer_tile_matches_the_model(case: dict) -> None:
    run_tiles(case)


@pytest.mark.parametrize("columns", [True, False])
@pytest.mark.parametrize("n", [1, 8, 13, 37])
def test_offer_tile_rows_that_fill_many_times(columns: bool, n: int) -> None:
    """Random tiles with ties from an empty start (threshold -inf): every row fills
    several times over 4 tiles; the separate row and column sets get what the model's do."""
    rng = np.random.default_rng(n)
    m, size = 7, 2
    rows = new_buffers(m, size, [float("-inf")] * m)
    cols = new_buffers(n + 3, size, [float("-inf")] * (n + 3))
    row_model = Model([float("-inf")] * m, size)
    col_model = Model([float("-inf")] * (n + 3), size)
    for t in range(4):
        sim = (rng.integers(-8, 9, size=(m, n)) / 8).astype(np.float32)
        sim[rng.random((m, n)) < 0.1] = np.nan
        HK.offer_tile(sim, rows, 0, 100 * t, cols, 3, 100 * t, columns, size)
        for a in range(m):
            for b in range(n):
                s = float(sim[a, b])
                row_model.offer(a, s, int(keys_of(sim[a : a + 1, b], np.array([100 * t + b]))[0]))
                if columns:
                    col_model.offer(
                        3 + b, s, int(keys_of(sim[a : a + 1, b], np.array([100 * t + a]))[0])
                    )
        check_state(rows, row_model)
        check_state(cols, col_model)
    assert row_model.fills >= (2 * m if n >= 8 else 0)  # rows fill several times
    assert col_model.fills >= (n if columns else 0)  # and so do the column rows


def test_minus_zero_ties_plus_zero() -> None:
    """-0.0 and +0.0 give the same key part: a row keeps the lower column of the two, and
    a threshold of +0.0 refuses -0.0."""
    sim = np.array([[-0.0, 0.0, -0.0, 0.5]], dtype=np.float32)
    buffers = new_buffers(1, 1, [float("-inf")])
    HK.offer_tile(sim[:, :3].copy(), buffers, 0, 0, buffers, 0, 0, False, 1)
    keys, count, thr = buffers
    # full at the 2nd entry: keeps column 0 of the tie, threshold +0.0 refuses the 3rd
    assert count[0] == 1 and float(thr[0]) == 0.0 and not np.signbit(thr[0])
    assert keys[0, 0] == keys_of(np.float32([0.0]), np.array([0]))[0]
    HK.offer_tile(sim[:, 3:].copy(), buffers, 0, 3, buffers, 0, 0, False, 1)
    assert count[0] == 1 and float(thr[0]) == 0.5
    assert keys[0, 0] == keys_of(np.float32([0.5]), np.array([3]))[0]
    buffers = new_buffers(1, 3, [float("-inf")])
    HK.offer_tile(sim, buffers, 0, 0, buffers, 0, 0, False, 3)
    got = sorted(buffers[0][0, : buffers[1][0]].tolist())
    assert got == sorted(keys_of(np.abs(sim[0]), np.arange(4)).tolist())


@st.composite
def full_row(draw: st.DrawFn) -> tuple[np.ndarray, int, int]:
    """Buffer rows of keys with many duplicate keys, the row to trim and ``size``."""
    cap = draw(st.integers(1, 40))
    n_rows = draw(st.integers(1, 3))
    scores = draw(st.lists(no_nan, min_size=cap * n_rows, max_size=cap * n_rows))
    cols = draw(st.lists(st.integers(0, 3), min_size=cap * n_rows, max_size=cap * n_rows))
    keys = keys_of(np.array(scores, dtype=np.float32), np.array(cols, dtype=np.int64))
    return keys.reshape(n_rows, cap), draw(st.integers(0, n_rows - 1)), draw(st.integers(1, cap))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(full_row())
def test_keep_best_keeps_the_size_largest(case: tuple[np.ndarray, int, int]) -> None:
    keys, r, size = case
    before = keys.copy()
    count = np.full(keys.shape[0], keys.shape[1], dtype=np.int32)
    thr = HK._keep_best(keys, count, r, size)
    best = sorted(before[r].tolist(), reverse=True)
    assert sorted(keys[r, :size].tolist(), reverse=True) == best[:size]
    assert sorted(keys[r].tolist()) == sorted(before[r].tolist())  # a permutation
    assert thr == score_of(best[size - 1])
    assert count[r] == size
    others = np.arange(keys.shape[0]) != r
    assert np.array_equal(keys[others], before[others])
    assert np.all(count[others] == keys.shape[1])


@st.composite
def unions(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """h buffer sets of m rows (keys with ties, duplicates, signed zeros, infinities), k."""
    h, m, cap = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 8))
    k = draw(st.integers(1, 10))
    scores = draw(st.lists(no_nan, min_size=h * m * cap, max_size=h * m * cap))
    cols = draw(st.lists(st.integers(0, 30), min_size=h * m * cap, max_size=h * m * cap))
    keys = keys_of(np.array(scores, np.float32), np.array(cols, np.int64)).reshape(h, m, cap)
    counts = np.array(draw(st.lists(st.integers(0, cap), min_size=h * m, max_size=h * m)),
                      dtype=np.int32).reshape(h, m)
    thr = np.array(draw(st.lists(no_nan, min_size=h * m, max_size=h * m)),
                   dtype=np.float32).reshape(h, m)
    return keys, counts, thr, k


@SETTINGS
@given(unions())
def test_top_of_union_is_topk_of_the_keys(case: tuple) -> None:
    keys, counts, thr, k = case
    scores, columns, unproved, left_out = HK.top_of_union(keys, counts, thr, k)
    assert np.array_equal(left_out, thr.max(axis=0))
    assert scores.shape == (keys.shape[1], k) and columns.shape == (keys.shape[1], k)
    for r in range(keys.shape[1]):
        union = np.concatenate([keys[h, r, : counts[h, r]] for h in range(keys.shape[0])])
        top = torch.topk(torch.from_numpy(union), min(k, len(union))).values
        ref_scores, ref_cols = T.decode_keys(top)
        n = len(union)
        assert scores[r, :n].tolist() == ref_scores.tolist()
        assert columns[r, :n].tolist() == ref_cols.tolist()
        assert np.all(scores[r, n:] == -np.inf) and np.all(columns[r, n:] == -1)
        assert np.array_equal(np.signbit(scores[r, :n]), np.signbit(ref_scores.numpy()))
        expect = n < k or bool(ref_scores[k - 1] <= thr[:, r].max())
        assert unproved[r] == expect


def test_top_of_union_rows_short_of_k_are_unproved_whatever_the_threshold() -> None:
    """Fewer than k entries is unproved even where no threshold compares (a NaN floor)."""
    keys = keys_of(np.float32([[[0.5, 0.25, 0.0]]]), np.array([[[0, 1, 2]]]))
    for floor in (float("nan"), float("-inf"), 0.0):
        thr = np.full((1, 1), floor, dtype=np.float32)
        scores, columns, unproved, _ = HK.top_of_union(keys, np.full((1, 1), 3, np.int32), thr, 4)
        assert unproved.tolist() == [True]
        assert columns.tolist() == [[0, 1, 2, -1]]
        assert scores.tolist() == [[0.5, 0.25, 0.0, float("-inf")]]


def dyadic(n: int, d: int, seed: int) -> torch.Tensor:
    """Unit vectors with four entries of +-1/2: dot products are multiples of 1/4, exact
    in any order, so the scores tie everywhere."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, d), np.float32)
    for row in x:
        row[rng.choice(d, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return torch.from_numpy(x)


def random_unit(n: int, d: int, seed: int) -> torch.Tensor:
    """Random unit vectors: no ties but those of duplicated rows."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=1)


@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("floor", [float("-inf"), -1.0])
@pytest.mark.parametrize("exclude_self", [True, False])
def test_iter_blocks_with_every_entry_a_candidate_equals_exact(
    monkeypatch: pytest.MonkeyPatch, factor: int, floor: float, exclude_self: bool
) -> None:
    """Floors forced low (every entry is offered and enters), k <= 5 over 700 columns: every
    buffer row fills over and over; the neighbours are those of the exact path. On random
    vectors (100 rows duplicated) the buffers prove nearly every row (at most 1 in 20 is
    redone); on vectors with ties everywhere (most rows redone) the scores are exact too.
    CAPACITY_FACTOR is read in Python (capacity()) when the buffers are built, so a
    patched one changes the kernels' capacity too."""
    monkeypatch.setattr(T, "_thresholds", lambda q, *a: torch.full((len(q),), floor))
    monkeypatch.setattr(HK, "CAPACITY_FACTOR", factor)
    built: list[int] = []
    init = H._Buffers.__init__

    def spy(self: H._Buffers, n_rows: int, size: int) -> None:
        init(self, n_rows, size)
        built.append(self.keys.shape[1])

    monkeypatch.setattr(H._Buffers, "__init__", spy)
    redone: list[int] = []
    exact_rows = T.exact_rows
    monkeypatch.setattr(T, "exact_rows", lambda q, *a: redone.append(len(q)) or exact_rows(q, *a))
    for unit, ties in ((random_unit, False), (dyadic, True)):
        base = unit(600, 16 if not ties else 8, 3)
        g = torch.cat([base, base[:100]])  # exact duplicates too
        q = g if exclude_self else unit(150, 16 if not ties else 8, 4)
        for k in (1, 2, 5):
            redone.clear()
            blocks = list(H.iter_blocks(q, g, k, exclude_self=exclude_self, block=64, workers=2))
            scores = torch.cat([b[1] for b in blocks])
            idx = torch.cat([b[2] for b in blocks])
            ref = knn(q, g, k, exclude_self=exclude_self, backend="exact")
            assert torch.equal(idx, ref[1])
            if ties:  # multiples of 1/4, exact in any summation order
                assert torch.equal(scores, ref[0])
            else:
                torch.testing.assert_close(scores, ref[0], rtol=0, atol=1e-6)
                assert sum(redone) <= len(q) // 20
            assert built and set(built) == {factor * (k + 1)}
            built.clear()


@SETTINGS
@given(
    st.integers(1, 20),
    st.integers(1, 40),
    st.integers(1, 12),
    st.integers(0, 2**16),
)
def test_kth_largest_is_topks_last(m: int, n: int, rank: int, seed: int) -> None:
    rank = min(rank, n)
    gen = torch.Generator().manual_seed(seed)
    sim = torch.randint(-3, 4, (m, n), generator=gen).float()  # ties everywhere
    sim[torch.rand(m, n, generator=gen) < 0.1] = float("-inf")  # masked own columns
    sim[torch.rand(m, n, generator=gen) < 0.1] = -0.0
    expected = torch.topk(sim, rank, dim=1).values[:, -1]
    assert torch.equal(torch.from_numpy(HK.kth_largest(sim.numpy(), rank)), expected)
