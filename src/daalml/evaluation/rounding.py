"""Unit roundoffs and Higham's ``gamma_n``, shared by the evaluation's rigorous bounds (the
bounded Lloyd, the bf16 and the neighbour-list proofs, the bf16 search's certificate)."""

from __future__ import annotations

from typing import TypeVar

__all__ = ["U_FP32", "U_FP64", "gamma"]

U_FP32 = 2.0**-24
"""Unit roundoff of fp32 (round to nearest)."""

U_FP64 = 2.0**-53
"""Unit roundoff of float64."""

_N = TypeVar("_N")


def gamma(n: _N, u: float = U_FP32) -> _N:
    """``n u / (1 - n u)``: bounds the relative error of a sum of ``n`` terms or of a dot
    product of length ``n``, in any order (Higham, Accuracy and Stability, 3.1); ``n`` a
    number or an array of them, with ``n u < 1``."""
    return n * u / (1 - n * u)  # type: ignore[operator, return-value]
