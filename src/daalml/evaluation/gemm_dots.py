"""fp32 dot products with the bits of this process's CPU GEMM, to rescore candidates exactly.

A certified bf16 search (:mod:`daalml.evaluation.knn_heaps` with bf16 products) proves which
items can be a query's neighbours, then needs their fp32 scores with the very bits of the
exact path's GEMM, or near-ties could swap. A GEMM of another shape is not promised those
bits (MKL's small-row kernels add in another order: 24 of 20,000 rows differed on an AMX
Xeon, performance.md). This module adds in the GEMM's own order instead.

MKL's sgemm (torch's CPU matmul) forms each entry of a product of a few or more rows as a
chain of fused multiply-adds over consecutive blocks of the inner dimension, each block's
chain starting from zero, the blocks' sums added to the entry in turn. On the AMD EPYC
(Zen 4) of 2026-12-07 the blocks are 192 long (d = 512: 0-192, 192-384, 384-512) and, for
192 < d < 384, d // 2 long. Other BLAS builds and CPUs may add in another order: :func:`split`
finds the blocks by comparing candidate splits with ``torch.mm`` on random data, at this
process's thread count and on one thread, and gives None where none reproduces it; callers
then keep the fp32 products. The comparison covers 4,000 entries at each of three shapes,
up to a 1024 x 2048 block like the exact path's: an order that differs (a split,
interleaved accumulators, a tree) differs in most entries.

The dots run in a compiled numba kernel (fused multiply-add by LLVM's contraction), eight
candidates at a time so that their chains overlap; it releases the GIL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["PROBE_ENTRIES", "Memo", "dots", "split", "symmetric_dots"]

PROBE_ENTRIES = 4000
"""Entries of ``torch.mm`` that a candidate split must reproduce, at each probed shape."""

_PROBE_SHAPES = ((16, 64), (256, 256), (1024, 2048))
_LIKELY_BLOCKS = (192, 256, 128, 384, 512, 96, 64, 32, 16, 8)

_splits: dict[tuple[int, int], np.ndarray | None] = {}
_LOCK = threading.Lock()
_COMPILING = threading.Lock()
_compiled: dict[str, Callable] = {}


def split(dim: int) -> np.ndarray | None:
    """The block bounds (0, ..., dim) by which this process's fp32 GEMM adds an inner
    dimension of ``dim``, or None where no split of the family tried reproduces its bits.

    Probed once per process and dimension (and torch thread count): three GEMMs and the
    candidate splits' dots, plus numba's loading of the kernel (compiled once, cached on
    disk); about a second in all at d = 512 on the AMD EPYC."""
    key = (dim, torch.get_num_threads())
    with _LOCK:
        if key not in _splits:
            _splits[key] = _probe(dim)
        return _splits[key]


def dots(
    query: torch.Tensor,
    gallery: torch.Tensor,
    cand: np.ndarray,
    bounds: np.ndarray,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """``out[r, c] = query[r] . gallery[cand[r, c]]`` (fp32, contiguous CPU tensors) added
    by ``bounds`` (from :func:`split`), for the first ``counts[r]`` candidates of row r
    (default: all); -inf past them and where ``cand`` is negative."""
    out = np.empty(cand.shape, dtype=np.float32)
    if counts is None:
        counts = np.full(cand.shape[0], cand.shape[1], dtype=np.int64)
    if cand.size:
        _kernel()(query.numpy(), gallery.numpy(), cand, bounds, counts, out)
    return out


class Memo:
    """Dot products a symmetric search computed for pairs (i, j), i < j, kept for row j
    (up to ``room`` a row, columns ascending): row j reads them instead of recomputing
    them, with the same bits (the chains add q[k] g[k] in the same order either way)."""

    def __init__(self, n_rows: int, room: int) -> None:
        """An empty memo for ``n_rows`` rows."""
        self.cols = np.empty((n_rows, room), dtype=np.int64)
        self.scores = np.empty((n_rows, room), dtype=np.float32)
        self.count = np.zeros(n_rows, dtype=np.int64)


def symmetric_dots(
    vectors: torch.Tensor,
    start: int,
    cand: np.ndarray,
    bounds: np.ndarray,
    counts: np.ndarray,
    memo: Memo,
) -> np.ndarray:
    """:func:`dots` of rows ``start`` on of ``vectors`` (query = gallery) with their
    candidates (the rows of ``vectors`` ``cand`` names), reusing and filling ``memo``: rows
    must come in increasing order, each once."""
    out = np.empty(cand.shape, dtype=np.float32)
    if cand.size:
        _kernel("symmetric_dots")(
            vectors.numpy(), start, cand, bounds, counts, (memo.cols, memo.scores, memo.count), out
        )
    return out


def _candidate_bounds(dim: int) -> list[np.ndarray]:
    """Splits into equal blocks (the last one shorter), the likely block sizes first, then
    halves, then every other block size."""
    sizes = [b for b in _LIKELY_BLOCKS if b < dim] + [dim, (dim + 1) // 2, dim // 2]
    sizes += range(1, dim)
    seen, found = set(), []
    for size in sizes:
        if size >= 1 and size not in seen:
            seen.add(size)
            found.append(np.array([*range(0, dim, size), dim], dtype=np.int64))
    return found


def _probe(dim: int) -> np.ndarray | None:
    """The first candidate split whose dots equal torch.mm's on every probed entry, at this
    thread count and on one thread."""
    gen = torch.Generator().manual_seed(dim)
    rng = np.random.default_rng(dim)
    cases = []
    threads = torch.get_num_threads()
    for m, n in _PROBE_SHAPES:
        a = torch.randn(m, dim, generator=gen)
        b = torch.randn(n, dim, generator=gen)
        rows = rng.integers(0, m, PROBE_ENTRIES)
        cols = rng.integers(0, n, PROBE_ENTRIES)
        for t in {threads, 1}:
            torch.set_num_threads(t)
            try:
                ref = (a @ b.T).numpy()[rows, cols]
            finally:
                torch.set_num_threads(threads)
            cases.append((a[rows].contiguous(), b, cols[:, None].copy(), ref[:, None]))
    few = slice(0, 64)
    for bounds in _candidate_bounds(dim):
        # screen on a few entries of the first case, then check all of every case
        q, g, cand, ref = cases[0]
        if not np.array_equal(dots(q[few], g, cand[few], bounds), ref[few]):
            continue
        if all(np.array_equal(dots(q, g, c, bounds), r) for q, g, c, r in cases):
            return bounds
    return None


def _dots(
    query: np.ndarray,
    gallery: np.ndarray,
    cand: np.ndarray,
    bounds: np.ndarray,
    counts: np.ndarray,
    out: np.ndarray,
) -> None:
    """The kernel of :func:`dots`: per query row, eight candidates at a time."""
    m, width = cand.shape
    sums = np.zeros(8, dtype=np.float32)
    for r in range(m):
        n_cand = min(counts[r], width)
        out[r, n_cand:] = -np.inf
        for c0 in range(0, n_cand, 8):
            group = cand[r, c0 : min(c0 + 8, n_cand)]
            _group_dots(query[r], gallery, group, bounds, sums)
            for t in range(group.shape[0]):
                out[r, c0 + t] = sums[t] if group[t] >= 0 else -np.inf


def _symmetric_dots(
    vectors: np.ndarray,
    start: int,
    cand: np.ndarray,
    bounds: np.ndarray,
    counts: np.ndarray,
    memo: tuple[np.ndarray, np.ndarray, np.ndarray],
    out: np.ndarray,
) -> None:
    """The kernel of :func:`symmetric_dots`: per row i, the candidates j < i found in i's
    memo (columns ascending, searched by bisection) are read from it, the others computed
    eight at a time, and each computed pair with j > i is appended to j's memo while it
    has room."""
    memo_cols, memo_scores, memo_count = memo
    m, width = cand.shape
    room = memo_cols.shape[1]
    todo = np.empty(width, dtype=np.int64)
    group = np.empty(8, dtype=np.int64)
    sums = np.zeros(8, dtype=np.float32)
    for r in range(m):
        i = start + r
        n_cand = min(counts[r], width)
        out[r, n_cand:] = -np.inf
        n_memo, n_todo = memo_count[i], 0
        for p in range(n_cand):
            j = cand[r, p]
            if j < 0:
                out[r, p] = -np.inf
                continue
            lo, hi = 0, n_memo if j < i else 0
            while lo < hi:  # the first memo column >= j
                mid = (lo + hi) // 2
                if memo_cols[i, mid] < j:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < n_memo and j < i and memo_cols[i, lo] == j:
                out[r, p] = memo_scores[i, lo]
            else:
                todo[n_todo] = p
                n_todo += 1
        for c0 in range(0, n_todo, 8):
            n_group = min(8, n_todo - c0)
            for t in range(n_group):
                group[t] = cand[r, todo[c0 + t]]
            _group_dots(vectors[i], vectors, group[:n_group], bounds, sums)
            for t in range(n_group):
                j, score = group[t], sums[t]
                out[r, todo[c0 + t]] = score
                if j > i and memo_count[j] < room:
                    memo_cols[j, memo_count[j]] = i
                    memo_scores[j, memo_count[j]] = score
                    memo_count[j] += 1


def _group_dots(
    q: np.ndarray, gallery: np.ndarray, group: np.ndarray, bounds: np.ndarray, sums: np.ndarray
) -> None:
    """``sums[t] = q . gallery[group[t]]`` for up to eight rows (a negative or missing one
    repeats a valid row, its sum unused), each block a chain of multiply-adds (fused by
    contraction) from zero, the blocks' sums added in turn."""
    n = group.shape[0]
    g0 = gallery[max(group[0], 0)]
    g1 = gallery[max(group[min(1, n - 1)], 0)]
    g2 = gallery[max(group[min(2, n - 1)], 0)]
    g3 = gallery[max(group[min(3, n - 1)], 0)]
    g4 = gallery[max(group[min(4, n - 1)], 0)]
    g5 = gallery[max(group[min(5, n - 1)], 0)]
    g6 = gallery[max(group[min(6, n - 1)], 0)]
    g7 = gallery[max(group[min(7, n - 1)], 0)]
    for b in range(bounds.shape[0] - 1):
        block = _chains(q, g0, g1, g2, g3, g4, g5, g6, g7, bounds[b], bounds[b + 1])
        for t in range(8):
            sums[t] = block[t] if b == 0 else sums[t] + block[t]


