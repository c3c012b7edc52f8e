"""Retrieval and clustering metrics for deep metric learning evaluation.

Pure functions over embeddings and integer labels: Recall@k, MAP@R and R-precision
(Musgrave et al., "A Metric Learning Reality Check", as PML's AccuracyCalculator computes
them) and NMI of a k-means clustering. Neighbours come from an exact chunked search on
L2-normalised embeddings (cosine similarity; see :mod:`daalml._knn` for the fp32, tiled
and certified bf16 backends) or from a search the caller plugs in (``knn=``, see
:data:`KnnFunc`), so no N x N matrix is ever built and the per-query metrics are
accumulated chunk by chunk. The k-means runs on the embeddings' device (:mod:`daalml._kmeans`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import normalized_mutual_info_score

from daalml import _kmeans
from daalml._knn import KnnBackend, iter_knn, resolve_backend
from daalml.errors import DaalmlError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_KMEANS_NITER",
    "KMEANS_SEED_MIN_POINTS",
    "KMEANS_SEED_POINTS_PER_CLUSTER",
    "KMEANS_SEED_THREADS",
    "KnnBackend",
    "KnnFunc",
    "count_unmatchable_queries",
    "knn",
    "query_gallery_metrics",
    "retrieval_metrics",
]

DEFAULT_CHUNK_SIZE = 1024
"""Queries per matmul block: a block costs chunk_size x gallery_size floats (400 MB at 100k)."""

DEFAULT_KMEANS_NITER = 20
"""Upper bound on k-means iterations for NMI, as PML's; faiss stops earlier once the objective
stops changing (7-10 iterations on the benchmark data)."""

KMEANS_SEED_POINTS_PER_CLUSTER = 10
"""k-means++ seeds from a random subsample of this many points per cluster: seeding makes
one memory-bound pass over its points per cluster, which on all 60k benchmark points cost
more than PML's whole k-means; a sample misses a class with probability about e^-10."""

KMEANS_SEED_MIN_POINTS = 10_000
"""Sets up to this size are seeded from every point (the subsample would save little)."""

KMEANS_SEED_THREADS = 1
"""faiss threads for k-means++ seeding: one short parallel pass per centroid, each ending at
a barrier; on the shared, loaded 2-core Xeon one thread seeded faster than two."""

ArrayLike = torch.Tensor | np.ndarray | Sequence[float] | Sequence[Sequence[float]]

KnnFunc = Callable[
    [torch.Tensor, torch.Tensor, int, bool], tuple[ArrayLike, ArrayLike]
]
"""A pluggable neighbour search: ``knn(query, gallery, k, exclude_self) -> (scores, indices)``.

It receives float32 L2-normalised ``query`` (n_q, d) and ``gallery`` (n_g, d) tensors on the
embeddings' device (for leave-one-out both are the same tensor), ``k`` (already at most the
number of items available) and ``exclude_self`` (True for leave-one-out: query i is gallery
item i and must not be returned as its own neighbour). It returns ``scores`` (n_q, k),
similarities, larger = nearer, and ``indices`` (n_q, k), int gallery rows, best first, as
tensors or numpy arrays. Only the order of ``indices`` enters the metrics; how ties are
ordered is the callable's choice (the built-in search puts lower indices first).
"""


def _as_embeddings(x: ArrayLike, name: str) -> torch.Tensor:
    """Float32 (N, d) tensor of finite values, detached, on its original device."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 2:
        raise DaalmlError(f"{name}: shape {tuple(t.shape)} is not 2-D (N, d)")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise DaalmlError(f"{name}: shape {tuple(t.shape)} is empty")
    if t.dtype == torch.bool or t.is_complex():
        raise DaalmlError(f"{name}: dtype {t.dtype} is not a real number type")
    t = t.to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise DaalmlError(f"{name}: contains NaN or infinite values")
    return t


def _as_labels(y: ArrayLike, n: int | None, name: str, device: torch.device) -> torch.Tensor:
    """int64 (N,) tensor on ``device``; rejects float/bool labels and length mismatches."""
    t = y.detach() if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    if t.ndim != 1:
        raise DaalmlError(f"{name}: shape {tuple(t.shape)} is not 1-D (N,)")
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise DaalmlError(f"{name}: dtype {t.dtype} is not an integer type")
    if n is not None and t.shape[0] != n:
        raise DaalmlError(f"{name}: {t.shape[0]} labels for {n} embeddings")
    return t.to(device=device, dtype=torch.int64)


def _check_ks(ks: Sequence[int]) -> list[int]:
    """Validated, de-duplicated ks in the caller's order."""
    out: list[int] = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise DaalmlError(f"ks: {k!r} is not a positive integer")
        if int(k) not in out:
            out.append(int(k))
    if not out:
        raise DaalmlError("ks: empty, need at least one k for recall@k")
    return out


