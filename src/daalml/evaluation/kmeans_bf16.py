"""Lloyd's labels proved from bf16 scores, before the fp32 GEMM, where bf16 matmul is fast.

In the first iterations of the bounded Lloyd loop (:mod:`daalml.evaluation.kmeans`) the
centroids move far and the drift bounds prove no point, so every point went through the
fp32 assignment GEMM. A bf16 GEMM of the same rows (2.2x faster at 400 clusters on the
AMD EPYC with AVX512-BF16, performance.md's micro-figures; its error bounded rigorously by
:mod:`daalml.evaluation.bf16_bounds`) proves most of them instead: with ``s_j`` a point's
bf16 score of cluster j plus ``h_j``, the real score ``t_j = h_j + x.c_j`` lies within
``slack`` of ``s_j``, so ``lo = s_a - slack`` and ``up = s_2 + slack`` (``a`` the first
best, ``s_2`` the best other) bound them as the loop's bounds must, and where ``lo > up +
2 E`` (``E`` the fp32 GEMM's own rounding bound) the fp32 GEMM's argmax is ``a``,
strictly, whatever its bits. The loop keeps those bounds as if the fp32 GEMM had given
them (only wider) and the fp32 GEMM computes the rest, so the labels, iterations and
centroids stay those of the plain loop. Each row's best, second best and largest
magnitude are read in one compiled pass (numba), as the three torch reductions that
would read the scores apart cost as much as the bf16 GEMM saves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import torch

from daalml.evaluation import heap_kernels, knn_backends
from daalml.evaluation.bf16_bounds import U_BF16, bf16_error, norms_up, residual_norms
from daalml.evaluation.rounding import U_FP32

__all__ = ["BF16_ROWS_FRACTION", "Bf16Labels", "applies"]

BF16_ROWS_FRACTION = 0.25
"""An assignment tries the bf16 proof when at least this share of the points is unproved
(the first iterations: all of them); later, a few hundred rows go to the fp32 GEMM directly."""

_COMPILING = threading.Lock()
_compiled: dict[str, Callable] = {}


def applies(x: torch.Tensor) -> bool:
    """Whether the bounded loop on ``x`` tries bf16 proofs: fp32 rows on a CPU whose bf16
    matmul is at least ``knn_backends.BF16_TILES_MIN_SPEEDUP`` x faster than fp32, with
    numba installed (for the one-pass reduction)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and heap_kernels.AVAILABLE
        and knn_backends.bf16_speedup() >= knn_backends.BF16_TILES_MIN_SPEEDUP
    )


class Bf16Labels:
    """The bf16 rows of the fixed points ``x`` and their bf16 error terms."""

    def __init__(self, x: torch.Tensor, norms: torch.Tensor) -> None:
        """``norms``: upper bounds (float64) on the rows' norms, as the loop keeps them."""
        self.x16 = x.bfloat16()
        self.norms = norms
        self.residuals = residual_norms(x, self.x16).double()

    def prove(
        self,
        rows: torch.Tensor,
        centroids: torch.Tensor,
        neg_half: torch.Tensor,
        err: torch.Tensor,
        blocks: list[int],
        run_blocks: Callable[[Callable[[int], None], int], object],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """For the points ``rows``: which are proved, their labels, ``lo`` and ``up``
        (float64; meaningful where proved). ``err``: each row's fp32 GEMM rounding bound;
        ``blocks``: bounds of the row blocks, which ``run_blocks(fn, count)`` runs (the
        loop's workers)."""
        c16 = centroids.bfloat16()
        c_norm = float(norms_up(centroids).double().max())
        c_res = float(residual_norms(centroids, c16).double().max())
        e = bf16_error(self.norms[rows], self.residuals[rows], c_norm, c_res, centroids.shape[1])
        n = rows.shape[0]
        labels = np.empty(n, dtype=np.int64)
        best, second, widest = (np.empty(n, dtype=np.float64) for _ in range(3))
        h = neg_half.float().contiguous().numpy()
        all_rows = n == self.x16.shape[0]

        def block(b: int) -> None:
            lo, hi = blocks[b], blocks[b + 1]
            picked = self.x16[lo:hi] if all_rows else self.x16[rows[lo:hi]]
            approx = (picked @ c16.T).float()
            _kernel()(approx.numpy(), h, labels[lo:hi], best[lo:hi], second[lo:hi], widest[lo:hi])

        run_blocks(block, len(blocks) - 1)
        slack = _outward(e + torch.from_numpy(widest) * _relative_slack(), 1)
        lo = _outward(torch.from_numpy(best) - slack, -1)
        up = _outward(torch.from_numpy(second) + slack, 1)
        proved = lo > _outward(up + 2 * err[rows], 1)
        return proved, torch.from_numpy(labels), lo, up


def _relative_slack() -> float:
    """|t_j - s_j| <= e + this x max(|a_j|, |s_j|): the bf16 rounding of the product
    (u |a| / (1 - u)) and the fp32 addition of h (2^-24 |s| / (1 - 2^-24))."""
    return U_BF16 / (1 - U_BF16) + 2 * U_FP32


def _outward(v: torch.Tensor, direction: int) -> torch.Tensor:
    """``v`` (float64, from a few roundings) moved past their error, up or down."""
    return v + direction * (v.abs() * 2.0**-48 + 2.0**-1000)


def _top2(
    approx: np.ndarray,
    h: np.ndarray,
    labels: np.ndarray,
    best: np.ndarray,
    second: np.ndarray,
    widest: np.ndarray,
) -> None:
    """Per row of ``approx`` (fp32 bf16 products), with ``s = approx + h`` in fp32: the first
    index of the largest ``s``, that value, the largest of the others (equal to it where
    tied) and the largest of ``|approx|`` and ``|s|``."""
    m, n = approx.shape
    for r in range(m):
        top, at, other, wide = -np.inf, 0, -np.inf, 0.0
        for j in range(n):
            a = approx[r, j]
            s = np.float32(a + h[j])
            if s > top:
                other, top, at = top, s, j
            elif s > other:
                other = s
            wide = max(wide, abs(a), abs(s))
        labels[r], best[r], second[r], widest[r] = at, top, other, wide


def _kernel() -> Callable:
    """:func:`_top2`, compiled on first use (numba imported then, as in heap_kernels)."""
    if not _compiled:
        with _COMPILING:
            if not _compiled:
                import numba

                _compiled["top2"] = numba.njit(nogil=True, cache=True, boundscheck=False)(_top2)
    return _compiled["top2"]