def _chains(
    q: np.ndarray,
    g0: np.ndarray,
    g1: np.ndarray,
    g2: np.ndarray,
    g3: np.ndarray,
    g4: np.ndarray,
    g5: np.ndarray,
    g6: np.ndarray,
    g7: np.ndarray,
    k0: int,
    k1: int,
) -> tuple[float, float, float, float, float, float, float, float]:
    """Eight chains of multiply-adds over ``k0:k1``, side by side so that they overlap."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
    for k in range(k0, k1):
        qk = q[k]
        a0 += qk * g0[k]
        a1 += qk * g1[k]
        a2 += qk * g2[k]
        a3 += qk * g3[k]
        a4 += qk * g4[k]
        a5 += qk * g5[k]
        a6 += qk * g6[k]
        a7 += qk * g7[k]
    return a0, a1, a2, a3, a4, a5, a6, a7


def _kernel(name: str = "dots") -> Callable:
    """The compiled kernel ``name`` (numba imported on first use, as in heap_kernels)."""
    if not _compiled:
        with _COMPILING:
            if not _compiled:
                import numba

                options = dict(nogil=True, cache=True, boundscheck=False, fastmath={"contract"})
                globals()["_chains"] = numba.njit(inline="always", **options)(_chains)
                globals()["_group_dots"] = numba.njit(**options)(_group_dots)
                _compiled["dots"] = numba.njit(**options)(_dots)
                _compiled["symmetric_dots"] = numba.njit(**options)(_symmetric_dots)
    return _compiled[name]
