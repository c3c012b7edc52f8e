"""Embedding heads that map backbone features to the embedding space.

``paper``: Linear(in, hidden) -> Swish -> Linear(hidden, emb), the head of the DAAL paper.
``linear``: one Linear layer. ``pca``: one Linear layer whose weights are set from training
features with :func:`init_linear_from_pca` before training, so training starts from the
centred PCA projection instead of a random one. More names are added with :func:`register_head`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from sklearn.decomposition import PCA
from torch import nn

from daalml.errors import DaalmlError, check_registration

HEADS: tuple[str, ...] = ("paper", "linear", "pca")


class PCAHead(nn.Linear):
    """A Linear head that records (in its state dict) whether PCA initialisation was done."""

    pca_fitted: torch.Tensor

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("pca_fitted", torch.tensor(False))

    def fit_pca(self, features: torch.Tensor) -> None:
        """Initialise from features (N, in_features); see :func:`init_linear_from_pca`."""
        init_linear_from_pca(self, features)


def _check_positive(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DaalmlError(f"head {what} must be a positive integer, got {value!r}")


class HeadFactory(Protocol):
    """Builds a head mapping ``in_dim``-d features to ``embedding_size``-d embeddings."""

    def __call__(self, in_dim: int, embedding_size: int, *, hidden_size: int) -> nn.Module: ...


def _paper(in_dim: int, embedding_size: int, *, hidden_size: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(in_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, embedding_size)
    )


def _linear(in_dim: int, embedding_size: int, *, hidden_size: int) -> nn.Module:
    return nn.Linear(in_dim, embedding_size)


def _pca(in_dim: int, embedding_size: int, *, hidden_size: int) -> nn.Module:
    return PCAHead(in_dim, embedding_size)


_REGISTRY: dict[str, HeadFactory] = {"paper": _paper, "linear": _linear, "pca": _pca}


def register_head(name: str, factory: HeadFactory, *, replace: bool = False) -> None:
    """Make ``build_head(name, ...)`` (and ``model.head: name`` in a config) use ``factory``."""
    check_registration("head", name, _REGISTRY, replace=replace)
    _REGISTRY[name] = factory


def available_heads() -> tuple[str, ...]:
    """Registered head names, the built-in :data:`HEADS` first."""
    return tuple(_REGISTRY)


def build_head(
    kind: str, in_dim: int, embedding_size: int = 512, *, hidden_size: int = 1024
) -> nn.Module:
    """Build the head ``kind`` (see :func:`available_heads`) for ``in_dim``-d features."""
    _check_positive(in_dim, "in_dim")
    _check_positive(embedding_size, "embedding_size")
    _check_positive(hidden_size, "hidden_size")
    if kind not in _REGISTRY:
        raise DaalmlError(f"unknown head {kind!r}: choose one of {', '.join(available_heads())}")
    return _REGISTRY[kind](in_dim, embedding_size, hidden_size=hidden_size)


def init_linear_from_pca(head: nn.Linear, features: torch.Tensor) -> None:
    """Set ``head`` to the centred PCA projection of ``features`` (N, in_features).

    Weight rows become the top ``out_features`` principal directions (unit length, no
    whitening) and ``bias = -W @ mean``, so ``head(x) = W (x - mean)``. Uses scikit-learn's
    exact PCA in float64; directions carry sklearn's deterministic sign convention.
    """
    if not isinstance(head, nn.Linear):
        raise DaalmlError(f"PCA initialisation needs an nn.Linear head, got {type(head).__name__}")
    if features.ndim != 2 or features.shape[1] != head.in_features:
        raise DaalmlError(
            f"PCA initialisation: features must have shape (N, {head.in_features}), "
            f"got {tuple(features.shape)}"
        )
    if head.bias is None:
        raise DaalmlError("PCA initialisation needs a head with a bias (it holds -W @ mean)")
    n, dim = features.shape
    k = head.out_features
    if k > min(n, dim):
        raise DaalmlError(
            f"PCA initialisation: embedding_size {k} exceeds min(N={n}, feature_dim={dim})"
        )
    data = features.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(data).all():
        raise DaalmlError("PCA initialisation: features contain NaN or infinite values")
    pca = PCA(n_components=k, svd_solver="full").fit(data)
    weight = torch.from_numpy(pca.components_)
    bias = -weight @ torch.from_numpy(pca.mean_)
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight))
        head.bias.copy_(bias.to(head.bias))
    if isinstance(head, PCAHead):
        head.pca_fitted.fill_(True)