def _check_chunk_size(chunk_size: int) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise DaalmlError(f"chunk_size: {chunk_size!r} is not a positive integer")


def _check_backend(backend: str) -> None:
    resolve_backend(backend, torch.device("cpu"), 0)  # raises on an unknown name


def knn(
    query: ArrayLike,
    gallery: ArrayLike,
    k: int,
    *,
    exclude_self: bool,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    backend: KnnBackend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine-similarity k nearest neighbours of each query in ``gallery``, exactly.

    Inputs are L2-normalised here. With ``exclude_self`` the query set must be the gallery
    (row i of both is the same sample) and each query's own index is excluded, so exact
    duplicates of a query still count as neighbours. Returns float32 ``scores`` and int64
    ``indices`` of shape (n_query, min(k, available)), best first, equal scores by lower
    gallery index (also at the k boundary), on the query's device.

    ``backend``: ``"exact"`` is one fp32 matmul + topk per chunk; ``"tiled"`` computes fp32
    tiles (half of them for leave-one-out, by symmetry) and keeps only entries above a
    per-query threshold from a gallery sample, exactly (rows it cannot settle are redone
    on the exact path; ``chunk_size`` does not apply); ``"bf16"`` (CPU only)
    takes candidates from a bf16 matmul, rescores them in fp32 and proves per query, from a
    bound on the bf16 error, that nothing left out could rank in the top k (else the query
    gets more candidates, then is redone exactly). Both give the same neighbours and, with
    MKL, the same fp32 scores (another BLAS may differ in the last bit). ``"auto"`` uses
    bf16 for CPU searches of at least ~3000 x 3000 when a once-per-process probe finds
    bf16 matmul at least twice as fast as fp32 on this machine (four times for
    leave-one-out, where the tiled path halves the work), else tiled for galleries of at
    least 4096 items, else exact; on a GPU, tiled or exact.
    """
    q = F.normalize(_as_embeddings(query, "query"), dim=1)
    g = F.normalize(_as_embeddings(gallery, "gallery"), dim=1).to(q.device)
    if q.shape[1] != g.shape[1]:
        raise DaalmlError(f"query: dimension {q.shape[1]} differs from gallery's {g.shape[1]}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise DaalmlError(f"k: {k!r} is not a positive integer")
    _check_chunk_size(chunk_size)
    _check_backend(backend)
    if exclude_self and q.shape[0] != g.shape[0]:
        raise DaalmlError(
            f"exclude_self: query has {q.shape[0]} rows but gallery has {g.shape[0]};"
            " they must be the same set"
        )
    available = g.shape[0] - 1 if exclude_self else g.shape[0]
    k_eff = min(int(k), available)
    if k_eff < 1:
        raise DaalmlError("gallery: no neighbours available (one sample and exclude_self=True)")
    with torch.no_grad():
        blocks = list(
            iter_knn(q, g, k_eff, exclude_self=exclude_self, chunk_size=chunk_size, backend=backend)
        )
    return torch.cat([b[1] for b in blocks]), torch.cat([b[2] for b in blocks])


def count_unmatchable_queries(labels: ArrayLike) -> int:
    """Number of samples whose class has a single sample (no leave-one-out match exists)."""
    lab = _as_labels(labels, None, "labels", torch.device("cpu"))
    _, counts = torch.unique(lab, return_counts=True)
    return int((counts == 1).sum())


def _ranking_metrics(
    blocks: Iterator[tuple[int, torch.Tensor, torch.Tensor]],
    query_labels: torch.Tensor,
    gallery_labels: torch.Tensor,
    r_per_query: torch.Tensor,
    ks: list[int],
) -> dict[str, float]:
    """Recall@k, MAP@R and R-precision averaged over queries with ``R >= 1``."""
    n = query_labels.shape[0]
    device = query_labels.device
    first_hit = torch.empty(n, dtype=torch.int64, device=device)
    ap_r = torch.zeros(n, dtype=torch.float64, device=device)
    r_prec = torch.zeros(n, dtype=torch.float64, device=device)
    for start, _, idx in blocks:
        stop = start + idx.shape[0]
        k = idx.shape[1]
        hit = gallery_labels[idx] == query_labels[start:stop, None]
        pos = torch.arange(k, device=device)
        first_hit[start:stop] = torch.where(hit.any(dim=1), hit.to(torch.int8).argmax(dim=1), k)
        r = r_per_query[start:stop]
        hit_r = hit & (pos[None, :] < r[:, None])
        hits_so_far = hit_r.cumsum(dim=1, dtype=torch.float64)
        prec_at_hits = hits_so_far / (pos + 1).to(torch.float64) * hit_r
        denom = r.clamp(min=1).to(torch.float64)
        ap_r[start:stop] = prec_at_hits.sum(dim=1) / denom
        r_prec[start:stop] = hit_r.sum(dim=1).to(torch.float64) / denom
    valid = r_per_query > 0
    out = {f"recall@{k}": float((first_hit[valid] < k).double().mean()) for k in ks}
    out["map@r"] = float(ap_r[valid].mean())
    out["r_precision"] = float(r_prec[valid].mean())
    return out


_KMEANS_PLUS_PLUS = getattr(faiss, "ClusteringInitMethod_KMEANS_PLUS_PLUS", None)


def _nmi(embeddings: torch.Tensor, labels: torch.Tensor, seed: int, niter: int) -> float:
    """NMI between labels and a seeded k-means with one cluster per class.

    k-means++ seeding by faiss (faiss >= the Dec 2025 release that added ``init_method``;
    random seeding before that): random seeding, as in PML, often merges two of a handful
    of perfectly separated classes. Seeding runs on a subsample (see
    ``KMEANS_SEED_POINTS_PER_CLUSTER``), Lloyd iterations (:func:`daalml._kmeans.lloyd`,
    faiss's algorithm with torch's GEMM, on the embeddings' device) on every point.
    """
    y = labels.cpu().numpy()
    n_clusters = len(np.unique(y))
    seeds = _kmeans_seeds(embeddings, n_clusters, seed)
    assign, _ = _kmeans.lloyd(embeddings, seeds, niter, seed)
    return float(normalized_mutual_info_score(y, assign.cpu().numpy()))


def _kmeans_seeds(x: torch.Tensor, n_clusters: int, seed: int) -> torch.Tensor:
    """k-means++ centroids (faiss) from a seeded subsample, on ``x``'s device."""
    n_sample = max(KMEANS_SEED_MIN_POINTS, KMEANS_SEED_POINTS_PER_CLUSTER * n_clusters)
    rng = np.random.default_rng(seed)
    if n_sample >= x.shape[0]:
        sample = x.cpu().numpy()
    else:
        pick = np.sort(rng.choice(x.shape[0], n_sample, replace=False))
        sample = x[torch.from_numpy(pick).to(x.device)].cpu().numpy()
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    seeder = _faiss_kmeans(sample.shape[0], sample.shape[1], n_clusters, seed, niter=0)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(KMEANS_SEED_THREADS)
    try:
        seeder.train(sample)
    finally:
        faiss.omp_set_num_threads(threads)
    return torch.from_numpy(seeder.centroids.copy()).to(x.device)


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


def _external_knn(
    knn: KnnFunc, query: torch.Tensor, gallery: torch.Tensor, k: int, exclude_self: bool
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """One block from a plugged-in search, checked against :data:`KnnFunc`'s contract."""
    out = knn(query, gallery, k, exclude_self)
    if not isinstance(out, tuple | list) or len(out) != 2:
        raise DaalmlError("knn: must return a pair (scores, indices)")
    idx = torch.as_tensor(np.asarray(out[1]) if not isinstance(out[1], torch.Tensor) else out[1])
    n_q = query.shape[0]
    if tuple(idx.shape) != (n_q, k) or idx.is_floating_point() or idx.dtype == torch.bool:
        raise DaalmlError(
            f"knn: indices have shape {tuple(idx.shape)} and dtype {idx.dtype};"
            f" expected integer ({n_q}, {k})"
        )
    idx = idx.to(device=query.device, dtype=torch.int64)
    if bool(((idx < 0) | (idx >= gallery.shape[0])).any()):
        raise DaalmlError(f"knn: indices outside the gallery's 0..{gallery.shape[0] - 1}")
    if exclude_self and bool((idx == torch.arange(n_q, device=idx.device)[:, None]).any()):
        raise DaalmlError("knn: returned a query as its own neighbour with exclude_self=True")
    yield 0, torch.empty(0), idx


def _check_common(
    seed: int, kmeans_niter: int, chunk_size: int, backend: str, knn: KnnFunc | None
) -> None:
    _check_chunk_size(chunk_size)
    _check_backend(backend)
    if knn is not None and not callable(knn):
        raise DaalmlError(f"knn: {knn!r} is not callable")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise DaalmlError(f"seed: {seed!r} is not an integer")
    if isinstance(kmeans_niter, bool) or not isinstance(kmeans_niter, int) or kmeans_niter < 1:
        raise DaalmlError(f"kmeans_niter: {kmeans_niter!r} is not a positive integer")


def retrieval_metrics(
    embeddings: ArrayLike,
    labels: ArrayLike,
    ks: Sequence[int] = (1, 2, 4, 8),
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    seed: int = 0,
    kmeans_niter: int = DEFAULT_KMEANS_NITER,
    backend: KnnBackend = "auto",
    knn: KnnFunc | None = None,
) -> dict[str, float]:
    """Leave-one-out retrieval metrics and NMI of one embedded test set.

    Each query is ranked against all other samples by cosine similarity. Keys:
    ``recall@k`` per k in ``ks``, ``map@r``, ``r_precision`` (R = number of other samples of
    the query's class; queries of single-sample classes are excluded) and ``nmi`` (k-means
    on all L2-normalised embeddings, k = number of classes, seeded by ``seed``).
    ``backend`` picks the exact kNN search (see :func:`knn`); results do not depend on it.
    ``knn`` replaces that search with the caller's (see :data:`KnnFunc`; called once with
    the whole set, ``exclude_self=True``). CUDA tensors are searched and clustered on their
    GPU (no faiss-gpu needed).
    """
    emb = F.normalize(_as_embeddings(embeddings, "embeddings"), dim=1)
    lab = _as_labels(labels, emb.shape[0], "labels", emb.device)
    ks_ = _check_ks(ks)
    _check_common(seed, kmeans_niter, chunk_size, backend, knn)
    _, inverse, counts = torch.unique(lab, return_inverse=True, return_counts=True)
    r_per_query = counts[inverse] - 1
    if not bool((r_per_query > 0).any()):
        raise DaalmlError(
            f"labels: all {lab.shape[0]} samples are alone in their class;"
            " retrieval metrics need a class with at least two samples"
        )
    k = min(max(max(ks_), int(counts.max()) - 1), emb.shape[0] - 1)
    with torch.no_grad():
        if knn is None:
            blocks = iter_knn(
                emb, emb, k, exclude_self=True, chunk_size=chunk_size, backend=backend
            )
        else:
            blocks = _external_knn(knn, emb, emb, k, exclude_self=True)
        out = _ranking_metrics(blocks, lab, lab, r_per_query, ks_)
    out["nmi"] = _nmi(emb, lab, int(seed), kmeans_niter)
    return out


def query_gallery_metrics(
    query_embeddings: ArrayLike,
    query_labels: ArrayLike,
    gallery_embeddings: ArrayLike,
    gallery_labels: ArrayLike,
    ks: Sequence[int] = (1, 2, 4, 8),
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    seed: int = 0,
    kmeans_niter: int = DEFAULT_KMEANS_NITER,
    backend: KnnBackend = "auto",
    knn: KnnFunc | None = None,
) -> dict[str, float]:
    """Query-to-gallery retrieval metrics (In-Shop protocol) with the keys of retrieval_metrics.

    Queries rank the separate gallery by cosine similarity (no self-exclusion). R is the
    number of gallery samples of the query's class; queries without any are excluded.
    NMI clusters queries and gallery together (k = number of classes in their union).
    ``backend`` picks the exact kNN search (see :func:`knn`); results do not depend on it.
    ``knn`` replaces it with the caller's search (:data:`KnnFunc`, ``exclude_self=False``).
    """
    q = F.normalize(_as_embeddings(query_embeddings, "query_embeddings"), dim=1)
    g = F.normalize(_as_embeddings(gallery_embeddings, "gallery_embeddings"), dim=1).to(q.device)
    if q.shape[1] != g.shape[1]:
        raise DaalmlError(
            f"query_embeddings: dimension {q.shape[1]} differs from gallery_embeddings'"
            f" {g.shape[1]}"
        )
    ql = _as_labels(query_labels, q.shape[0], "query_labels", q.device)
    gl = _as_labels(gallery_labels, g.shape[0], "gallery_labels", q.device)
    ks_ = _check_ks(ks)
    _check_common(seed, kmeans_niter, chunk_size, backend, knn)
    classes, counts = torch.unique(gl, return_counts=True)
    pos = torch.searchsorted(classes, ql).clamp(max=classes.shape[0] - 1)
    r_per_query = torch.where(classes[pos] == ql, counts[pos], 0)
    if not bool((r_per_query > 0).any()):
        raise DaalmlError(
            "query_labels: no query's class occurs in gallery_labels; nothing can be retrieved"
        )
    k = min(max(max(ks_), int(counts.max())), g.shape[0])
    with torch.no_grad():
        if knn is None:
            blocks = iter_knn(q, g, k, exclude_self=False, chunk_size=chunk_size, backend=backend)
        else:
            blocks = _external_knn(knn, q, g, k, exclude_self=False)
        out = _ranking_metrics(blocks, ql, gl, r_per_query, ks_)
    out["nmi"] = _nmi(torch.cat([q, g]), torch.cat([ql, gl]), int(seed), kmeans_niter)
    return out
