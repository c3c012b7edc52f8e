"""The two evaluation protocols: leave-one-out (:func:`retrieval_metrics`) and query to gallery
(:func:`query_gallery_metrics`, In-Shop), with the options each query has (ignored items,
categories).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from daalml.errors import DaalmlError
from daalml.evaluation import kmeans_neighbours
from daalml.evaluation.clustering import DEFAULT_KMEANS_NITER, nmi_later
from daalml.evaluation.inputs import (
    ArrayLike,
    _as_labels,
    _check_backend,
    _check_chunk_size,
    _check_distance,
    _check_ks,
    _prepared,
)
from daalml.evaluation.knn_backends import Distance, KnnBackend, iter_knn
from daalml.evaluation.query_options import (
    GroupIgnore,
    IgnoreRule,
    MaskIgnore,
    as_codes,
    drop_ignored,
)
from daalml.evaluation.ranking import _per_category, _per_query, _summary
from daalml.evaluation.search import DEFAULT_CHUNK_SIZE, KnnFunc, _external_knn


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
) -> tuple[dict[str, float], dict[str, Any], kmeans_neighbours.NeighbourLists | None]:
    """Rank metrics of queries ``q`` against ``g`` (the same set for leave-one-out), the
    count of queries without a relevant item (and per category, if any), and the search's
    neighbour lists where the NMI's k-means can use them
    (:mod:`daalml.evaluation.kmeans_neighbours`: our exact cosine search, leave-one-out)."""
    exclude_self = search.leave_one_out
    rule = search.rule
    extra = 0 if rule is None else rule.extra(exclude_self)
    k_search = min(k + extra, g.shape[0] - int(exclude_self))
    lists = None
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
            if exclude_self and search.distance == "cosine" and kmeans_neighbours.keeps(q, k_search):
                blocks, lists = kmeans_neighbours.collect(blocks, q.shape[0], k_search)
        else:
            blocks = _external_knn(search.knn, q, g, k_search, exclude_self)
        if rule is not None:
            blocks = drop_ignored(blocks, rule, k)
        per_query = _per_query(blocks, ql, gl, r_per_query, padded=rule is not None)
    valid = r_per_query > 0
    extras: dict[str, Any] = {"queries_without_relevant": int((~valid).sum())}
    if search.categories is not None:
        extras["per_category"] = _per_category(per_query, valid, search.categories, ks)
    return _summary(per_query, valid, ks), extras, lists


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
    nmi = nmi_later(emb, lab, int(seed), kmeans_niter)  # its seeding runs during the search
    ranks, extras, lists = _evaluate(emb, emb, lab, lab, k, ks_, search, r_per_query)
    return {**ranks, "nmi": nmi(lists), **extras}


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
    nmi = nmi_later(torch.cat([q, g]), torch.cat([ql, gl]), int(seed), kmeans_niter)
    ranks, extras, _ = _evaluate(q, g, ql, gl, k, ks_, search, r_per_query)
    return {**ranks, "nmi": nmi(), **extras}
