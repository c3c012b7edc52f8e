"""NMI between the labels and a seeded k-means of the embeddings, one cluster per class.

faiss seeds the clusters (k-means++ on a subsample); Lloyd's iterations run in
:mod:`daalml.evaluation.kmeans`, on the embeddings' device.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faiss
import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score

from daalml.evaluation import kmeans as _kmeans
from daalml.evaluation.kmeans_neighbours import NeighbourLists

DEFAULT_KMEANS_NITER = 20
"""Upper bound on k-means iterations for NMI, as PML's; faiss stops earlier once the objective
stops changing (7-10 iterations on the benchmark data)."""

KMEANS_SEED_POINTS_PER_CLUSTER = 10
"""k-means++ seeds from a random subsample of this many points per cluster: seeding makes
one memory-bound pass over its points per cluster, which on all 60k benchmark points cost
more than PML's whole k-means; a sample misses a class with probability about e^-10."""

KMEANS_SEED_MIN_POINTS = 10_000
"""The sample holds at least this many points (all of a smaller set), unless more than
``KMEANS_SEED_POINT_CLUSTERS`` / clusters: with few clusters the seeding is cheap and a
larger sample seeds better."""

KMEANS_SEED_POINT_CLUSTERS = 1_000_000
"""Most sample points x clusters the minimum above may cost: the seeding's passes read
the sample once per cluster (from memory, beyond the caches, at 10,000 x 512 fp32), so at
N = 20,000 with 400 clusters a 10,000-point sample took 224 ms, a 4,000-point one (10 a
cluster) 49 ms, beside a search of 1.4 s (docs/performance.md, 2026-12-07, the command). Every set of up to 10,000 points with up to 100
clusters is still seeded from every point."""

KMEANS_SEED_THREADS = 1
"""faiss threads for k-means++ seeding: one short parallel pass per centroid, each ending at
a barrier; on the shared, loaded 2-core Xeon one thread seeded faster than two."""

_KMEANS_PLUS_PLUS = getattr(faiss, "ClusteringInitMethod_KMEANS_PLUS_PLUS", None)


def _nmi(embeddings: torch.Tensor, labels: torch.Tensor, seed: int, niter: int) -> float:
    """NMI between labels and a seeded k-means with one cluster per class.

    k-means++ seeding by faiss (faiss >= the Dec 2025 release that added ``init_method``;
    random seeding before that): random seeding, as in PML, often merges two of a handful
    of perfectly separated classes. Seeding runs on a subsample (see
    ``KMEANS_SEED_POINTS_PER_CLUSTER``), Lloyd iterations (:func:`daalml.evaluation.kmeans.lloyd`,
    faiss's algorithm with torch's GEMM, on the embeddings' device) on every point.
    """
    return nmi_later(embeddings, labels, seed, niter)()


def nmi_later(
    embeddings: torch.Tensor, labels: torch.Tensor, seed: int, niter: int
) -> Callable[..., float]:
    """Start :func:`_nmi`'s seeding in a background thread; return the call that finishes it.

    The seeding runs on one thread (``KMEANS_SEED_THREADS``) and needs nothing of the
    neighbour search, so the retrieval metrics start it first and search meanwhile: it is
    one thread more beside the search's workers, and fills the time a core of theirs
    waits (run in turn, the other core idled during the seeding). The result does not
    depend on the overlap (the seeding is seeded and single-threaded). The thread sees
    only a host copy of its sample, taken here: embeddings on a GPU are read on the
    caller's CUDA stream, never on another thread's. If the caller fails before
    ``finish``, the seeding still runs to its end in its thread, then is dropped.
    """
    y = labels.cpu().numpy()
    n_clusters = len(np.unique(y))
    sample, picked = _seed_sample(embeddings, n_clusters, seed)
    pool = ThreadPoolExecutor(1, thread_name_prefix="daalml-kmeans-seeding")
    seeds = pool.submit(_seeds_of, sample, n_clusters, seed)
    pool.shutdown(wait=False)  # the thread ends with the seeding

    def finish(neighbours: NeighbourLists | None = None) -> float:
        """The NMI; ``neighbours``: an exact leave-one-out search of ``embeddings``, which
        proves most of Lloyd's labels without a GEMM (:mod:`daalml.evaluation.kmeans_neighbours`)."""
        found = seeds.result()
        centroids = torch.from_numpy(found).to(embeddings.device)
        seed_rows = None if neighbours is None else _seed_rows(found, sample, picked)
        assign, _ = _kmeans.lloyd(
            embeddings, centroids, niter, seed, neighbours=neighbours, seed_rows=seed_rows
        )
        return float(normalized_mutual_info_score(y, assign.cpu().numpy()))

    return finish


