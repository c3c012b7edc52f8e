"""Lloyd's labels proved from the retrieval search's exact neighbour lists, with no full GEMM.

:func:`daalml.evaluation.retrieval.retrieval_metrics` searches each point's k nearest other
points (leave-one-out, cosine: fp32 inner products of the very rows k-means clusters) before
the NMI's k-means runs. Those lists bound every point's score against every centroid whose
make-up is known, in O(k) per point:

- Every centroid of Lloyd's loop is a mean of known points, up to rounding: a k-means++
  seed copies one point (:func:`daalml.evaluation.clustering` finds which), and after an
  iteration ``c_j`` is the fp32 mean of the ``n_j`` points labelled j, within ``dev_j +
  u |c_j| / (1 - u)`` of their real mean, ``dev_j = gamma_{n_j + P} max|x|`` (any order
  of the fp32 sums in ``P`` parts, then the division).
- So ``x.c_j <= (1 / n_j) sum_{m in C_j} x.x_m + |x| dev_j``, and each ``x.x_m`` (real) is at
  most its listed fp32 score + ``eps`` if m is listed, ``|x|^2`` if m is x itself, and the
  k-th listed score ``s_k`` + ``eps`` otherwise: the search is exact, so no point left out
  scores above ``s_k``. ``eps = gamma_d |x| max|x| + (d + 1) 2^-148`` bounds any fp32
  evaluation of a dot product.
- A centroid of unknown make-up (one that faiss split for an empty cluster, and its donor;
  a seed that copies no point) is scored by an fp32 GEMM for the points being proved,
  ``t_j <= s_j + E`` (any order of the sum errs by at most ``E``, as in
  :mod:`daalml.evaluation.kmeans`), while they are at most UNKNOWN_SCORED_FRACTION of the
  clusters; beyond, Cauchy-Schwarz, ``x.c_j <= |x| |c_j|``, bounds them (which, with
  centroids of norm near 1, proves no point). At N = 60,000 faiss splits clusters in the
  third iteration, and Cauchy-Schwarz then left the next two assignments to the GEMM.

With ``t_j = h_j + x.c_j`` (``h_j = -|c_j|^2 / 2``, as :mod:`daalml.evaluation.kmeans`),
``B_j`` these upper bounds and ``a`` the cluster of the largest, a point whose float64 lower
bound on ``t_a`` exceeds every other ``B_j`` by the fp32 GEMM's own error bound ``2 E`` has
label ``a`` in the fp32 assignment GEMM, strictly, whatever its bits: the loop keeps those
bounds as its ``lo`` and ``up`` and computes the rest, so labels, iterations and centroids
stay the plain loop's. On the clustered benchmark data (N = 20,000, 400 clusters) the lists
prove 81%, 66% and 90% of the points in the first three assignments, which were full GEMMs
(docs/performance.md, ninth session, prints the rows left to the GEMM).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from daalml.evaluation import heap_kernels
from daalml.evaluation.rounding import U_FP32, U_FP64, gamma

__all__ = ["LISTS_BYTES_MAX", "Makeup", "NeighbourLabels", "NeighbourLists", "collect", "keeps"]

LISTS_BYTES_MAX = 512 * 2**20
"""Most bytes the kept lists may take (8 bytes an entry: an fp32 score, an int32 index);
past it the search's lists are not kept and Lloyd runs without them."""

UNKNOWN_SCORED_FRACTION = 0.25
"""Centroids of unknown make-up are scored by an fp32 GEMM (rows x unknown x d) while they are
at most this fraction of all; beyond, that product nears the full GEMM the proofs would
spare, and Cauchy-Schwarz bounds them."""

_COMPILING = threading.Lock()
_compiled: dict[str, Callable] = {}


@dataclass(frozen=True)
class NeighbourLists:
    """Each point's k nearest other points (``indices``, n x k int32) by fp32 inner product
    and their scores (``scores``, n x k fp32, descending), from an exact leave-one-out
    search of the same fp32 rows: no point left out of a row scores above its last."""

    scores: np.ndarray
    indices: np.ndarray


