"""Seeded Lloyd k-means for NMI, with the assignment step as a torch GEMM on any device.

faiss seeds (k-means++ on a subsample, see :mod:`daalml.evaluation.clustering`) and splits empty
clusters (``faiss.contrib.clustering.reassign_centroids``) as its own k-means does; the
Lloyd iterations run here because faiss-cpu's bundled BLAS can run generic kernels
(measured about 4x slower than torch's MKL GEMM on an AVX-512 Xeon), and so that CUDA
tensors are clustered on their GPU. Iterations stop early only at a fixed point (the
assignment repeats with no cluster split), where more iterations would change nothing.
On CPU the blocks are shared among Python worker threads running torch single-threaded
(see :func:`daalml.evaluation.knn_tiles.worker_pool`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from faiss.contrib.clustering import reassign_centroids

from daalml.evaluation.knn_tiles import GEMM_MIN_ROWS, worker_pool

__all__ = ["ASSIGN_BLOCK", "assign", "lloyd"]

ASSIGN_BLOCK = 4096
"""Points per assignment GEMM: a 4096 x clusters score block (20 MB at 1200 clusters)."""


def assign(
    x: torch.Tensor, centroids: torch.Tensor, pool: ThreadPoolExecutor | None = None
) -> torch.Tensor:
    """Index of the nearest centroid (L2) of each row of ``x``; ties to the lower index.

    argmin |x - c|^2 = argmax (x.c - |c|^2 / 2): one GEMM and one argmax per block (the
    blocks shared among ``pool``'s workers).
    """
    neg_half = -0.5 * (centroids * centroids).sum(dim=1)
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    bounds = _assign_bounds(x.shape[0], 1 if pool is None else pool._max_workers)

    def block(b: int) -> None:
        lo, hi = bounds[b], bounds[b + 1]
        out[lo:hi] = torch.addmm(neg_half, x[lo:hi], centroids.T).argmax(dim=1)

    blocks = range(len(bounds) - 1)
    list(map(block, blocks) if pool is None else pool.map(block, blocks))
    return out


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
    shares are added in a fixed order; on a GPU ``index_add_`` uses atomics (an order that
    changes between runs), so there the sums are a one-hot GEMM per block instead.
    """
    if x.device.type == "cpu":
        n_parts = 1 if pool is None else pool._max_workers
        bounds = [x.shape[0] * p // n_parts for p in range(n_parts + 1)]

        def part(p: int) -> torch.Tensor:
            lo, hi = bounds[p], bounds[p + 1]
            sums = torch.zeros((n_clusters, x.shape[1]), dtype=x.dtype)
            return sums.index_add_(0, labels[lo:hi], x[lo:hi])

        parts = list(map(part, range(n_parts)) if pool is None else pool.map(part, range(n_parts)))
        return torch.stack(parts).sum(dim=0) if n_parts > 1 else parts[0]
    sums = torch.zeros((n_clusters, x.shape[1]), dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], ASSIGN_BLOCK):
        lab = labels[start : start + ASSIGN_BLOCK]
        onehot = torch.nn.functional.one_hot(lab, n_clusters).to(x.dtype)
        sums.addmm_(onehot.T, x[start : start + ASSIGN_BLOCK])
    return sums


def lloyd(
    x: torch.Tensor, centroids: torch.Tensor, niter: int, seed: int
) -> tuple[torch.Tensor, int]:
    """Cluster labels after at most ``niter`` Lloyd iterations from ``centroids``.

    As faiss's k-means: each iteration assigns, then moves every centroid to its points'
    mean and splits a large cluster for each empty one (seeded by ``seed``); the labels
    returned are the assignment to the final centroids. Also returns the iterations run.
    """
    rs = np.random.RandomState(seed)
    centroids = centroids.clone()
    n_clusters = centroids.shape[0]
    previous: torch.Tensor | None = None
    split = 0
    with worker_pool(x.device) as (pool, _):
        for it in range(niter):
            labels = assign(x, centroids, pool)
            if previous is not None and split == 0 and torch.equal(labels, previous):
                return labels, it
            counts = torch.bincount(labels, minlength=n_clusters)
            sums = _sums(x, labels, n_clusters, pool)
            centroids = sums / counts.clamp(min=1)[:, None].to(x.dtype)
            split = reassign_centroids(counts.cpu().numpy(), centroids, rs)
            previous = labels
        return assign(x, centroids, pool), niter
