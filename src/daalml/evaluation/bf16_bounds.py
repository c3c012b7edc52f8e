"""Rigorous bounds on the error of bf16 inner products against fp32 ones, for certified
bf16 searches (the ``"bf16"`` backend of :mod:`daalml.evaluation.knn_backends` and the bf16
products of :mod:`daalml.evaluation.knn_heaps`): an item whose bf16 score, widened by these
bounds, stays below a query's k-th exact score cannot be among its k nearest."""

from __future__ import annotations

import torch

from daalml.evaluation.rounding import U_FP32, gamma

__all__ = ["RESIDUAL_CHUNK", "U_BF16", "bf16_error", "bf16_score_bound", "norms_up", "residual_norms"]

U_BF16 = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits, round to nearest even)


def bf16_score_bound(b: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
    """Upper bound on the fp32 score of an item whose bf16 score is <= ``b``.

    ``err`` bounds everything but the rounding of the result to bf16 (see
    :func:`bf16_error`), which hides <= u|b| / (1 - u) with u = 2^-8. The bound increases
    with ``b``, so the largest bf16 score left out bounds every item left out.
    """
    u = U_BF16
    bound = b + b.abs() * (u / (1 - u)) + err
    return torch.where(b == float("-inf"), b, bound)  # nothing left out: no bound


def bf16_error(
    q_norm: torch.Tensor, q_res: torch.Tensor, g_norm: float, g_res: float, dim: int
) -> torch.Tensor:
    """Per query, a bound on |fp32 score - fp32-accumulated bf16 score| over the gallery.

    With x = x~ + r (x~ the bf16 rounding of x, r exact in fp32), q.g - q~.g~ =
    q~.r_g + r_q.g~ + r_q.r_g, bounded by Cauchy-Schwarz with the norms: the largest
    residual norm of the gallery (about 0.002 for d=512) is half the worst case u|g|.
    Summing the bf16 products in fp32, and the fp32 score itself, each err by <= g_d|x||y|
    with g_d = dim * 2^-24 / (1 - dim * 2^-24). ``q_norm``, ``q_res`` (per query) and
    ``g_norm``, ``g_res`` (gallery maxima) must already be rounded up; 1e-6 covers
    flushed subnormals.
    """
    g_d = gamma(dim)
    q16_norm, g16_norm = q_norm + q_res, g_norm + g_res
    rounding = q16_norm * g_res + q_res * g16_norm + q_res * g_res
    summing = g_d * (q16_norm * g16_norm + q_norm * g_norm)
    return rounding + summing + 1e-6


def norms_up(x: torch.Tensor) -> torch.Tensor:
    """Row L2 norms rounded up past fp32 summation error (relative <= g_d / 2 + 2^-23)."""
    return torch.linalg.vector_norm(x, dim=1) * (1 + gamma(x.shape[1]) + 4 * U_FP32)


RESIDUAL_CHUNK = 1024
"""Rows of :func:`residual_norms` taken at a time, so that its temporaries stay in cache
(25.3 ms for 20,000 x 512 at once, 3.3 ms by chunks, on the AMD EPYC: performance.md's
micro-figures command, eighth session)."""


def residual_norms(x: torch.Tensor, x16: torch.Tensor) -> torch.Tensor:
    """Norms (rounded up) of x - bf16(x), which fp32 holds exactly."""
    if x.shape[0] <= RESIDUAL_CHUNK:
        return norms_up(x - x16.float())
    return torch.cat([
        norms_up(x[s : s + RESIDUAL_CHUNK] - x16[s : s + RESIDUAL_CHUNK].float())
        for s in range(0, x.shape[0], RESIDUAL_CHUNK)
    ])
