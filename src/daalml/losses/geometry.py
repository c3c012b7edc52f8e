"""Distances from points to line segments, batched over all classes in memory O(B*C + C*d).

Everything is derived from two products with the embeddings (against the first vertex ``a``
and against the direction ``u = b - a``), fused here into one ``(B x d) @ (d x 2C)`` product,
plus per-row and per-class norms. Nothing of size ``B x C x d`` is ever built. (The loss
itself, ``daal_function.py``, uses its own fused version of the same formulas.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

SegmentMode = Literal["segment", "line", "point"]
SEGMENT_MODES: tuple[str, ...] = ("segment", "line", "point")
EPS = 1e-12


@dataclass(frozen=True)
class SegmentGeometry:
    """Per (sample, class) quantities of the point-to-segment projection."""

    squared_distance: torch.Tensor  # (B, C) |x_i - q_ic|^2, clamped at 0; (B,) when paired
    offset: torch.Tensor  # (B, C) <x_i - a_c, u_c>; (B,) when paired
    direction_norm_sq: torch.Tensor  # (C,) |u_c|^2; (B,) when paired


def segment_geometry(
    points: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
    mode: SegmentMode = "segment",
) -> SegmentGeometry:
    """Squared distance from every point (B, d) to every segment [start_c, end_c] (C, d).

    ``mode="line"`` drops the clamp of the projection coordinate (an infinite line);
    ``mode="point"`` ignores ``end`` (distance to ``start``).
    """
    if mode not in SEGMENT_MODES:
        raise ValueError(f"segment mode must be one of {SEGMENT_MODES}, got {mode!r}")
    point_sq = (points * points).sum(dim=1, keepdim=True)  # (B, 1)
    start_sq = (start * start).sum(dim=1)  # (C,)
    if mode == "point":
        dist_sq = point_sq - 2.0 * (points @ start.T) + start_sq
        zeros_c = torch.zeros_like(start_sq)
        return SegmentGeometry(dist_sq.clamp_min(0.0), torch.zeros_like(dist_sq), zeros_c)

    direction = end - start
    num_classes = start.shape[0]
    products = points @ torch.cat([start, direction], dim=0).T  # (B, 2C): one fused product
    point_start, point_dir = products[:, :num_classes], products[:, num_classes:]
    dir_sq = (direction * direction).sum(dim=1)  # (C,)
    start_dir = (start * direction).sum(dim=1)  # (C,)

    offset = point_dir - start_dir  # <x - a, u>
    t = offset / (dir_sq + EPS)
    if mode == "segment":
        t = t.clamp(0.0, 1.0)
    # |x - a - t u|^2 = |x - a|^2 - 2 t <x - a, u> + t^2 |u|^2
    dist_sq = point_sq - 2.0 * point_start + start_sq - t * (2.0 * offset - t * dir_sq)
    return SegmentGeometry(dist_sq.clamp_min(0.0), offset, dir_sq)


def paired_segment_geometry(
    points: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
    mode: SegmentMode = "segment",
) -> SegmentGeometry:
    """Row i of ``points`` against row i of ``start``/``end`` only: (B,) results in O(B*d)."""
    if mode not in SEGMENT_MODES:
        raise ValueError(f"segment mode must be one of {SEGMENT_MODES}, got {mode!r}")
    residual = points - start
    if mode == "point":
        zeros = torch.zeros_like(residual[:, 0])
        return SegmentGeometry((residual * residual).sum(dim=1), zeros, zeros)
    direction = end - start
    offset = (residual * direction).sum(dim=1)
    dir_sq = (direction * direction).sum(dim=1)
    t = offset / (dir_sq + EPS)
    if mode == "segment":
        t = t.clamp(0.0, 1.0)
    residual = residual - t[:, None] * direction
    return SegmentGeometry((residual * residual).sum(dim=1), offset, dir_sq)


def segment_distances(
    points: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
    mode: SegmentMode = "segment",
) -> torch.Tensor:
    """Euclidean distance (B, C) from every point to every class segment."""
    return segment_geometry(points, start, end, mode).squared_distance.sqrt()