def _kmeans_seeds(x: torch.Tensor, n_clusters: int, seed: int) -> torch.Tensor:
    """k-means++ centroids (faiss) from a seeded subsample, on ``x``'s device."""
    seeds = _seeds_of(_seed_sample(x, n_clusters, seed)[0], n_clusters, seed)
    return torch.from_numpy(seeds).to(x.device)


def _seed_sample(x: torch.Tensor, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded subsample the seeding runs on, as contiguous fp32 on the host, and the
    rows of ``x`` it holds."""
    n_sample = max(
        KMEANS_SEED_POINTS_PER_CLUSTER * n_clusters,
        min(KMEANS_SEED_MIN_POINTS, KMEANS_SEED_POINT_CLUSTERS // n_clusters),
    )
    rng = np.random.default_rng(seed)
    if n_sample >= x.shape[0]:
        pick = np.arange(x.shape[0])
        sample = x.cpu().numpy()
    else:
        pick = np.sort(rng.choice(x.shape[0], n_sample, replace=False))
        sample = x[torch.from_numpy(pick).to(x.device)].cpu().numpy()
    return np.ascontiguousarray(sample, dtype=np.float32), pick


def _seed_rows(seeds: np.ndarray, sample: np.ndarray, picked: np.ndarray) -> np.ndarray:
    """The row of the embeddings each seed copies (k-means++ seeds are sample points), -1
    where none is equal to it, bit for bit."""
    by_head: dict[bytes, list[int]] = {}
    head = min(4, sample.shape[1])
    for i, row in enumerate(sample[:, :head]):
        by_head.setdefault(row.tobytes(), []).append(i)
    rows = np.full(seeds.shape[0], -1, dtype=np.int64)
    for j, centroid in enumerate(seeds):
        for i in by_head.get(centroid[:head].tobytes(), []):
            if np.array_equal(sample[i].view(np.int32), centroid.view(np.int32)):
                rows[j] = picked[i]
                break
    return rows


def _seeds_of(sample: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means++ centroids (faiss) of ``sample`` (n_clusters x d, fp32)."""
    seeder = _faiss_kmeans(sample.shape[0], sample.shape[1], n_clusters, seed, niter=0)
    threads = faiss.omp_get_max_threads()  # this thread's setting (OpenMP keeps one per thread)
    faiss.omp_set_num_threads(KMEANS_SEED_THREADS)
    try:
        seeder.train(sample)
    finally:
        faiss.omp_set_num_threads(threads)
    return seeder.centroids.copy()


def _faiss_kmeans(n: int, dim: int, n_clusters: int, seed: int, niter: int) -> faiss.Kmeans:
    kwargs: dict[str, Any] = {} if _KMEANS_PLUS_PLUS is None else {"init_method": _KMEANS_PLUS_PLUS}
    return faiss.Kmeans(
        dim,
        n_clusters,
        niter=niter,
        seed=seed,
        verbose=False,
        min_points_per_centroid=1,  # DML test sets have few points per class: no warning
        max_points_per_centroid=n,  # cluster every point, no subsampling
        **kwargs,
    )