def keeps(x: torch.Tensor, k: int) -> bool:
    """Whether a search of ``x`` for ``k`` neighbours should keep its lists for Lloyd: fp32
    rows on the CPU, numba installed (the proofs' kernel), the lists within LISTS_BYTES_MAX."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and heap_kernels.AVAILABLE
        and 0 < k
        and x.shape[0] < 2**31
        and x.shape[0] * k * 8 <= LISTS_BYTES_MAX
    )


def collect(
    blocks: Iterator[tuple[int, torch.Tensor, torch.Tensor]], n: int, k: int
) -> tuple[Iterator[tuple[int, torch.Tensor, torch.Tensor]], NeighbourLists]:
    """``blocks`` (``(start, scores, indices)`` of an exact leave-one-out search of n rows for
    k neighbours) passed through unchanged, and the lists they fill as they pass (complete
    once the blocks are consumed)."""
    lists = NeighbourLists(np.empty((n, k), dtype=np.float32), np.full((n, k), -1, dtype=np.int32))

    def passing() -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        for start, scores, indices in blocks:
            end = start + scores.shape[0]
            lists.scores[start:end] = scores.cpu().numpy()
            lists.indices[start:end] = indices.cpu().numpy()
            yield start, scores, indices

    return passing(), lists


@dataclass(frozen=True)
class Makeup:
    """What each centroid averages: ``members`` (n, int64) the cluster each point counts in
    (-1: none), ``counts`` (float64) the points a cluster averages and ``dev`` (float64) a
    bound on the distance of the sum's mean from their real mean (the division's rounding,
    ``u |c_j| / (1 - u)``, is added by :meth:`NeighbourLabels.prove`); ``dev`` is inf where
    the make-up is unknown (see :meth:`NeighbourLabels.prove` for how those are bounded)."""

    members: np.ndarray
    counts: np.ndarray
    dev: np.ndarray

    @classmethod
    def seeds(cls, seed_rows: np.ndarray, n: int) -> Makeup:
        """Centroid j a copy of point ``seed_rows[j]`` (-1: of none found). A point counts
        in one cluster only: of several centroids that copy it (equal seeds), the first
        does, the others are of unknown make-up."""
        members = np.full(n, -1, dtype=np.int64)
        first = np.zeros(seed_rows.shape[0], dtype=np.bool_)
        first[np.unique(seed_rows, return_index=True)[1]] = True
        found = (seed_rows >= 0) & first
        members[seed_rows[found]] = np.flatnonzero(found)
        dev = np.where(found, 0.0, np.inf)
        return cls(members, found.astype(np.float64), dev)

    @classmethod
    def means(cls, labels: torch.Tensor, counts: torch.Tensor, x_max: float, parts: int) -> Makeup:
        """Centroid j the fp32 mean (``parts`` partial sums added, then one division) of the
        ``counts[j]`` points labelled j, each of norm at most ``x_max``."""
        n_j = counts.double().numpy()
        fits = (n_j > 0) & ((n_j + parts) * U_FP32 < 0.5)
        dev = np.where(fits, gamma(np.where(fits, n_j + parts, 0.0)) * x_max, np.inf)
        return cls(labels.numpy().astype(np.int64), n_j, dev)

    def unknown(self, changed: np.ndarray) -> Makeup:
        """This make-up with the centroids flagged in ``changed`` unknown (split by faiss)."""
        return Makeup(self.members, self.counts, np.where(changed, np.inf, self.dev))


class NeighbourLabels:
    """The lists of the fixed points ``x`` and the per-point terms their proofs need."""

    def __init__(self, x: torch.Tensor, norms: torch.Tensor, lists: NeighbourLists) -> None:
        """``norms``: upper bounds (float64) on the rows' norms, as the loop keeps them."""
        if lists.scores.shape[0] != x.shape[0] or lists.scores.shape != lists.indices.shape:
            raise ValueError("neighbour lists: one row of k per point of x expected")
        self.x_rows = x
        self.x = x.numpy()
        self.lists = lists
        self.norms = norms.numpy()
        self.x_max = float(norms.max())

    def prove(
        self,
        rows: torch.Tensor,
        centroids: torch.Tensor,
        neg_half: torch.Tensor,
        c_norm: torch.Tensor,
        err: torch.Tensor,
        makeup: Makeup,
        blocks: list[int],
        run_blocks: Callable[[Callable[[int], None], int], object],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """For the points ``rows``: which are proved, their labels, ``lo`` and ``up``
        (float64; meaningful where proved). ``c_norm``: upper bounds (float64) on the
        centroids' norms; ``err``: every row's fp32 GEMM rounding bound; ``blocks``: bounds
        of the row blocks, which ``run_blocks(fn, count)`` runs."""
        d = self.x.shape[1]
        h = neg_half.double().numpy()
        c_norm = c_norm.numpy()
        known = np.isfinite(makeup.dev)
        dev = makeup.dev + c_norm * (U_FP32 / (1 - U_FP32))  # and the division's rounding
        key = h + self.x_max * np.where(known, dev, 0.0)
        order = np.flatnonzero(known)
        order = order[np.argsort(-key[order], kind="stable")]
        unknown = np.flatnonzero(~known)
        scored = 0 < unknown.shape[0] <= UNKNOWN_SCORED_FRACTION * known.shape[0]
        if scored:
            c_unknown, h_unknown = centroids[unknown], neg_half[unknown]
        scale_c = float(np.abs(h).max()) + self.x_max * float(c_norm.max())
        n = rows.shape[0]
        rows_np = rows.numpy()
        labels = np.empty(n, dtype=np.int64)
        lo, up = np.empty(n, dtype=np.float64), np.empty(n, dtype=np.float64)
        proved = np.zeros(n, dtype=np.bool_)
        c = centroids.numpy()
        e = err.numpy()
        args = (
            self.x, c, h, c_norm, makeup.members, makeup.counts, dev, ~known, unknown,
            order, key[order], self.lists.scores, self.lists.indices, self.norms, self.x_max,
            gamma(d), gamma(d, U_FP64), (d + 1) * 2.0**-148, scale_c, e,
        )

        def block(b: int) -> None:
            s = slice(blocks[b], blocks[b + 1])
            unknown_scores = np.empty((0, 0), dtype=np.float32)
            if scored:  # s_j, any bits: bounds only
                unknown_scores = torch.addmm(h_unknown, self.x_rows[rows[s]], c_unknown.T).numpy()
            _kernel()(rows_np[s], *args, unknown_scores, labels[s], lo[s], up[s], proved[s])

        run_blocks(block, len(blocks) - 1)
        return (torch.from_numpy(proved), torch.from_numpy(labels), torch.from_numpy(lo),
                torch.from_numpy(up))


def _prove(
    rows: np.ndarray,
    x: np.ndarray,
    c: np.ndarray,
    h: np.ndarray,
    c_norm: np.ndarray,
    members: np.ndarray,
    counts: np.ndarray,
    dev: np.ndarray,
    is_unknown: np.ndarray,
    unknown: np.ndarray,
    order: np.ndarray,
    key: np.ndarray,
    scores: np.ndarray,
    indices: np.ndarray,
    norms: np.ndarray,
    x_max: float,
    score_gamma: float,
    dot_gamma: float,
    underflow: float,
    scale_c: float,
    err: np.ndarray,
    unknown_scores: np.ndarray,
    labels: np.ndarray,
    lo_out: np.ndarray,
    up_out: np.ndarray,
    proved: np.ndarray,
) -> None:
    """The module docstring's proof for each point of ``rows`` (see :meth:`NeighbourLabels.
    prove`); ``order``: the known clusters by ``key`` (``h_j + x_max dev_j``) descending;
    ``unknown_scores``: fp32 scores of the rows against the ``unknown`` clusters (no
    columns: bound those by Cauchy-Schwarz)."""
    n_clusters, d = c.shape
    k = scores.shape[1]
    known_sum = np.zeros(n_clusters)
    known_n = np.zeros(n_clusters)
    own = np.zeros(n_clusters)
    stamp = np.full(n_clusters, -1, dtype=np.int64)
    clusters = np.empty(k + 1, dtype=np.int64)
    rounding = (k + d + 16) * 2.0**-50  # float64 roundings of the bounds, relative
    scored = unknown_scores.shape[1] > 0
    for q in range(rows.shape[0]):
        r = rows[q]
        proved[q] = False
        s_k = np.float64(scores[r, k - 1])
        if indices[r, k - 1] < 0 or not np.isfinite(s_k):
            continue  # a short list: no bound on the points left out
        nr = norms[r]
        eps = score_gamma * nr * x_max + underflow
        base = s_k + eps
        for t in range(k):  # the listed points' scores, summed per cluster they count in
            j = members[indices[r, t]]
            clusters[t] = j
            if j >= 0:
                known_sum[j] += np.float64(scores[r, t]) + eps
                known_n[j] += 1.0
        clusters[k] = members[r]  # x itself: |x|^2 in place of a bound
        if clusters[k] >= 0:
            own[clusters[k]] = 1.0
        best, at, second = -np.inf, -1, -np.inf
        for t in range(k + 1):
            j = clusters[t]
            if j < 0 or stamp[j] == q:
                continue
            stamp[j] = q
            if is_unknown[j]:
                continue
            rest = counts[j] - known_n[j] - own[j]
            bound = (known_sum[j] + own[j] * nr * nr + rest * base) / counts[j] + nr * dev[j]
            b = h[j] + min(bound, nr * c_norm[j])
            if b > best:
                best, at, second = b, j, best
            elif b > second:
                second = b
        for t in range(k + 1):
            j = clusters[t]
            if j >= 0:
                known_sum[j], known_n[j], own[j] = 0.0, 0.0, 0.0
        for u in range(unknown.shape[0]):
            j = unknown[u]
            b = h[j] + nr * c_norm[j]
            if scored:
                b = min(b, np.float64(unknown_scores[q, u]) + err[r])
            if b > best:
                best, at, second = b, j, best
            elif b > second:
                second = b
        found = 0
        for p in range(order.shape[0]):  # the untouched known clusters: the two largest keys
            j = order[p]
            if stamp[j] == q:
                continue
            b = key[p] + base
            if b > best:
                best, at, second = b, j, best
            elif b > second:
                second = b
            found += 1
            if found == 2:
                break
        scale = nr * nr + nr * x_max + abs(s_k) + eps + scale_c
        margin = rounding * scale
        if at < 0 or not best > second + 2 * err[r] + 3 * margin:
            continue  # no lower bound on t_a can prove it: its upper bound cannot
        dot = _dot(x[r], c[at])
        lo = h[at] + dot - dot_gamma * nr * c_norm[at] - margin
        up = second + margin
        labels[q], lo_out[q], up_out[q] = at, lo, up
        proved[q] = lo > up + 2 * err[r] + margin


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """``a.b`` summed in float64 in any order (compiled with reassociation, so vectorised):
    the products are exact there, and any order errs by at most ``gamma_d`` (float64) of
    ``|a| |b|``, which :func:`_prove` subtracts."""
    total = 0.0
    for i in range(a.shape[0]):
        total += np.float64(a[i]) * np.float64(b[i])
    return total


def _kernel() -> Callable:
    """:func:`_prove`, compiled on first use (numba imported then, as in heap_kernels)."""
    if not _compiled:
        with _COMPILING:
            if not _compiled:
                import numba

                jit = numba.njit(nogil=True, cache=True, boundscheck=False)
                globals()["_dot"] = numba.njit(
                    nogil=True, cache=True, boundscheck=False, fastmath={"reassoc", "contract"}
                )(_dot)
                _compiled["prove"] = jit(_prove)
    return _compiled["prove"]
