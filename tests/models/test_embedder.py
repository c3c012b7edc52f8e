"""EmbeddingModel and the freezing helpers."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from daalml.errors import DaalmlError
from daalml.models.backbones import Backbone
from daalml.models.embedder import EmbeddingModel, freeze_batchnorm, freeze_module, is_frozen
from daalml.models.heads import build_head


def _backbone() -> Backbone:
    torch.manual_seed(0)
    body = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
    )
    return Backbone(body, name="tiny", feature_dim=8)


def _images(seed: int = 1) -> torch.Tensor:
    return torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(seed)) * 3 + 1


def _bn_stats(m: nn.Module) -> list[torch.Tensor]:
    return [
        t.clone()
        for b in m.modules()
        if isinstance(b, nn.BatchNorm2d)
        for t in (b.running_mean, b.running_var)
    ]


def test_forward_is_normalised_head_of_backbone() -> None:
    backbone = _backbone().eval()
    head = build_head("linear", 8, 5)
    model = EmbeddingModel(backbone, head).eval()
    images = _images()
    out = model(images)
    assert out.shape == (4, 5)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(out, F.normalize(head(backbone(images)), dim=1))
    raw = EmbeddingModel(backbone, head, normalize=False).eval()
    torch.testing.assert_close(raw(images), head(backbone(images)))
    assert not torch.allclose(raw(images).norm(dim=1), torch.ones(4))


def test_head_only_model_embeds_features() -> None:
    head = build_head("paper", 8, 4, hidden_size=16)
    model = EmbeddingModel(None, head)
    features = torch.randn(6, 8)
    torch.testing.assert_close(model.embed_features(features), F.normalize(head(features), dim=1))
    with pytest.raises(DaalmlError, match="no backbone: it embeds cached features"):
        model(_images())


def test_frozen_backbone_runs_without_grad_and_head_trains() -> None:
    backbone = _backbone()
    model = EmbeddingModel(backbone, build_head("linear", 8, 3))
    grad_modes: list[bool] = []
    backbone.register_forward_hook(lambda m, i, o: grad_modes.append(torch.is_grad_enabled()))
    model(_images()).sum().backward()
    assert grad_modes == [True]
    assert backbone.body[0].weight.grad is not None

    freeze_module(backbone)
    model.zero_grad(set_to_none=True)
    model.train()
    model(_images()).pow(2).sum().backward()
    assert grad_modes == [True, False]
    assert backbone.body[0].weight.grad is None
    assert model.head.weight.grad is not None


def test_freeze_module_stays_in_eval_after_train() -> None:
    backbone = _backbone()
    model = EmbeddingModel(backbone, build_head("linear", 8, 3))
    freeze_module(backbone)
    assert not any(p.requires_grad for p in backbone.parameters())
    assert is_frozen(backbone)
    before = _bn_stats(backbone)
    model.train()
    first, second = model(_images()), model(_images())
    assert not backbone.training and not backbone.body[3].training
    torch.testing.assert_close(first, second)  # dropout is off
    for old, new in zip(before, _bn_stats(backbone), strict=True):
        torch.testing.assert_close(old, new)


def test_freeze_batchnorm_keeps_statistics_but_trains_the_rest() -> None:
    backbone = _backbone()
    model = EmbeddingModel(backbone, build_head("linear", 8, 3))
    freeze_batchnorm(model)
    bn = backbone.body[1]
    assert not bn.weight.requires_grad and not bn.bias.requires_grad
    assert backbone.body[0].weight.requires_grad
    before = _bn_stats(model)
    model.train()
    assert bn.training  # train() flips the flag; the hook resets it at forward time
    model(_images()).sum().backward()
    assert not bn.training
    assert backbone.body[0].weight.grad is not None
    assert bn.weight.grad is None
    assert backbone.body[3].training  # only BN layers are affected
    for old, new in zip(before, _bn_stats(model), strict=True):
        torch.testing.assert_close(old, new)


def test_without_freezing_statistics_do_change() -> None:
    backbone = _backbone()
    before = _bn_stats(backbone)
    backbone.train()(_images())
    assert not torch.allclose(before[0], _bn_stats(backbone)[0])


def test_freezing_is_idempotent_and_survives_copies() -> None:
    backbone = _backbone()
    freeze_module(backbone)
    freeze_module(backbone)
    freeze_batchnorm(backbone)
    freeze_batchnorm(backbone)
    assert len(backbone._forward_pre_hooks) == 1
    assert len(backbone.body[1]._forward_pre_hooks) == 1
    buffer = io.BytesIO()
    torch.save(backbone, buffer)
    buffer.seek(0)
    for clone in (copy.deepcopy(backbone), torch.load(buffer, weights_only=False)):
        before = _bn_stats(clone)
        clone.train()(_images())
        assert not clone.training
        torch.testing.assert_close(before[0], _bn_stats(clone)[0])


def test_is_frozen_false_for_plain_module() -> None:
    assert not is_frozen(_backbone())
