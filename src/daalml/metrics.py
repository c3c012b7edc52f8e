"""Retrieval and clustering metrics for deep metric learning evaluation.

Pure functions over embeddings and integer labels: Recall@k, MAP@R and R-precision
(Musgrave et al., "A Metric Learning Reality Check", as PML's AccuracyCalculator computes
them) and NMI of a k-means clustering. Neighbours come from an exact chunked search, by
cosine similarity (L2-normalised embeddings, the default) or by Euclidean distance on the
raw embeddings (``distance="euclidean"``; see :mod:`daalml._knn` for the fp32, tiled and
certified bf16 backends), or from a search the caller plugs in (``knn=``, see
:data:`KnnFunc`), so no N x N matrix is ever built and the per-query metrics are
accumulated chunk by chunk. Options as OML has them: metrics per query category
(``categories=``), gallery items each query ignores (``mask_to_ignore=``, or the
memory-light ``ignore_groups=``; :mod:`daalml._query_options`). The k-means runs on the
embeddings' device (:mod:`daalml._kmeans`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import normalized_mutual_info_score

from daalml import _kmeans
from daalml._knn import DISTANCES, Distance, KnnBackend, iter_knn, resolve_backend
from daalml._query_options import GroupIgnore, IgnoreRule, MaskIgnore, as_codes, drop_ignored
from daalml.errors import DaalmlError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_KMEANS_NITER",
    "KMEANS_SEED_MIN_POINTS",
    "KMEANS_SEED_POINTS_PER_CLUSTER",
    "KMEANS_SEED_THREADS",
    "Distance",
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

It receives float32 ``query`` (n_q, d) and ``gallery`` (n_g, d) tensors on the embeddings'
device, L2-normalised for ``distance="cosine"`` and raw for ``"euclidean"`` (then it must
rank by Euclidean distance) (for leave-one-out both are the same tensor), ``k`` (already at most the
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


def _check_distance(distance: str) -> None:
    if distance not in DISTANCES:
        raise DaalmlError(f"distance: {distance!r} is not one of {', '.join(DISTANCES)}")


def _prepared(x: ArrayLike, name: str, distance: str) -> torch.Tensor:
    """Float32 embeddings, L2-normalised for cosine, as given for Euclidean distance."""
    t = _as_embeddings(x, name)
    return F.normalize(t, dim=1) if distance == "cosine" else t


def knn(
    query: ArrayLike,
    gallery: ArrayLike,
    k: int,
    *,
    exclude_self: bool,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    backend: KnnBackend = "auto",
    distance: Distance = "cosine",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest neighbours of each query in ``gallery``, exactly.

    ``distance="cosine"``: inputs are L2-normalised here and ``scores`` are cosine
    similarities; ``"euclidean"``: raw inputs ranked by L2 distance, ``scores`` are
    -|q - g|^2 / 2 (larger = nearer; computed as q.g - |g|^2 / 2 - |q|^2 / 2 in fp32). With ``exclude_self`` the query set must be the gallery
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
    least 4096 items, else exact; on a GPU, tiled or exact. Euclidean searches never use
    bf16 (``"bf16"`` runs as ``"auto"`` on a GPU) and multiply every tile.
    """
    _check_distance(distance)
    q = _prepared(query, "query", distance)
    g = _prepared(gallery, "gallery", distance).to(q.device)
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
            iter_knn(
                q,
                g,
                k_eff,
                exclude_self=exclude_self,
                chunk_size=chunk_size,
                backend=backend,
                distance=distance,
            )
        )
    scores = torch.cat([b[1] for b in blocks])
    if distance == "euclidean":
        scores = scores - 0.5 * (q * q).sum(dim=1, keepdim=True)
    return scores, torch.cat([b[2] for b in blocks])


def count_unmatchable_queries(labels: ArrayLike) -> int:
    """Number of samples whose class has a single sample (no leave-one-out match exists)."""
    lab = _as_labels(labels, None, "labels", torch.device("cpu"))
    _, counts = torch.unique(lab, return_counts=True)
    return int((counts == 1).sum())


