"""The embedding model (backbone -> head -> L2 normalisation) and freezing helpers.

Freezing uses a forward pre-hook that puts the module back in eval mode right before each of
its forward calls. So a frozen part stays frozen after ``model.train()`` (which Lightning calls
every epoch), and the hook survives ``copy.deepcopy`` and pickling, unlike an overridden
``train`` method. ``module.training`` may read True between ``train()`` and the next forward;
the forward itself always runs in eval mode.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from daalml.errors import DaalmlError
from daalml.models.backbones import Backbone


def _stay_in_eval(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook: run this module (and its children) in eval mode."""
    if module.training:
        module.eval()


def _keep_eval(module: nn.Module) -> None:
    module.eval()
    if _stay_in_eval not in module._forward_pre_hooks.values():
        module.register_forward_pre_hook(_stay_in_eval)


def freeze_module(m: nn.Module) -> None:
    """No gradients for any parameter of ``m``, and ``m`` always runs in eval mode."""
    m.requires_grad_(False)
    _keep_eval(m)


def freeze_batchnorm(m: nn.Module) -> None:
    """Every BatchNorm layer in ``m``: no gradients, running statistics never updated."""
    for module in m.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.requires_grad_(False)
            _keep_eval(module)


def is_frozen(m: nn.Module) -> bool:
    """Whether ``m`` itself carries the stay-in-eval hook of the freeze helpers."""
    return _stay_in_eval in m._forward_pre_hooks.values()


class EmbeddingModel(nn.Module):
    """Images -> backbone features -> head -> embeddings (unit length when ``normalize``).

    ``backbone=None`` makes a head-only model for cached features (:meth:`embed_features`).
    When no backbone parameter needs a gradient, the backbone runs under ``torch.no_grad`` to
    save the activation memory.
    """

    def __init__(
        self, backbone: Backbone | None, head: nn.Module, *, normalize: bool = True
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.normalize = normalize

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, embedding_size) of images (B, 3, H, W)."""
        if self.backbone is None:
            raise DaalmlError(
                "EmbeddingModel has no backbone: it embeds cached features (embed_features)"
            )
        needs_grad = images.requires_grad or any(
            p.requires_grad for p in self.backbone.parameters()
        )
        with torch.set_grad_enabled(torch.is_grad_enabled() and needs_grad):
            features = self.backbone(images)
        return self.embed_features(features)

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, embedding_size) of backbone features (B, feature_dim): head only."""
        embeddings = self.head(features)
        return F.normalize(embeddings, p=2, dim=1) if self.normalize else embeddings
