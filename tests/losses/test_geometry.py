"""Property tests of the batched point-to-segment distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from daalml.losses.geometry import (
    paired_segment_geometry,
    segment_distances,
    segment_geometry,
)

DIM = 4
coords = st.floats(min_value=-3.0, max_value=3.0, allow_nan=False, width=64)
vectors = arrays(np.float64, (DIM,), elements=coords)
batches = arrays(np.float64, st.tuples(st.integers(1, 5), st.just(DIM)), elements=coords)


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(array, dtype=torch.float64)


def _brute_force(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Minimum distance over a fine sampling of the segment (an upper bound close to exact)."""
    ts = torch.linspace(0, 1, 2001, dtype=torch.float64)
    points = a + ts[:, None] * (b - a)
    return torch.cdist(x, points).min(dim=1).values


settings.register_profile("daalml", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("daalml")


@given(batches, vectors, vectors)
def test_non_negative_and_close_to_brute_force(x, a, b):
    x, a, b = _t(x), _t(a), _t(b)
    distance = segment_distances(x, a[None], b[None])[:, 0]
    assert (distance >= 0).all()
    brute = _brute_force(x, a, b)
    # the expansion |x|^2 - 2<x, q> + |q|^2 cancels: sqrt turns 1e-16 relative into ~1e-7
    assert torch.all(distance <= brute + 1e-6)
    assert torch.all(brute - distance <= 1e-2 * (b - a).norm() + 1e-6)


@given(vectors, vectors, st.floats(0.0, 1.0))
def test_zero_on_the_segment(a, b, t):
    a, b = _t(a), _t(b)
    on_segment = (a + t * (b - a))[None]
    assert segment_distances(on_segment, a[None], b[None]).item() == pytest.approx(0.0, abs=1e-6)


@given(batches, vectors)
def test_coincident_vertices_give_point_distance(x, a):
    x, a = _t(x), _t(a)
    expected = (x - a).norm(dim=1)
    for mode in ("segment", "line", "point"):
        got = segment_distances(x, a[None], a[None], mode)[:, 0]
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


@given(batches, vectors, vectors)
def test_symmetric_in_the_two_vertices(x, a, b):
    x, a, b = _t(x), _t(a), _t(b)
    for mode in ("segment", "line"):
        forward = segment_distances(x, a[None], b[None], mode)
        backward = segment_distances(x, b[None], a[None], mode)
        torch.testing.assert_close(forward, backward, atol=1e-6, rtol=1e-6)


@given(batches, vectors, vectors)
def test_line_is_never_farther_than_segment(x, a, b):
    x, a, b = _t(x), _t(a), _t(b)
    line = segment_distances(x, a[None], b[None], "line")
    segment = segment_distances(x, a[None], b[None], "segment")
    point = segment_distances(x, a[None], b[None], "point")
    assert torch.all(line <= segment + 1e-6)
    assert torch.all(segment <= point + 1e-6)


def test_many_classes_at_once_equal_one_at_a_time():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    a = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    b = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    batched = segment_distances(x, a, b)
    for c in range(6):
        torch.testing.assert_close(
            batched[:, c], segment_distances(x, a[c : c + 1], b[c : c + 1])[:, 0]
        )
    geometry = segment_geometry(x, a, b)
    torch.testing.assert_close(geometry.direction_norm_sq, ((b - a) ** 2).sum(1))


@pytest.mark.parametrize("mode", ["segment", "line", "point"])
def test_paired_geometry_is_the_diagonal_of_the_batched_one(mode):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    a = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    b = a + torch.randn(7, 5, generator=gen, dtype=torch.float64)
    full = segment_geometry(x, a, b, mode)
    paired = paired_segment_geometry(x, a, b, mode)
    torch.testing.assert_close(paired.squared_distance, full.squared_distance.diagonal())
    torch.testing.assert_close(paired.offset, full.offset.diagonal())
    if mode != "point":
        torch.testing.assert_close(paired.direction_norm_sq, full.direction_norm_sq)


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="segment mode"):
        segment_distances(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), "arc")
