"""Seeded Lloyd k-means for NMI, with the assignment step as a torch GEMM on any device.

faiss seeds (k-means++ on a subsample, see :mod:`daalml.evaluation.clustering`) and splits empty
clusters (``faiss.contrib.clustering.reassign_centroids``) as its own k-means does; the
Lloyd iterations run here because faiss-cpu's bundled BLAS can run generic kernels
(measured about 4x slower than torch's MKL GEMM on an AVX-512 Xeon), and so that CUDA
tensors are clustered on their GPU. Iterations stop early only at a fixed point (the
assignment repeats with no cluster split), where more iterations would change nothing.
On CPU the blocks are shared among Python worker threads running torch single-threaded
(see :func:`daalml.evaluation.knn_tiles.worker_pool`).

A label is the first argmax over the fp32 scores ``s_j = fl(h_j + x.c_j)``,
``h_j = -|c_j|^2 / 2`` (:func:`assign`). After the first iterations few points change
cluster, so on CPU each assignment skips the points that bounds prove keep their label
(Hamerly's k-means, on scores). Each point keeps ``lo <= t_a`` and ``up >= t_j`` for every
other cluster ``j``, where ``t = h + x.c`` in real arithmetic (on the fp32 values) and ``a``
is its label. The fp32 rounding is bounded rigorously: any summation order of the ``d + 1``
terms errs by at most ``E = gamma_{d+1} (|h|_max + |x| |c|_max)``, ``gamma_n = n u / (1 - n
u)``, ``u = 2^-24`` (products below the normal range add ``(d + 1) 2^-148``). So a point with
``lo > up + 2 E`` has ``s_a > s_j`` for every other ``j``, strictly: the full GEMM's argmax is
``a``, whatever its ties. When the centroids move, ``t_j`` moves by ``x.(c'_j - c_j) + (h'_j -
h_j)``, at most ``|x| delta_j + eta_j``: ``lo`` drops by its own cluster's term, ``up`` rises
by the largest other one. Where that leaves a point unproved and at most MOVERS_FRACTION of
the clusters moved, it is scored against the moved ones alone (their ``s +- E`` bound their
``t``; a cluster that did not move keeps its ``t_j`` exactly, so the old ``up`` still bounds
it): a few far-moving clusters then no longer fail every point. The rest are re-assigned by
the full GEMM on their gathered rows, in blocks of at least GEMM_MIN_ROWS rows (padded
below), which MKL gives each row's bits of the full GEMM (see :func:`_assign_bounds`); their
``lo`` and ``up`` are ``s_a - E`` and ``s_2 + E`` from those scores. Where bf16 matmul is
fast and most rows are unproved (the first iterations), bf16 scores prove most of them
first, with bounds widened by the bf16 error (:mod:`daalml.evaluation.kmeans_bf16`); before
either, given the exact leave-one-out neighbour lists of retrieval_metrics' search, those lists
prove most labels with no full GEMM (:mod:`daalml.evaluation.kmeans_neighbours`: every
centroid is a mean of known points, but for the few that faiss split, scored alone). The
bounds' own arithmetic runs in float64, rounded outward, and a NaN leaves a point unproved. So the labels, and the
iterations run, are those of the plain loop, which :func:`_lloyd` keeps (``bounded=False``);
the centroid sums are a full pass's bits (on CPU only the clusters whose rows changed are
recomputed, from those rows in index order: :class:`_CpuSums`), so the centroids are
too. Each row starts on a 64-byte boundary (:func:`_aligned_rows`): where d is not a
multiple of 4, MKL's bits for a row depend on its address modulo 64 bytes. On the
clustered benchmark data (d = 512, 400 or 1200 clusters), without the lists, the full GEMM
re-assigns every point in the first three assignments, then few (tests/evaluation/
test_kmeans.py checks that most are skipped). A GPU (cuBLAS
picks its kernels, so the bits, by the GEMM's shape), other dtypes and reduced-precision
fp32 matmuls use the plain loop (:func:`_bounds_hold`).

One cohesive thing over 400 lines: Lloyd's loop and the two ways it skips recomputing what
did not change (the bounds for the labels, the partial sums for the centroids), which
share its row blocks, its worker pool and the bit-for-bit argument above.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch
from faiss.contrib.clustering import reassign_centroids

from daalml.evaluation import kmeans_bf16
from daalml.evaluation.kmeans_bf16 import BF16_ROWS_FRACTION
from daalml.evaluation.kmeans_neighbours import Makeup, NeighbourLabels, NeighbourLists
from daalml.evaluation.knn_tiles import GEMM_MIN_ROWS, worker_pool
from daalml.evaluation.rounding import U_FP32, gamma

__all__ = ["ASSIGN_BLOCK", "assign", "lloyd"]

ASSIGN_BLOCK = 4096
"""Points per assignment GEMM: a 4096 x clusters score block (20 MB at 1200 clusters)."""

_T = TypeVar("_T")


def assign(
    x: torch.Tensor, centroids: torch.Tensor, pool: ThreadPoolExecutor | None = None
) -> torch.Tensor:
    """Index of the nearest centroid (L2) of each row of ``x``; ties to the lower index.

    argmin |x - c|^2 = argmax (x.c - |c|^2 / 2): one GEMM and one argmax per block (the
    blocks shared among ``pool``'s workers; on CPU the index of ``max(dim=1)``, the first
    maximum's as argmax's, which is cheaper there).
    """
    return _assign(x, centroids, _neg_half(centroids), pool, with_top2=False)[0]


def _neg_half(centroids: torch.Tensor) -> torch.Tensor:
    """``h``, the scores' bias (one expression, so that every assignment has its bits)."""
    return -0.5 * (centroids * centroids).sum(dim=1)