def _per_query(
    blocks: Iterator[tuple[int, torch.Tensor, torch.Tensor]],
    query_labels: torch.Tensor,
    gallery_labels: torch.Tensor,
    r_per_query: torch.Tensor,
    padded: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per query: rank of the first hit (k if none), AP@R and R-precision.

    With ``padded``, index -1 marks a slot with no neighbour (all others were ignored)."""
    n = query_labels.shape[0]
    device = query_labels.device
    first_hit = torch.empty(n, dtype=torch.int64, device=device)
    ap_r = torch.zeros(n, dtype=torch.float64, device=device)
    r_prec = torch.zeros(n, dtype=torch.float64, device=device)
    for start, _, idx in blocks:
        stop = start + idx.shape[0]
        k = idx.shape[1]
        if padded:
            hit = (gallery_labels[idx.clamp(min=0)] == query_labels[start:stop, None]) & (idx >= 0)
        else:
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
    return first_hit, ap_r, r_prec


def _summary(
    per_query: tuple[torch.Tensor, torch.Tensor, torch.Tensor], valid: torch.Tensor, ks: list[int]
) -> dict[str, float]:
    """Recall@k, MAP@R and R-precision averaged over the ``valid`` queries."""
    first_hit, ap_r, r_prec = per_query
    out = {f"recall@{k}": float((first_hit[valid] < k).double().mean()) for k in ks}
    out["map@r"] = float(ap_r[valid].mean())
    out["r_precision"] = float(r_prec[valid].mean())
    return out


def _per_category(
    per_query: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    valid: torch.Tensor,
    categories: tuple[np.ndarray, list[str]],
    ks: list[int],
) -> dict[str, dict[str, float | int]]:
    """``{category: {rank metrics..., "queries_without_relevant": n}}``; a category whose
    queries all lack a relevant item gets only the count."""
    codes, names = categories
    code_t = torch.from_numpy(codes).to(valid.device)
    out: dict[str, dict[str, float | int]] = {}
    for c, name in enumerate(names):
        rows = code_t == c
        entry: dict[str, float | int] = {}
        if bool((valid & rows).any()):
            entry.update(_summary(per_query, valid & rows, ks))
        entry["queries_without_relevant"] = int((rows & ~valid).sum())
        out[name] = entry
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
    seed: int,
    kmeans_niter: int,
    chunk_size: int,
    backend: str,
    knn: KnnFunc | None,
) -> None:
    _check_chunk_size(chunk_size)
    _check_backend(backend)
    if knn is not None and not callable(knn):
        raise DaalmlError(f"knn: {knn!r} is not callable")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise DaalmlError(f"seed: {seed!r} is not an integer")
    if isinstance(kmeans_niter, bool) or not isinstance(kmeans_niter, int) or kmeans_niter < 1:
        raise DaalmlError(f"kmeans_niter: {kmeans_niter!r} is not a positive integer")


@dataclass(frozen=True)
class _Search:
    """How neighbours are found, and what each query ignores and is grouped by."""

    leave_one_out: bool
    chunk_size: int
    backend: str
    knn: KnnFunc | None
    distance: str
    rule: IgnoreRule | None
    categories: tuple[np.ndarray, list[str]] | None


def _ignore_rule(
    mask_to_ignore: ArrayLike | None,
    ignore_groups: Any,
    n_q: int,
    n_g: int,
    device: torch.device,
    leave_one_out: bool,
) -> IgnoreRule | None:
    """The rule from ``mask_to_ignore`` or ``ignore_groups`` (at most one of them)."""
    if mask_to_ignore is not None and ignore_groups is not None:
        raise DaalmlError("mask_to_ignore and ignore_groups: give at most one of them")
    if mask_to_ignore is not None:
        return MaskIgnore(mask_to_ignore, n_q, n_g, device)
    if ignore_groups is None:
        return None
    if leave_one_out:
        return GroupIgnore.from_ids(ignore_groups, None, n_q, n_g, device)
    if not isinstance(ignore_groups, tuple | list) or len(ignore_groups) != 2:
        raise DaalmlError("ignore_groups: expected a pair (query_groups, gallery_groups)")
    return GroupIgnore.from_ids(ignore_groups[0], ignore_groups[1], n_q, n_g, device)


def _evaluate(
    q: torch.Tensor,
    g: torch.Tensor,
    ql: torch.Tensor,
    gl: torch.Tensor,
    k: int,
    ks: list[int],
    search: _Search,
    r_per_query: torch.Tensor,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Rank metrics of queries ``q`` against ``g`` (the same set for leave-one-out), and
    the count of queries without a relevant item (and per category, if any)."""
    exclude_self = search.leave_one_out
    rule = search.rule
    extra = 0 if rule is None else rule.extra(exclude_self)
    k_search = min(k + extra, g.shape[0] - int(exclude_self))
    with torch.no_grad():
        if search.knn is None:
            blocks = iter_knn(
                q,
                g,
                k_search,
                exclude_self=exclude_self,
                chunk_size=search.chunk_size,
                backend=search.backend,
                distance=search.distance,
            )
        else:
            blocks = _external_knn(search.knn, q, g, k_search, exclude_self)
        if rule is not None:
            blocks = drop_ignored(blocks, rule, k)
        per_query = _per_query(blocks, ql, gl, r_per_query, padded=rule is not None)
    valid = r_per_query > 0
    extras: dict[str, Any] = {"queries_without_relevant": int((~valid).sum())}
    if search.categories is not None:
        extras["per_category"] = _per_category(per_query, valid, search.categories, ks)
    return _summary(per_query, valid, ks), extras


def _relevant_or_raise(
    r_per_query: torch.Tensor, search: _Search, ql: torch.Tensor, gl: torch.Tensor
) -> torch.Tensor:
    """R per query, with what ``search.rule`` ignores taken out; raises if no query has one."""
    rule = search.rule
    if rule is not None:
        r_per_query = rule.relevant(ql, gl, search.leave_one_out)
        if not bool((r_per_query > 0).any()):
            raise DaalmlError(
                "mask_to_ignore/ignore_groups: no query has a relevant item left that it does"
                " not ignore; nothing can be retrieved"
            )
    return r_per_query


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
    distance: Distance = "cosine",
    categories: ArrayLike | Sequence[str] | None = None,
    mask_to_ignore: ArrayLike | None = None,
    ignore_groups: ArrayLike | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Leave-one-out retrieval metrics and NMI of one embedded test set.

    Each query is ranked against all other samples by cosine similarity
    (``distance="cosine"``) or by Euclidean distance between the raw, unnormalised
    embeddings (``"euclidean"``, as PML's default AccuracyCalculator). Keys:
    ``recall@k`` per k in ``ks``, ``map@r``, ``r_precision`` (R = number of other samples of
    the query's class; queries without one are excluded from these averages), ``nmi``
    (k-means on all embeddings, L2-normalised for cosine and raw for Euclidean, k = number
    of classes, seeded by ``seed``) and ``queries_without_relevant`` (int: the queries
    excluded). ``categories`` (one id per sample, integers or strings) adds
    ``per_category``: ``{str(category): {the rank keys, "queries_without_relevant"}}``
    (a category whose queries all lack a relevant item has only the count).
    ``mask_to_ignore`` (bool, N x N, True = ignore) or ``ignore_groups`` (one id per sample:
    a query ignores the other samples of its group) removes items from each query's
    ranking and from its R, as OML's ``mask_to_ignore``.
    ``backend`` picks the exact kNN search (see :func:`knn`); results do not depend on it.
    ``knn`` replaces that search with the caller's (see :data:`KnnFunc`; called once with
    the whole set, ``exclude_self=True``). CUDA tensors are searched and clustered on their
    GPU (no faiss-gpu needed).
    """
    _check_distance(distance)
    emb = _prepared(embeddings, "embeddings", distance)
    n = emb.shape[0]
    lab = _as_labels(labels, n, "labels", emb.device)
    ks_ = _check_ks(ks)
    _check_common(seed, kmeans_niter, chunk_size, backend, knn)
    rule = _ignore_rule(mask_to_ignore, ignore_groups, n, n, emb.device, leave_one_out=True)
    cats = None if categories is None else as_codes(categories, n, "categories")
    _, inverse, counts = torch.unique(lab, return_inverse=True, return_counts=True)
    r_per_query = counts[inverse] - 1
    if not bool((r_per_query > 0).any()):
        raise DaalmlError(
            f"labels: all {lab.shape[0]} samples are alone in their class;"
            " retrieval metrics need a class with at least two samples"
        )
    search = _Search(True, chunk_size, backend, knn, distance, rule, cats)
    r_per_query = _relevant_or_raise(r_per_query, search, lab, lab)
    k = min(max(max(ks_), int(counts.max()) - 1), n - 1)
    ranks, extras = _evaluate(emb, emb, lab, lab, k, ks_, search, r_per_query)
    return {**ranks, "nmi": _nmi(emb, lab, int(seed), kmeans_niter), **extras}


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
    distance: Distance = "cosine",
    categories: ArrayLike | Sequence[str] | None = None,
    mask_to_ignore: ArrayLike | None = None,
    ignore_groups: tuple[ArrayLike, ArrayLike] | None = None,
) -> dict[str, Any]:
    """Query-to-gallery retrieval metrics (In-Shop protocol) with the keys of retrieval_metrics.

    Queries rank the separate gallery (no self-exclusion) by cosine similarity or, with
    ``distance="euclidean"``, by Euclidean distance on the raw embeddings. R is the number
    of gallery samples of the query's class; queries without any are excluded from the
    averages and counted in ``queries_without_relevant``. NMI clusters queries and gallery
    together (k = number of classes in their union). ``categories``: one id per query
    (``per_category`` as in :func:`retrieval_metrics`). ``mask_to_ignore``: bool
    (n_query, n_gallery), True = the query ignores that gallery item; ``ignore_groups``:
    a pair ``(query_groups, gallery_groups)``, a query ignores the gallery items of its
    group. ``backend`` picks the exact kNN search (see :func:`knn`); results do not depend
    on it. ``knn`` replaces it with the caller's search (:data:`KnnFunc`,
    ``exclude_self=False``).
    """
    _check_distance(distance)
    q = _prepared(query_embeddings, "query_embeddings", distance)
    g = _prepared(gallery_embeddings, "gallery_embeddings", distance).to(q.device)
    if q.shape[1] != g.shape[1]:
        raise DaalmlError(
            f"query_embeddings: dimension {q.shape[1]} differs from gallery_embeddings'"
            f" {g.shape[1]}"
        )
    ql = _as_labels(query_labels, q.shape[0], "query_labels", q.device)
    gl = _as_labels(gallery_labels, g.shape[0], "gallery_labels", q.device)
    ks_ = _check_ks(ks)
    _check_common(seed, kmeans_niter, chunk_size, backend, knn)
    n_q, n_g = q.shape[0], g.shape[0]
    rule = _ignore_rule(mask_to_ignore, ignore_groups, n_q, n_g, q.device, leave_one_out=False)
    cats = None if categories is None else as_codes(categories, n_q, "categories")
    classes, counts = torch.unique(gl, return_counts=True)
    pos = torch.searchsorted(classes, ql).clamp(max=classes.shape[0] - 1)
    r_per_query = torch.where(classes[pos] == ql, counts[pos], 0)
    if not bool((r_per_query > 0).any()):
        raise DaalmlError(
            "query_labels: no query's class occurs in gallery_labels; nothing can be retrieved"
        )
    search = _Search(False, chunk_size, backend, knn, distance, rule, cats)
    r_per_query = _relevant_or_raise(r_per_query, search, ql, gl)
    k = min(max(max(ks_), int(counts.max())), n_g)
    ranks, extras = _evaluate(q, g, ql, gl, k, ks_, search, r_per_query)
    nmi = _nmi(torch.cat([q, g]), torch.cat([ql, gl]), int(seed), kmeans_niter)
    return {**ranks, "nmi": nmi, **extras}
