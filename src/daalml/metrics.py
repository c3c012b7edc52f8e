"""Retrieval and clustering metrics for deep metric learning evaluation.

Pure functions over embeddings and integer labels: Recall@k, MAP@R and R-precision
(Musgrave et al., "A Metric Learning Reality Check", as PML's AccuracyCalculator computes
them) and NMI of a k-means clustering. Neighbours come from an exact chunked search, by
cosine similarity (L2-normalised embeddings, the default) or by Euclidean distance on the
raw embeddings (``distance="euclidean"``; see :mod:`daalml.evaluation.knn_backends` for the
fp32, tiled and certified bf16 backends), or from a search the caller plugs in (``knn=``,
see :data:`KnnFunc`), so no N x N matrix is ever built and the per-query metrics are
accumulated chunk by chunk. Options as OML has them: metrics per query category
(``categories=``), gallery items each query ignores (``mask_to_ignore=``, or the
memory-light ``ignore_groups=``; :mod:`daalml.evaluation.query_options`). The k-means runs
on the embeddings' device (:mod:`daalml.evaluation.kmeans`).

The public names of :mod:`daalml.evaluation`, where the code lives (see its docstring).
"""

from __future__ import annotations

# in the order docs/api/metrics.md lists them (mkdocstrings: members_order = source)
# isort: off
from daalml.evaluation.search import DEFAULT_CHUNK_SIZE
from daalml.evaluation.clustering import (
    DEFAULT_KMEANS_NITER,
    KMEANS_SEED_POINTS_PER_CLUSTER,
    KMEANS_SEED_MIN_POINTS,
    KMEANS_SEED_POINT_CLUSTERS,
    KMEANS_SEED_THREADS,
)
from daalml.evaluation.search import KnnFunc, knn
from daalml.evaluation.ranking import count_unmatchable_queries
from daalml.evaluation.retrieval import retrieval_metrics, query_gallery_metrics
from daalml.evaluation.inputs import ArrayLike as ArrayLike  # a type of the signatures
from daalml.evaluation.knn_backends import Distance, KnnBackend

# isort: on

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_KMEANS_NITER",
    "KMEANS_SEED_MIN_POINTS",
    "KMEANS_SEED_POINTS_PER_CLUSTER",
    "KMEANS_SEED_POINT_CLUSTERS",
    "KMEANS_SEED_THREADS",
    "Distance",
    "KnnBackend",
    "KnnFunc",
    "count_unmatchable_queries",
    "knn",
    "query_gallery_metrics",
    "retrieval_metrics",
]