def _assign(
    x: torch.Tensor,
    centroids: torch.Tensor,
    neg_half: torch.Tensor,
    pool: ThreadPoolExecutor | None,
    with_top2: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`assign`'s labels and, ``with_top2``, each row's two largest fp32 scores
    (float64, n x 2; on CPU, with two clusters or more)."""
    assert not with_top2 or x.device.type == "cpu"
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    top2 = torch.empty((x.shape[0], 2), dtype=torch.float64) if with_top2 else None
    bounds = _assign_bounds(x.shape[0], _workers(pool))

    def block(b: int) -> None:
        lo, hi = bounds[b], bounds[b + 1]
        scores = torch.addmm(neg_half, x[lo:hi], centroids.T)
        if x.device.type != "cpu":
            out[lo:hi] = scores.argmax(dim=1)
            return
        best = scores.max(dim=1)  # the first maximum's index, as argmax's
        out[lo:hi] = best.indices
        if top2 is not None:
            top2[lo:hi, 0] = best.values
            top2[lo:hi, 1] = scores.scatter_(1, best.indices[:, None], -torch.inf).amax(dim=1)

    _run_blocks(block, len(bounds) - 1, pool)
    return out, top2


ROW_ALIGNMENT = 16
"""fp32 values (64 bytes) every row of Lloyd's points starts on a multiple of. MKL gives a
row the same bits in any block of 16 rows or more only where the rows share their address
modulo 64 bytes: for 382 of the 385 d from 1 to 513 that are not multiples of 4, a row
gathered into a new tensor got other bits than in place in some of 18 tries; for no
multiple of 4 (natively and capped to AVX2; docs/performance.md, ninth session, gives the
command)."""


def _aligned_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself where every row starts a multiple of 64 bytes from an aligned start (d a
    multiple of 16), else a copy whose rows do (a view of a buffer of padded rows)."""
    if x.device.type != "cpu" or x.dim() != 2:
        return x
    aligned = x.data_ptr() % (4 * ROW_ALIGNMENT) == 0
    if x.stride(1) == 1 and x.stride(0) % ROW_ALIGNMENT == 0 and aligned:
        return x
    n, d = x.shape
    width = -(-d // ROW_ALIGNMENT) * ROW_ALIGNMENT
    buffer = torch.empty((n, width), dtype=x.dtype)  # torch aligns CPU buffers to 64 bytes
    buffer[:, :d] = x
    return buffer[:, :d]


def _gather(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x[rows]`` with the row layout of ``x`` (its padded rows, see :func:`_aligned_rows`),
    so that each row keeps its bits in the GEMM."""
    n, d = x.shape
    width = x.stride(0)
    if width == d:
        return x[rows]
    return x.as_strided((n, width), (width, 1))[rows][:, :d]


def _workers(pool: ThreadPoolExecutor | None) -> int:
    """How many threads share the blocks: ``pool``'s, or 1 without one."""
    return 1 if pool is None else pool._max_workers


def _run_blocks(
    fn: Callable[[int], _T], count: int, pool: ThreadPoolExecutor | None
) -> list[_T]:
    """``fn(0) ... fn(count - 1)``, on ``pool``'s workers if given, results in order."""
    blocks = range(count)
    return list(map(fn, blocks) if pool is None else pool.map(fn, blocks))


def _assign_bounds(n: int, workers: int) -> list[int]:
    """Row blocks of at most about ASSIGN_BLOCK rows, as many as a multiple of ``workers``
    (equal shares: 5 blocks on 2 workers left one idle a fifth of the time), each of at
    least GEMM_MIN_ROWS rows where n allows: MKL gives every row the same bits then (checked
    at d = 512 for 16 to 10,000 rows on one thread), so the labels do not depend on it."""
    n_blocks = -(-n // ASSIGN_BLOCK)
    n_blocks = min(-(-n_blocks // workers) * workers, max(1, n // GEMM_MIN_ROWS))
    return [n * b // n_blocks for b in range(n_blocks + 1)]


def _sums(
    x: torch.Tensor, labels: torch.Tensor, n_clusters: int, pool: ThreadPoolExecutor | None
) -> torch.Tensor:
    """Per-cluster sums of the rows of ``x``, deterministically on every device.

    On CPU each worker ``index_add_``s a fixed share of the rows in index order and the
    shares are added in a fixed order (:class:`_CpuSums`); on a GPU ``index_add_`` uses
    atomics (an order that changes between runs), so there the sums are a one-hot GEMM per
    block instead.
    """
    if x.device.type == "cpu":
        return _CpuSums(x, n_clusters, pool).of(labels)
    sums = torch.zeros((n_clusters, x.shape[1]), dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], ASSIGN_BLOCK):
        lab = labels[start : start + ASSIGN_BLOCK]
        onehot = torch.nn.functional.one_hot(lab, n_clusters).to(x.dtype)
        sums.addmm_(onehot.T, x[start : start + ASSIGN_BLOCK])
    return sums


RECOUNT_FRACTION = 0.25
""":class:`_CpuSums` recomputes only the clusters whose rows changed while they are at most
this fraction of all; beyond, every cluster (one pass over all rows either way)."""


class _CpuSums:
    """:func:`_sums` on CPU for the fixed rows ``x`` under successive labels, recomputing only
    the clusters whose rows changed since the last call.

    A cluster's sum in a share is its rows added in index order from zero, so recomputing
    it from its rows alone, in the same order, gives the same bits as the full pass; the
    shares are then added as there. After Lloyd's first iterations few points change
    cluster, and the full pass (4 ms at 20,000 x 512 on 2 workers) was most of an
    iteration's cost outside the GEMMs.
    """

    def __init__(self, x: torch.Tensor, n_clusters: int, pool: ThreadPoolExecutor | None):
        self.x, self.n_clusters, self.pool = x, n_clusters, pool
        n_parts = _workers(pool)
        self.bounds = [x.shape[0] * p // n_parts for p in range(n_parts + 1)]
        self.parts: list[torch.Tensor] = []
        self.labels: torch.Tensor | None = None

    def of(self, labels: torch.Tensor) -> torch.Tensor:
        """The per-cluster sums under ``labels``."""
        clusters = None
        if self.labels is not None:
            moved = labels != self.labels
            clusters = torch.unique(torch.cat([labels[moved], self.labels[moved]]))
            if clusters.shape[0] > RECOUNT_FRACTION * self.n_clusters:
                clusters = None
        self.parts = _run_blocks(
            lambda p: self._part(p, labels, clusters), len(self.bounds) - 1, self.pool
        )
        self.labels = labels.clone()
        return torch.stack(self.parts).sum(dim=0) if len(self.parts) > 1 else self.parts[0]

    def _part(self, p: int, labels: torch.Tensor, clusters: torch.Tensor | None) -> torch.Tensor:
        """Share p's sums: all from scratch, or its last ones with ``clusters`` redone."""
        lo, hi = self.bounds[p], self.bounds[p + 1]
        lab, rows = labels[lo:hi], self.x[lo:hi]
        if clusters is None:
            sums = torch.zeros((self.n_clusters, self.x.shape[1]), dtype=self.x.dtype)
            return sums.index_add_(0, lab, rows)
        sums = self.parts[p]
        if clusters.shape[0]:
            mine = torch.nonzero(torch.isin(lab, clusters)).squeeze(1)
            sums[clusters] = 0
            sums.index_add_(0, lab[mine], rows[mine])
        return sums


def _bounds_hold(x: torch.Tensor) -> bool:
    """Whether the skipping gives the plain loop's labels for ``x``: contiguous fp32 rows
    on the CPU, at least GEMM_MIN_ROWS of them (MKL's bits per row are checked there),
    with fp32 matmuls in full fp32 (bf16 or tf32 products would break the error bound)."""
    reduced = torch.get_float32_matmul_precision() != "highest" or getattr(
        torch.backends.mkldnn.matmul, "fp32_precision", "none"
    ) not in ("none", "ieee")
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 2
        and x.is_contiguous()
        and x.shape[0] >= GEMM_MIN_ROWS
        and not reduced
    )


MOVERS_FRACTION = 0.5
"""Rows the drift bound leaves unproved are first scored against the clusters that moved
alone, when these are at most this fraction of all (then a cluster that did not move
keeps its exact scores, and the few that move far no longer fail every row's bound)."""


class _Bounded:
    """Lloyd's assignments of the fixed rows ``x`` that recompute only the rows whose
    bounds do not prove their label (the module docstring says how and why it is exact).

    Per row: ``lo`` <= ``t_a`` (own cluster's real score) and ``up`` >= ``t_j`` for every
    other cluster ``j``, against the centroids of the last assignment.
    """

    def __init__(
        self,
        x: torch.Tensor,
        pool: ThreadPoolExecutor | None,
        bf16: bool = False,
        neighbours: NeighbourLists | None = None,
    ) -> None:
        """``bf16``: prove labels from bf16 scores first where many rows are unproved
        (:mod:`daalml.evaluation.kmeans_bf16`); ``neighbours``: prove them from the
        search's lists before any GEMM (:mod:`daalml.evaluation.kmeans_neighbours`)."""
        self.x, self.pool = x, pool
        n, d = x.shape
        self.gamma = gamma(d + 1)
        self.underflow = (d + 1) * 2.0**-148  # products below fp32's normal range
        self.slack = (d + 8) * 2.0**-52  # the float64 rounding of the bounds' own arithmetic
        self.norms = self._up(_row_norms(x))
        self.labels = torch.zeros(n, dtype=torch.int64)
        self.lo = torch.empty(n, dtype=torch.float64)
        self.up = torch.empty(n, dtype=torch.float64)
        self.centroids: torch.Tensor | None = None
        self.neg_half = torch.zeros(0)
        self.bf16 = kmeans_bf16.Bf16Labels(x, self.norms) if bf16 else None
        self.lists = None if neighbours is None else NeighbourLabels(x, self.norms, neighbours)

    def assign(
        self, centroids: torch.Tensor, makeup: Makeup | None = None
    ) -> tuple[torch.Tensor, int]:
        """The labels :func:`assign` gives, and how many rows the full GEMM computed.
        ``makeup``: what the centroids average, for the neighbour lists' proofs."""
        if centroids.shape[0] == 1:  # argmax over one column
            return self.labels.clone(), 0
        neg_half = _neg_half(centroids)
        c_norm = self._up(_norms(centroids))
        err = self._error(c_norm, neg_half)
        if self.centroids is None:
            all_rows = torch.arange(self.x.shape[0])
            rows = self._by_neighbours(all_rows, centroids, neg_half, c_norm, err, makeup)
        else:
            rows = self._unproved(centroids, neg_half, c_norm, err, makeup)
        if self.bf16 is not None and rows.shape[0] >= BF16_ROWS_FRACTION * self.x.shape[0]:
            blocks = _assign_bounds(rows.shape[0], _workers(self.pool))
            proved, labels, lo, up = self.bf16.prove(
                rows, centroids, neg_half, err, blocks,
                lambda fn, count: _run_blocks(fn, count, self.pool),
            )
            done = rows[proved]
            self.labels[done], self.lo[done], self.up[done] = labels[proved], lo[proved], up[proved]
            rows = rows[~proved]
        n_rows = rows.shape[0]
        if n_rows:
            picked = self.x
            if n_rows < self.x.shape[0]:
                # padded: MKL's bits per row hold from 16 rows
                padding = rows[-1:].expand(max(0, GEMM_MIN_ROWS - n_rows))
                picked = _gather(self.x, torch.cat([rows, padding]))
            labels, top2 = _assign(picked, centroids, neg_half, self.pool, with_top2=True)
            assert top2 is not None
            self.labels[rows] = labels[:n_rows]
            self.lo[rows] = self._down(top2[:n_rows, 0] - err[rows])
            self.up[rows] = self._up(top2[:n_rows, 1] + err[rows])
        self.centroids, self.neg_half = centroids.clone(), neg_half
        return self.labels.clone(), n_rows

    def _by_neighbours(
        self,
        rows: torch.Tensor,
        centroids: torch.Tensor,
        neg_half: torch.Tensor,
        c_norm: torch.Tensor,
        err: torch.Tensor,
        makeup: Makeup | None,
    ) -> torch.Tensor:
        """Proves what the neighbour lists can of ``rows`` (their labels and bounds set);
        returns the rest."""
        if self.lists is None or makeup is None or rows.shape[0] == 0:
            return rows
        blocks = _assign_bounds(rows.shape[0], _workers(self.pool))
        proved, labels, lo, up = self.lists.prove(
            rows, centroids, neg_half, c_norm, err, makeup, blocks,
            lambda fn, count: _run_blocks(fn, count, self.pool),
        )
        done = rows[proved]
        self.labels[done], self.lo[done], self.up[done] = labels[proved], lo[proved], up[proved]
        return rows[~proved]

    def _unproved(
        self,
        centroids: torch.Tensor,
        neg_half: torch.Tensor,
        c_norm: torch.Tensor,
        err: torch.Tensor,
        makeup: Makeup | None = None,
    ) -> torch.Tensor:
        """Moves the bounds to ``centroids`` (``c_norm``: upper bounds on their norms);
        returns the rows they leave unproved.

        ``t_j`` moves by ``x.(c'_j - c_j) + (h'_j - h_j)``: at most ``|x| delta_j + eta_j``,
        exactly 0 where ``c_j`` did not move. A row is proved where ``lo > up + 2 E``, or
        by the neighbour lists (given ``makeup``)."""
        assert self.centroids is not None
        delta = self._up(_norms(centroids.double() - self.centroids.double()))
        eta = self._up((neg_half.double() - self.neg_half.double()).abs())
        lab = self.labels
        self.lo = self._down(self.lo - self._up(self.norms * delta[lab] + eta[lab]))
        other = self.norms * _largest_other(delta, lab) + _largest_other(eta, lab)
        up_before, self.up = self.up, self._up(self.up + self._up(other))
        rows = torch.nonzero(~(self.lo > self._up(self.up + 2 * err))).squeeze(1)
        rows = self._by_neighbours(rows, centroids, neg_half, c_norm, err, makeup)
        if rows.shape[0] == 0:
            return rows
        moved = torch.nonzero(~((delta == 0) & (eta == 0))).squeeze(1)
        if moved.shape[0] == 0 or moved.shape[0] > MOVERS_FRACTION * centroids.shape[0]:
            return rows
        # The clusters that did not move keep their t_j exactly: up_before (the bound the
        # last assignment left, before this drift) bounds them.
        lab, e = lab[rows], err[rows]
        position = torch.full((centroids.shape[0],), -1, dtype=torch.int64)
        position[moved] = torch.arange(moved.shape[0])
        own = position[lab]
        own_score, best = _moved_scores(
            self.x, rows, centroids[moved], neg_half[moved], own, self.pool
        )
        mine = torch.nonzero(own >= 0).squeeze(1)
        own_score = own_score[mine].double()
        lo = self.lo[rows]
        lo[mine] = torch.maximum(lo[mine], self._down(own_score - e[mine]))
        best = best.double()
        best = torch.where(best > -torch.inf, self._up(best + e), best)
        up = torch.maximum(up_before[rows], best)
        self.lo[rows], self.up[rows] = lo, up
        return rows[~(lo > self._up(up + 2 * e))]

    def _error(self, c_norm: torch.Tensor, neg_half: torch.Tensor) -> torch.Tensor:
        """Per row, a bound on the error of any of its fp32 scores against the centroids of
        norms at most ``c_norm`` (float64)."""
        h_max = float(neg_half.double().abs().max())
        c_max = float(c_norm.max())
        return self._up(self.gamma * (h_max + self.norms * c_max) + self.underflow)

    def _up(self, v: torch.Tensor) -> torch.Tensor:
        return v + v.abs() * self.slack

    def _down(self, v: torch.Tensor) -> torch.Tensor:
        return v - v.abs() * self.slack


def _moved_scores(
    x: torch.Tensor,
    rows: torch.Tensor,
    centroids: torch.Tensor,
    neg_half: torch.Tensor,
    own: torch.Tensor,
    pool: ThreadPoolExecutor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 scores of ``x[rows]`` against ``centroids``, in row blocks, reduced per row to
    the score of column ``own`` (where >= 0) and the largest of the others (-inf if none).

    Used as bounds only (any bits will do); a block at a time, so memory stays O(rows).
    """
    own_score = torch.full((rows.shape[0],), -torch.inf, dtype=x.dtype)
    best = torch.empty(rows.shape[0], dtype=x.dtype)
    bounds = _assign_bounds(rows.shape[0], _workers(pool))

    def block(b: int) -> None:
        lo, hi = bounds[b], bounds[b + 1]
        picked = x[lo:hi] if rows.shape[0] == x.shape[0] else x[rows[lo:hi]]  # all or some
        scores = torch.addmm(neg_half, picked, centroids.T)
        mine = torch.nonzero(own[lo:hi] >= 0).squeeze(1)
        cols = own[lo:hi][mine]
        own_score[lo + mine] = scores[mine, cols]
        scores[mine, cols] = -torch.inf
        best[lo:hi] = scores.amax(dim=1)

    _run_blocks(block, len(bounds) - 1, pool)
    return own_score, best


def _norms(v: torch.Tensor) -> torch.Tensor:
    """Row norms in float64 (within ``d 2^-53`` relatively of the real ones, in any order of
    the sum). On CPU by numpy's einsum, vectorised where torch's float64 norm is not (it runs
    once per Lloyd over every row, on one thread inside the workers' pool)."""
    if v.device.type != "cpu":
        return torch.linalg.vector_norm(v, dim=1, dtype=torch.float64)
    rows = v.detach().numpy()
    return torch.from_numpy(np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64)))


def _row_norms(x: torch.Tensor) -> torch.Tensor:
    """Upper bounds (float64) on the norms of ``x``'s fp32 rows, from torch's fp32 norm (one
    vectorised pass, where :func:`_norms` took 10 ms at 20,000 x 512 on one thread).

    Any fp32 evaluation of ``sqrt(sum x_i^2)`` gives ``n`` with ``s <= ((n / (1 - u))^2 + d
    2^-149) / (1 - gamma_{d+1})``: ``gamma`` bounds the products' and sums' rounding in any
    order, the ``2^-149`` the squares lost below fp32's range (a wider accumulator only errs
    less)."""
    d = x.shape[1]
    n = torch.linalg.vector_norm(x, dim=1).double() / (1 - U_FP32)
    return torch.sqrt((n * n + d * 2.0**-149) / (1 - gamma(d + 1)))


def _largest_other(v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row, the largest ``v[j]`` over the clusters ``j`` other than its label."""
    top = v.topk(2)
    return torch.where(labels == top.indices[0], top.values[1], top.values[0])


def lloyd(
    x: torch.Tensor,
    centroids: torch.Tensor,
    niter: int,
    seed: int,
    *,
    neighbours: NeighbourLists | None = None,
    seed_rows: np.ndarray | None = None,
) -> tuple[torch.Tensor, int]:
    """Cluster labels after at most ``niter`` Lloyd iterations from ``centroids``.

    As faiss's k-means: each iteration assigns, then moves every centroid to its points'
    mean and splits a large cluster for each empty one (seeded by ``seed``); the labels
    returned are the assignment to the final centroids. Also returns the iterations run.
    Where :func:`_bounds_hold`, the assignments skip the rows whose label is proved kept,
    and with ``neighbours`` (an exact leave-one-out search of ``x``) those the lists prove
    (:mod:`daalml.evaluation.kmeans_neighbours`; ``seed_rows``: the point each initial
    centroid copies, -1 for none, so that the first assignment has them too).
    """
    bounded = _bounds_hold(x)
    bf16 = bounded and kmeans_bf16.applies(x)
    labels, iters, _ = _lloyd(
        x, centroids, niter, seed, bounded=bounded, bf16=bf16,
        neighbours=neighbours if bounded else None, seed_rows=seed_rows,
    )
    return labels, iters


def _lloyd(
    x: torch.Tensor,
    centroids: torch.Tensor,
    niter: int,
    seed: int,
    bounded: bool,
    bf16: bool = False,
    neighbours: NeighbourLists | None = None,
    seed_rows: np.ndarray | None = None,
) -> tuple[torch.Tensor, int, list[int]]:
    """:func:`lloyd` with (``bounded``) or without the skipping, and with or without the
    bf16 and the neighbour lists' proofs (bounded only); also returns the rows each
    assignment's fp32 GEMM computed (all N each, without the skipping)."""
    rs = np.random.RandomState(seed)
    x = _aligned_rows(x)
    centroids = centroids.clone()
    n_clusters = centroids.shape[0]
    previous: torch.Tensor | None = None
    split = 0
    computed: list[int] = []
    with worker_pool(x.device) as (pool, _):
        bounds = _Bounded(x, pool, bf16, neighbours) if bounded else None
        cpu_sums = _CpuSums(x, n_clusters, pool) if x.device.type == "cpu" else None
        makeup = None
        if bounds is not None and bounds.lists is not None and seed_rows is not None:
            makeup = Makeup.seeds(seed_rows, x.shape[0])

        def assign_all(c: torch.Tensor) -> torch.Tensor:
            if bounds is None:
                computed.append(x.shape[0])
                return assign(x, c, pool)
            labels, n_rows = bounds.assign(c, makeup)
            computed.append(n_rows)
            return labels

        for it in range(niter):
            labels = assign_all(centroids)
            if previous is not None and split == 0 and torch.equal(labels, previous):
                return labels, it, computed
            counts = torch.bincount(labels, minlength=n_clusters)
            sums = _sums(x, labels, n_clusters, pool) if cpu_sums is None else cpu_sums.of(labels)
            centroids = sums / counts.clamp(min=1)[:, None].to(x.dtype)
            empty = bool((counts == 0).any())
            before = centroids.clone() if empty else centroids
            split = reassign_centroids(counts.cpu().numpy(), centroids, rs)
            if bounds is not None and bounds.lists is not None and cpu_sums is not None:
                parts = len(cpu_sums.bounds) - 1
                makeup = Makeup.means(labels, counts, bounds.lists.x_max, parts)
                if empty:
                    makeup = makeup.unknown((centroids != before).any(dim=1).numpy())
            previous = labels
        return assign_all(centroids), niter, computed
