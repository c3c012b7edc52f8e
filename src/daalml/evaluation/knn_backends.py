"""Exact chunked k-nearest-neighbour search by inner product (cosine on unit vectors).

Four backends; ``"auto"`` picks ``"exact"``, ``"tiled"`` or ``"tiled-bf16"`` per call:

* ``"exact"``: fp32 matmul + topk per block of queries (the reference).
* ``"tiled"`` (any device): fp32 by cache-sized tiles, symmetric for leave-one-out (half the
  multiply-adds). On CPU tensors the tiles go into per-row candidate buffers by compiled
  (numba) kernels (:mod:`daalml.evaluation.knn_heaps`); on a GPU, or without numba, each
  entry is kept only if it reaches a per-query threshold read off a gallery sample
  (:mod:`daalml.evaluation.knn_tiles`).
  ``"auto"`` uses it wherever the gallery holds >= 4096 items.
* ``"tiled-bf16"`` (CPU, cosine): the tiled search with bf16 tile products into the
  buffers, whose candidates are rescored in fp32 in the exact path's own order of additions
  (:mod:`daalml.evaluation.gemm_dots`) and certified by the bf16 error bound
  (:mod:`daalml.evaluation.bf16_candidates`). ``"auto"`` picks it instead of ``"tiled"`` on CPU
  tensors where bf16 matmul is at least ``BF16_TILES_MIN_SPEEDUP`` x faster than fp32 and
  :func:`daalml.evaluation.gemm_dots.split` found the GEMM's order for the dimension;
  asked for elsewhere it runs as ``"tiled"`` (fp32 tiles), as for Euclidean distance.
  It first sizes the candidates on a sample of the data
  (:func:`daalml.evaluation.bf16_candidates.bf16_plan`); where too many would be needed for the
  certificates, ``"auto"`` runs fp32 tiles.
* ``"bf16"`` (CPU): a bf16 matmul scores the block; the items above a per-query threshold
  (read off a gallery sample), cut to ``k + margin``, are rescored in fp32. A certificate
  from a rigorous bound on the bf16 error (:func:`bf16_error`) proves that every item
  left out scores below the k-th rescored one; a query without one gets 4x the
  candidates, then is recomputed on the exact path. Worth it only where bf16 matmul is
  much faster than fp32 (AVX512-BF16 or AMX: about 4x). Explicit only: its rescoring
  matched the exact path's bits on the CPUs measured before, but not on an AMX Xeon
  (24 of 20,000 rows differed), so ``"auto"`` no longer picks it (see
  :func:`resolve_backend`).

Order is score descending, then gallery index ascending, also at the k boundary, so the
neighbour set does not depend on the backend, the chunk size or topk's internal order. The
bf16 backend rescores with GEMMs shaped like the exact one's, which MKL computes to the same
bits; a BLAS whose bits depend on the matrix shape could make scores differ in the last
bit, which can only swap items whose scores agree to within fp32 rounding.

``distance="euclidean"`` ranks raw (not normalised) vectors by squared L2 distance as the
inner product of ``[x, 1]`` with ``[y, -|y|^2 / 2]`` (:func:`euclidean_operands`), so the
same fp32 backends search it exactly; bf16 is never used for it (the bias column's bf16
rounding error would fail nearly every certificate): ``"bf16"`` and ``"auto"`` run the
tiled or the exact fp32 path, as ``"auto"`` picks them on a GPU. The two operands differ,
so a leave-one-out search multiplies every tile (the symmetric halving needs one set).

One cohesive thing over 400 lines: the backend choice and the certified bf16 search, whose
candidate net, error bound, fp32 rescoring and lexicographic top-k share their constants and
must stay bit-identical to the exact path they fall back to.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Literal

import torch

from daalml.errors import DaalmlError
from daalml.evaluation import bf16_candidates, gemm_dots, heap_kernels, knn_heaps, knn_tiles
from daalml.evaluation.bf16_bounds import (
    bf16_error,
    bf16_score_bound,
)
from daalml.evaluation.bf16_bounds import norms_up as _norms_up
from daalml.evaluation.bf16_bounds import residual_norms as _residual_norms

__all__ = [
    "BACKENDS",
    "DISTANCES",
    "Distance",
    "KnnBackend",
    "euclidean_operands",
    "iter_knn",
    "resolve_backend",
]

KnnBackend = Literal["auto", "exact", "bf16", "tiled", "tiled-bf16"]
BACKENDS: tuple[str, ...] = ("auto", "exact", "bf16", "tiled", "tiled-bf16")
Distance = Literal["cosine", "euclidean"]
DISTANCES: tuple[str, ...] = ("cosine", "euclidean")

Block = tuple[int, torch.Tensor, torch.Tensor]

BF16_MIN_SPEEDUP = 2.0
""":func:`bf16_matmul_is_faster` says yes at this bf16/fp32 matmul speedup: the bf16
backend's per-query work costs about what a 2x faster matmul saves at N = 5000, d = 512.
(Until 2026-12-03 ``"auto"`` chose bf16 by this and a 4x rule for leave-one-out; it no
longer chooses bf16, see :func:`resolve_backend`.)"""

BF16_TILES_MIN_SPEEDUP = 1.5
"""``"auto"`` multiplies the tiled search's tiles in bf16 (``"tiled-bf16"``) from this
bf16/fp32 matmul speedup on. At N = 20,000, d = 512 on the AMD EPYC (probe 2.05-2.08x) the
bf16 tiles took 1.03 CPU s and the rest of the search 0.96, where fp32 tiles take 2.26 and
the rest 0.51 (performance.md's stage tables, eighth session and capped to AVX2): the
bf16 tiles' saving covers the rescoring down to a speedup of about 1.4x."""

MARGIN_MIN = 16
"""Candidates beyond k: ``max(MARGIN_MIN, k // 4)``, times the current widening factor."""

WIDEN_MAX = 4
REDO_TOLERATED = 0.1
"""Fraction of a block's queries redone exactly before the candidate net widens (x2, up
to ``WIDEN_MAX``); past that, twice this fraction makes the rest of the search exact."""

SAMPLE_FRACTION = 8
SAMPLE_MIN_RATIO = 32
"""Thresholds come from a 1/``SAMPLE_FRACTION`` gallery sample when the gallery holds at
least ``SAMPLE_MIN_RATIO`` x the candidates; smaller galleries use topk."""

CAP_RATIO = 8
"""A query whose threshold keeps more than this many times the candidates is redone exactly."""

GEMM_MIN_ROWS = 16
"""Fewest rows multiplied at once (MKL on 2 threads: 1-3, 5-7 and 9-11 rows get other bits)."""

RESCORE_GROUP = 4
"""Queries rescored by one GEMM against all their candidates (4x redundant, but a GEMM is
bit-identical to the exact path's and faster than a batched gemv)."""

RESCORE_BATCH = 32
"""Queries rescored by one bmm: their gathered candidate rows (32 x 100 x d floats) stay in
cache; 256 is 3x slower, 8 pays per-call overhead."""

PROBE_ROUNDS = 15
"""The bf16 probe times fp32 and bf16 in turns this many times and keeps each one's best
(about 70 ms in all)."""

_bf16_speedup: dict[str, float] = {}


def resolve_backend(
    backend: str,
    device: torch.device,
    n_pairs: int,
    *,
    n_gallery: int = 0,
    k: int = 1,
    symmetric: bool = False,
    dim: int = 0,
) -> str:
    """``"exact"``, ``"bf16"``, ``"tiled"`` or ``"tiled-bf16"``: the backend to search
    ``n_pairs`` pairs with.

    ``n_gallery`` and ``k`` let ``"auto"`` decide whether the tiled path applies, ``dim``
    (the vectors' dimension, for cosine operands) whether its products may be bf16
    (:func:`bf16_tiles_apply`; 0: not considered); ``n_pairs`` and ``symmetric`` are kept
    for callers (they chose bf16 before 2026-12-03).
    """
    if backend not in BACKENDS:
        raise DaalmlError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "bf16" and device.type != "cpu":
        # cuBLAS may reduce bf16 products in bf16 (allow_bf16_reduced_precision_reduction),
        # which the certificate's error bound does not cover.
        raise DaalmlError(f"backend: 'bf16' runs on CPU tensors only, not {device.type}")
    if backend != "auto":
        return backend
    # "auto" never picks "bf16": its fp32 rescoring gives the exact path's bits only where
    # MKL's small-group GEMM adds in the order of the exact path's large one, which MKL does
    # not promise. On a Sapphire Rapids Xeon with AMX (2026-12-03) 24 of 20,000 rows got
    # other neighbours than backend="exact" (bench_metrics.clustered(20000, 512, 50, seed=0),
    # k=48, leave-one-out), while "tiled" matched in every row. Exact first, speed second.
    # "tiled-bf16" rescores in the exact GEMM's own order, found and checked by a probe.
    if not knn_tiles.usable(n_gallery, k):
        return "exact"
    return "tiled-bf16" if dim and bf16_tiles_apply(device, dim) else "tiled"


def bf16_tiles_apply(device: torch.device, dim: int) -> bool:
    """Whether the tiled search multiplies its tiles in bf16 for ``dim``-dimensional cosine
    operands: CPU tensors, the heap kernels available (numba), bf16 matmul
    ``BF16_TILES_MIN_SPEEDUP`` x faster than fp32, and this GEMM's order of additions found."""
    return (
        device.type == "cpu"
        and heap_kernels.AVAILABLE
        and bf16_speedup() >= BF16_TILES_MIN_SPEEDUP
        and gemm_dots.split(dim) is not None
    )


def bf16_matmul_is_faster() -> bool:
    """Whether a bf16 CPU matmul beats fp32 by ``BF16_MIN_SPEEDUP`` (see :func:`bf16_speedup`)."""
    return bf16_speedup() >= BF16_MIN_SPEEDUP


def bf16_speedup() -> float:
    """fp32 time / bf16 time of a 256 x 1024 x 512 CPU matmul, measured once per process.

    Measured on one torch thread in this thread's CPU time: what the CPU's kernels give
    (fast bf16 or not), not how the machine's load happened to treat a few milliseconds
    of 2-thread work (wall-clock runs on a loaded 2-core machine gave 0.01x to 19x)."""
    if "cpu" not in _bf16_speedup:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(256, 512, generator=gen)
        b = torch.randn(1024, 512, generator=gen)
        a16, b16 = a.bfloat16(), b.bfloat16()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t32, t16 = _best_times([lambda: a @ b.T, lambda: a16 @ b16.T])
        finally:
            torch.set_num_threads(threads)
        _bf16_speedup["cpu"] = t32 / t16
    return _bf16_speedup["cpu"]


def _best_times(fns: list[Callable[[], object]], rounds: int = PROBE_ROUNDS) -> list[float]:
    """Each function's best CPU time in this thread, the functions taking turns."""
    for fn in fns:
        fn()  # warm-up: kernel selection, first-touch allocation
    best = [math.inf] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.thread_time()
            fn()
            best[i] = min(best[i], time.thread_time() - start)
    return best


def iter_knn(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    *,
    exclude_self: bool,
    chunk_size: int,
    backend: str,
    distance: str = "cosine",
) -> Iterator[Block]:
    """Yield ``(start, scores, indices)`` per block of ``chunk_size`` queries, best first.

    Inputs are fp32, L2-normalised for ``distance="cosine"`` (scores: cosine similarity),
    raw for ``"euclidean"`` (scores: x.y - |y|^2 / 2, see :func:`euclidean_operands`);
    ``k`` is already clamped to the available gallery size.
    With ``exclude_self`` query row i is gallery row i and is never returned. fp32 matmuls
    run at full precision meanwhile (a "high" or "medium" float32_matmul_precision, as
    Lightning users set for training, would let them use TF32 or bf16: not exact).
    """
    if distance == "euclidean":
        query, gallery = euclidean_operands(query, gallery)
        if backend in ("auto", "bf16"):
            backend = "tiled" if knn_tiles.usable(gallery.shape[0], k) else "exact"
        elif backend == "tiled-bf16":
            backend = "tiled"
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield from _iter_knn(query, gallery, k, exclude_self, chunk_size, backend)
    finally:
        torch.set_float32_matmul_precision(precision)


def euclidean_operands(
    query: torch.Tensor, gallery: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[x, 1]`` per query and ``[y, -|y|^2 / 2]`` per gallery item, fp32.

    Their inner product x.y - |y|^2 / 2 = (|x|^2 - |x - y|^2) / 2 orders a query's gallery
    by squared L2 distance, nearest first (|x|^2 is the same for the whole row). Equal
    gallery vectors get equal bits, so exact ties stay ties, broken by lower index.
    """
    half_sq = 0.5 * (gallery * gallery).sum(dim=1, keepdim=True)
    ones = torch.ones((query.shape[0], 1), dtype=query.dtype, device=query.device)
    return torch.cat([query, ones], dim=1), torch.cat([gallery, -half_sq], dim=1)


def _iter_knn(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    exclude_self: bool,
    chunk_size: int,
    backend: str,
) -> Iterator[Block]:
    n_q, n_g = query.shape[0], gallery.shape[0]
    chosen = resolve_backend(
        backend, query.device, n_q * n_g, n_gallery=n_g, k=k, symmetric=exclude_self,
        dim=query.shape[1],
    )
    if chosen == "tiled-bf16" and backend != "auto":  # asked for: only where it applies
        chosen = "tiled-bf16" if bf16_tiles_apply(query.device, query.shape[1]) else "tiled"
    kept = None
    if chosen == "tiled-bf16":
        kept = bf16_candidates.bf16_plan(query, gallery, k, exclude_self)
        if kept is None and backend == "auto":
            chosen = "tiled"
        elif kept is None:  # asked for: run it all the same
            kept = bf16_candidates.bf16_kept(k)
    if chosen in ("tiled", "tiled-bf16"):
        products = "bf16" if chosen == "tiled-bf16" else "fp32"
        threads = torch.get_num_threads()
        if knn_heaps.usable(query.device, n_q, k, threads, kept, symmetric=exclude_self):
            yield from knn_heaps.iter_blocks(
                query, gallery, k, exclude_self=exclude_self, products=products, kept=kept
            )
        else:
            yield from knn_tiles.iter_blocks(query, gallery, k, exclude_self=exclude_self)
        return
    if chosen == "exact":
        for start in range(0, n_q, chunk_size):
            q = query[start : start + chunk_size]
            self_idx = _self_index(start, q.shape[0], exclude_self, q.device)
            yield start, *_exact_block(q, gallery, k, self_idx)
        return
    searcher = _Bf16Searcher(gallery, k)
    for start in range(0, n_q, chunk_size):
        q = query[start : start + chunk_size]
        self_idx = _self_index(start, q.shape[0], exclude_self, q.device)
        if searcher.gave_up:
            yield start, *_exact_block(q, gallery, k, self_idx)
        else:
            yield start, *searcher.search(q, self_idx)


def _self_index(
    start: int, n: int, exclude_self: bool, device: torch.device
) -> torch.Tensor | None:
    return torch.arange(start, start + n, device=device) if exclude_self else None


def _mask_self(sim: torch.Tensor, self_idx: torch.Tensor | None) -> None:
    if self_idx is not None:
        sim[torch.arange(sim.shape[0], device=sim.device), self_idx] = float("-inf")


def _gemm_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` with at least ``GEMM_MIN_ROWS`` rows (the last repeated): MKL computes
    a few rows with other kernels whose last bit differs, so a redone query would not get
    the bits of the same query in a full block."""
    n = a.shape[0]
    if n >= GEMM_MIN_ROWS:
        return a @ b.T
    return (torch.cat([a, a[-1:].expand(GEMM_MIN_ROWS - n, -1)]) @ b.T)[:n]


def _exact_block(
    q: torch.Tensor, gallery: torch.Tensor, k: int, self_idx: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 top-k of one query block: one matmul, one topk."""
    sim = _gemm_nt(q, gallery)
    _mask_self(sim, self_idx)
    return topk_lex(sim, k)


class _Bf16Searcher:
    """Certified bf16 search of query blocks against one gallery (see the module docstring).

    Candidates are the items whose bf16 score reaches a per-query threshold, read off a
    fixed 1/``SAMPLE_FRACTION`` sample of the gallery, cut to the best ``k + margin``
    (a threshold scan costs a third of topk over the whole row). Small galleries use topk.
    If too many queries miss their certificate, the net widens; if that does not help,
    the remaining blocks run exactly.
    """

    def __init__(self, gallery: torch.Tensor, k: int) -> None:
        self.gallery, self.k = gallery, k
        self.gallery16 = gallery.bfloat16()
        self.g_norm = float(_norms_up(gallery).max())
        self.g_res = float(_residual_norms(gallery, self.gallery16).max())
        self.widen = 1
        self.gave_up = False
        n_g = gallery.shape[0]
        self.sample: torch.Tensor | None = None
        if n_g >= SAMPLE_MIN_RATIO * self._n_cand(WIDEN_MAX):
            gen = torch.Generator().manual_seed(0)
            n_sample = n_g // SAMPLE_FRACTION
            sample = torch.randperm(n_g, generator=gen)[:n_sample].sort().values
            self.sample = sample.to(gallery.device)
            self.sample16 = self.gallery16[self.sample]
            self.sample_pos = torch.full((n_g,), -1, dtype=torch.int64, device=gallery.device)
            self.sample_pos[self.sample] = torch.arange(n_sample, device=gallery.device)

    def _n_cand(self, widen: int) -> int:
        return min(self.k + widen * max(MARGIN_MIN, self.k // 4), self.gallery.shape[0])

    def search(
        self, q: torch.Tensor, self_idx: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-k of one query block: bf16 candidates, fp32 rescoring, certificate.

        Queries without a certificate get a second chance with 4x the candidates (a topk
        over their bf16 rows), then are recomputed exactly.
        """
        n_g, n_cand = self.gallery.shape[0], self._n_cand(self.widen)
        q16 = q.bfloat16()
        sim16 = q16 @ self.gallery16.T
        _mask_self(sim16, self_idx)
        err = bf16_error(_norms_up(q), _residual_norms(q, q16), self.g_norm, self.g_res, q.shape[1])
        if self.sample is None or n_cand == n_g:
            candidates = _candidates_topk(sim16, n_cand)
        else:
            candidates = _candidates_above(sim16, self._thresholds(q16, self_idx, n_cand), n_cand)
        scores, indices, failed = self._certified(q, self_idx, err, *candidates)
        redo = torch.nonzero(failed).squeeze(1)
        if redo.numel() and n_cand < n_g:
            sub_self = None if self_idx is None else self_idx[redo]
            wider = _candidates_topk(sim16[redo], min(n_g, 4 * n_cand))
            sub = self._certified(q[redo], sub_self, err[redo], *wider)
            scores[redo], indices[redo] = sub[0], sub[1]
            redo = redo[sub[2]]
        del sim16
        self._adapt(redo.numel() / q.shape[0])
        if redo.numel():
            sub_self = None if self_idx is None else self_idx[redo]
            scores[redo], indices[redo] = _exact_block(q[redo], self.gallery, self.k, sub_self)
        return scores, indices

    def _certified(
        self,
        q: torch.Tensor,
        self_idx: torch.Tensor | None,
        err: torch.Tensor,
        cand: torch.Tensor,
        valid: torch.Tensor,
        left_out: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top k of the rescored candidates, and which queries lack a certificate."""
        exact = _rescore(q, self.gallery, cand)
        exact.masked_fill_(~valid, float("-inf"))
        if self_idx is not None:  # self is a candidate only when every item is one
            exact.masked_fill_(cand == self_idx[:, None], float("-inf"))
        order = torch.sort(exact, dim=1, descending=True, stable=True).indices[:, : self.k]
        scores, indices = exact.gather(1, order), cand.gather(1, order)
        return scores, indices, ~(scores[:, -1] > bf16_score_bound(left_out, err))

    def _thresholds(
        self, q16: torch.Tensor, self_idx: torch.Tensor | None, n_cand: int
    ) -> torch.Tensor:
        """Per query, a bf16 score that about 1.5 x ``n_cand`` items reach, from the sample."""
        assert self.sample is not None
        sim = q16 @ self.sample16.T
        if self_idx is not None:
            pos = self.sample_pos[self_idx]
            rows = torch.nonzero(pos >= 0).squeeze(1)
            sim[rows, pos[rows]] = float("-inf")
        n_sample = self.sample.shape[0]
        rank = min(n_sample, math.ceil(1.5 * n_cand * n_sample / self.gallery.shape[0]) + 2)
        return torch.topk(sim, rank, dim=1, sorted=False).values.amin(dim=1)

    def _adapt(self, redone: float) -> None:
        if redone <= REDO_TOLERATED:
            return
        if self.widen < WIDEN_MAX:
            self.widen *= 2
        elif redone > 2 * REDO_TOLERATED:
            self.gave_up = True


def _candidates_topk(
    sim16: torch.Tensor, n_cand: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``n_cand`` best by bf16 score per row, sorted by index; all valid; the largest
    bf16 score left out (bounded by the smallest kept; -inf when nothing is left out)."""
    vals, cand = torch.topk(sim16, n_cand, dim=1, sorted=False)
    cand = cand.sort(dim=1).values  # gather locality; the stable sort later breaks ties
    if n_cand == sim16.shape[1]:
        left_out = torch.full((sim16.shape[0],), float("-inf"), device=sim16.device)
    else:
        left_out = vals.amin(dim=1).float()
    return cand, torch.ones_like(cand, dtype=torch.bool), left_out


def _candidates_above(
    sim16: torch.Tensor, threshold: torch.Tensor, n_cand: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Items scoring at least ``threshold`` (bf16, per row), cut to the best ``n_cand``.

    Returns index-sorted candidates (n_rows, <= n_cand), which of them are real, and the
    largest bf16 score left out (or a bound on it). Rows whose threshold is not positive
    or that keep more than ``CAP_RATIO`` x ``n_cand`` items get no valid candidate: the
    certificate fails and they are searched exactly.
    """
    n_rows = sim16.shape[0]
    rows, cols = _where_at_least(sim16, threshold)
    counts = torch.bincount(rows, minlength=n_rows)
    usable = (threshold > 0) & (counts <= CAP_RATIO * n_cand)
    if not bool(usable.all()):
        keep = usable[rows]
        rows, cols, counts = rows[keep], cols[keep], counts * usable
    width = max(n_cand, int(counts.max()))
    pos = torch.arange(rows.shape[0], device=rows.device) - (counts.cumsum(0) - counts)[rows]
    dense = torch.full((n_rows, width), float("-inf"), device=sim16.device)
    dense[rows, pos] = sim16[rows, cols].float()
    dense_cols = torch.zeros((n_rows, width), dtype=torch.int64, device=sim16.device)
    dense_cols[rows, pos] = cols
    vals, j = torch.topk(dense, n_cand, dim=1, sorted=False)
    cand, by_index = dense_cols.gather(1, j).sort(dim=1)
    vals = vals.gather(1, by_index)
    # Cut by topk: the smallest kept bounds those cut. Otherwise all left out are < threshold.
    left_out = torch.where(counts > n_cand, vals.amin(dim=1), threshold.float())
    return cand, vals > float("-inf"), left_out


def _where_at_least(
    sim16: torch.Tensor, threshold: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-major (rows, cols) of ``sim16 >= threshold`` for positive bf16 thresholds.

    For a positive threshold, comparing the bit patterns as int16 orders like the values
    (negative values and -inf have the sign bit, so they compare below), at a third of the
    cost of a bf16 comparison; the mask is then scanned eight bytes at a time.
    """
    n_rows, n_cols = sim16.shape
    n = n_rows * n_cols
    buf = torch.zeros(n + (-n % 8), dtype=torch.bool, device=sim16.device)
    torch.ge(
        sim16.view(torch.int16),
        threshold.view(torch.int16)[:, None],
        out=buf[:n].view(n_rows, n_cols),
    )
    words = torch.nonzero(buf.view(torch.int64)).squeeze(1)
    word_row, byte = torch.nonzero(buf.view(-1, 8)[words], as_tuple=True)
    flat = words[word_row] * 8 + byte
    return flat // n_cols, flat % n_cols


def _rescore(q: torch.Tensor, gallery: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """fp32 inner products of each query with its candidates, with the exact path's GEMM.

    Each group of ``RESCORE_GROUP`` queries is multiplied with all the group's candidates
    (one bmm for ``RESCORE_BATCH`` queries) and the diagonal blocks kept: MKL's GEMM then
    gives every pair the bits of the exact backend's (checked for 4 and 8 rows on 1 and
    2 threads); a gemv or elementwise sum adds in another order and differs in the last
    bit, which could reorder near-ties.
    """
    n, n_cand = cand.shape
    r, dim = RESCORE_GROUP, q.shape[1]
    pad = -n % r
    if pad:  # repeat the last query: every group has r rows
        q = torch.cat([q, q[-1:].expand(pad, -1)])
        cand = torch.cat([cand, cand[-1:].expand(pad, -1)])
    out = torch.empty((n + pad, n_cand), dtype=torch.float32, device=q.device)
    batch = min(RESCORE_BATCH, n + pad)
    rows = torch.empty((batch * n_cand, dim), dtype=torch.float32, device=q.device)
    prods = torch.empty((batch // r, r, r * n_cand), dtype=torch.float32, device=q.device)
    for s in range(0, n + pad, batch):
        m = min(batch, n + pad - s) // r  # groups in this batch
        torch.index_select(gallery, 0, cand[s : s + m * r].reshape(-1), out=rows[: m * r * n_cand])
        group_rows = rows[: m * r * n_cand].view(m, r * n_cand, dim).transpose(1, 2)
        torch.bmm(q[s : s + m * r].view(m, r, dim), group_rows, out=prods[:m])
        # row i of a group against its own candidates: block i of row i
        diagonal = prods[:m].as_strided((m, r, n_cand), (r * r * n_cand, r * n_cand + n_cand, 1))
        out[s : s + m * r] = diagonal.reshape(m * r, n_cand)
    return out[:n]


def topk_lex(sim: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` per row by score descending, then column ascending, exactly.

    topk picks arbitrary members of a tie at the k boundary; one extra element shows
    whether the boundary is tied, and only those rows are repaired.
    """
    n_cols = sim.shape[1]
    scores, indices = _sort_lex(*torch.topk(sim, min(k + 1, n_cols), dim=1, sorted=False))
    if k < n_cols:
        tied = torch.nonzero(scores[:, k] == scores[:, k - 1]).squeeze(1)
        scores, indices = scores[:, :k], indices[:, :k]
        if tied.numel():
            _take_lowest_tied(sim, scores, indices, tied)
    return scores, indices


def _sort_lex(scores: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    by_index = torch.argsort(indices, dim=1)
    scores, indices = scores.gather(1, by_index), indices.gather(1, by_index)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return scores.gather(1, order), indices.gather(1, order)


def _take_lowest_tied(
    sim: torch.Tensor, scores: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor
) -> None:
    """In ``rows``, refill the slots holding the boundary score with the lowest such columns."""
    k = scores.shape[1]
    boundary = scores[rows, k - 1]
    n_above = (scores[rows] > boundary[:, None]).sum(dim=1)
    equal = sim[rows] == boundary[:, None]
    rank = equal.cumsum(dim=1)
    keep = equal & (rank <= (k - n_above)[:, None])
    row, col = torch.nonzero(keep, as_tuple=True)
    indices[rows[row], n_above[row] + rank[row, col] - 1] = col
