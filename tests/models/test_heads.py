"""Embedding heads and the PCA initialisation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from daalml.errors import DaalmlError
from daalml.models.heads import HEADS, PCAHead, build_head, init_linear_from_pca


def _anisotropic(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Gaussian cloud with distinct variances per axis, rotated and shifted off the origin."""
    gen = torch.Generator().manual_seed(seed)
    scales = torch.linspace(3.0, 0.2, dim)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen))
    return (torch.randn(n, dim, generator=gen) * scales) @ rotation.T + 4.0


def test_head_names() -> None:
    assert HEADS == ("paper", "linear", "pca")


def test_paper_head_layout() -> None:
    head = build_head("paper", 1280, 128)
    assert isinstance(head, nn.Sequential)
    first, act, last = head
    assert isinstance(first, nn.Linear) and (first.in_features, first.out_features) == (1280, 1024)
    assert isinstance(act, nn.SiLU)
    assert isinstance(last, nn.Linear) and (last.in_features, last.out_features) == (1024, 128)
    assert head(torch.randn(3, 1280)).shape == (3, 128)


def test_paper_head_hidden_size_and_default_embedding() -> None:
    head = build_head("paper", 16, hidden_size=32)
    assert head[0].out_features == 32
    assert head[2].out_features == 512


def test_linear_and_pca_heads() -> None:
    linear = build_head("linear", 16, 8)
    assert type(linear) is nn.Linear
    assert (linear.in_features, linear.out_features) == (16, 8)
    pca = build_head("pca", 16, 8)
    assert isinstance(pca, PCAHead) and isinstance(pca, nn.Linear)
    assert not bool(pca.pca_fitted)
    assert "pca_fitted" in pca.state_dict()


def test_unknown_head() -> None:
    with pytest.raises(DaalmlError, match="unknown head 'mlp': choose one of paper, linear, pca"):
        build_head("mlp", 16)


@pytest.mark.parametrize(
    ("args", "kwargs", "what"),
    [
        ((0,), {}, "in_dim"),
        ((16, -1), {}, "embedding_size"),
        ((16, 8), {"hidden_size": 0}, "hidden_size"),
        ((16.0, 8), {}, "in_dim"),
        ((True, 8), {}, "in_dim"),
    ],
)
def test_head_sizes_validated(args: tuple, kwargs: dict, what: str) -> None:
    with pytest.raises(DaalmlError, match=f"head {what} must be a positive integer"):
        build_head("linear", *args, **kwargs)


def test_pca_init_is_centred_principal_projection() -> None:
    features = _anisotropic(200, 6)
    head = build_head("pca", 6, 3)
    init_linear_from_pca(head, features)
    assert bool(head.pca_fitted)
    weight, bias = head.weight.detach().double(), head.bias.detach().double()
    x = features.double()
    mean = x.mean(dim=0)
    # rows: orthonormal top eigenvectors of the covariance (no whitening)
    torch.testing.assert_close(
        weight @ weight.T, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0
    )
    eigvals, eigvecs = torch.linalg.eigh(torch.cov(x.T))
    top = eigvecs[:, -3:].flip(1).T
    torch.testing.assert_close(
        (weight * top).sum(dim=1).abs(), torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(bias, -weight @ mean, atol=1e-5, rtol=0)
    out = head(features).double()
    torch.testing.assert_close(out, (x - mean) @ weight.T, atol=1e-4, rtol=0)
    torch.testing.assert_close(
        out.mean(dim=0), torch.zeros(3, dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(out.var(dim=0), eigvals[-3:].flip(0), rtol=1e-4, atol=0)


def test_pca_init_on_plain_linear_keeps_dtype() -> None:
    head = nn.Linear(5, 2)
    init_linear_from_pca(head, _anisotropic(40, 5, seed=1))
    assert head.weight.dtype == torch.float32
    assert head.weight.requires_grad


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 30),
    dim=st.integers(1, 8),
    k=st.integers(1, 8),
    seed=st.integers(0, 10_000),
)
def test_pca_init_property(n: int, dim: int, k: int, seed: int) -> None:
    head = nn.Linear(dim, k)
    features = _anisotropic(n, dim, seed)
    if k > min(n, dim):
        with pytest.raises(DaalmlError, match=f"embedding_size {k} exceeds min"):
            init_linear_from_pca(head, features)
        return
    init_linear_from_pca(head, features)
    w = head.weight.detach().double()
    torch.testing.assert_close(w @ w.T, torch.eye(k, dtype=torch.float64), atol=1e-5, rtol=0)
    out = head(features).double()
    torch.testing.assert_close(
        out.mean(dim=0), torch.zeros(k, dtype=torch.float64), atol=1e-3, rtol=0
    )


@pytest.mark.parametrize(
    ("n", "dim", "k"), [(4, 10, 5), (50, 3, 4)], ids=["few-samples", "few-dims"]
)
def test_pca_init_too_many_components(n: int, dim: int, k: int) -> None:
    head = build_head("pca", dim, k)
    with pytest.raises(
        DaalmlError, match=rf"embedding_size {k} exceeds min\(N={n}, feature_dim={dim}\)"
    ):
        init_linear_from_pca(head, torch.randn(n, dim))
    assert not bool(head.pca_fitted)


def test_pca_init_input_errors() -> None:
    head = build_head("pca", 4, 2)
    with pytest.raises(DaalmlError, match=r"features must have shape \(N, 4\), got \(10, 5\)"):
        init_linear_from_pca(head, torch.randn(10, 5))
    with pytest.raises(DaalmlError, match=r"got \(4,\)"):
        init_linear_from_pca(head, torch.randn(4))
    bad = torch.randn(10, 4)
    bad[3, 1] = float("nan")
    with pytest.raises(DaalmlError, match="NaN or infinite"):
        init_linear_from_pca(head, bad)
    with pytest.raises(DaalmlError, match=r"needs an nn\.Linear head, got Sequential"):
        init_linear_from_pca(build_head("paper", 4, 2), torch.randn(10, 4))  # type: ignore[arg-type]
    with pytest.raises(DaalmlError, match="needs a head with a bias"):
        init_linear_from_pca(nn.Linear(4, 2, bias=False), torch.randn(10, 4))


def test_pca_head_fit_pca_and_state_roundtrip() -> None:
    head = build_head("pca", 6, 2)
    assert isinstance(head, PCAHead)
    head.fit_pca(_anisotropic(30, 6))
    fresh = build_head("pca", 6, 2)
    fresh.load_state_dict(head.state_dict())
    assert bool(fresh.pca_fitted)
    torch.testing.assert_close(fresh.weight, head.weight)
