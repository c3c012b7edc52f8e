"""The exact k-NN search as the metrics and callers use it, and the search a caller plugs in.

:func:`knn` checks its inputs and runs :func:`~daalml.evaluation.knn_backends.iter_knn`;
:data:`KnnFunc` is the contract of a caller's own search (``knn=`` of the metrics), which
:func:`_external_knn` checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from daalml.errors import DaalmlError
from daalml.evaluation.inputs import (
    ArrayLike,
    _check_backend,
    _check_chunk_size,
    _check_distance,
    _prepared,
)
from daalml.evaluation.knn_backends import Distance, KnnBackend, iter_knn

DEFAULT_CHUNK_SIZE = 1024
"""Queries per matmul block: a block costs chunk_size x gallery_size floats (400 MB at 100k)."""

KnnFunc = Callable[[torch.Tensor, torch.Tensor, int, bool], tuple[ArrayLike, ArrayLike]]
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
    tiles (half of them for leave-one-out, by symmetry) and merges them exactly: on CPU in
    faiss's per-row heaps, on a GPU by keeping only the entries above a per-query threshold
    from a gallery sample (rows either cannot settle, such as ties at the k boundary, are
    redone on the exact path; ``chunk_size`` does not apply). The two give the same
    neighbours and, with MKL, the same fp32 scores (another BLAS may differ in the last
    bit). ``"bf16"`` (CPU only) takes candidates from a bf16 matmul, rescores them in fp32
    and proves per query, from a bound on the bf16 error, that nothing left out could rank
    in the top k (else the query gets more candidates, then is redone exactly); its fp32
    rescoring need not add in the exact path's order, so it can swap near-ties on some CPUs
    and ``"auto"`` never picks it. ``"tiled-bf16"`` (CPU, cosine) multiplies the tiles in
    bf16, rescores the certified candidates in fp32 in the exact GEMM's own order of
    additions (found by a probe; elsewhere it runs as ``"tiled"``) and redoes the rows
    without a certificate: the same neighbours and scores as ``"exact"``. ``"auto"`` uses
    tiled for galleries of at least 4096 items, else exact, on any device; on a CPU with
    fast bf16 matmul, where the probe found the GEMM's order and a sample of the rows
    would be proved, it uses ``"tiled-bf16"``. Euclidean searches never use bf16 (``"bf16"`` runs
    as ``"auto"``) and multiply every tile.
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
