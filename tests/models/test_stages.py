"""Backbone stage splits (model.train_blocks): trunk + top = backbone, forward and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from daalml.config import config_from_dict
from daalml.errors import DaalmlError
from daalml.models.backbones import build_backbone
from daalml.models.build import build_model
from daalml.models.stages import num_stages, split_backbone

TINY = ("small_cnn", "timm:test_efficientnet", "timm:test_resnet")


def _backbone(name: str):
    torch.manual_seed(0)
    return build_backbone(name, pretrained=False).eval()


@pytest.mark.parametrize(
    ("name", "stages"),
    [("small_cnn", 4), ("timm:test_efficientnet", 5), ("timm:test_resnet", 4), ("vgg19", 5)],
)
def test_trunk_then_top_is_the_backbone(name: str, stages: int) -> None:
    backbone = _backbone(name)
    assert num_stages(backbone) == stages
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = backbone(images)
        for blocks in (1, stages, -1):
            split = split_backbone(backbone, blocks)
            activations = split.trunk(images)
            assert activations.ndim == 4
            assert torch.equal(split.top(activations), full)


def test_lite0_and_resnet50_stage_counts() -> None:
    assert num_stages(_backbone("efficientnet_lite0")) == 7
    assert num_stages(_backbone("resnet50")) == 4
    split = split_backbone(_backbone("efficientnet_lite0"), 1)
    assert split.point == "efficientnet_lite0:1:blocks.6"
    assert split.top.paths == ("blocks.6", "conv_head", "bn2", "global_pool")


def test_top_weights_carry_the_backbone_names() -> None:
    backbone = _backbone("timm:test_efficientnet")
    top = split_backbone(backbone, 2).top
    names = set(backbone.state_dict())
    assert set(top.state_dict()) <= names
    assert any(name.startswith("body.blocks.3.") for name in top.state_dict())
    assert not any(name.startswith("body.blocks.2.") for name in top.state_dict())


def _config(backbone: str, **model) -> object:
    return config_from_dict(
        {
            "model": {"backbone": backbone, "pretrained": False, "head": "linear", **model},
            "data": {"dataset": "folder"},
        }
    )


@pytest.mark.parametrize("name", ["timm:test_efficientnet", "small_cnn"])
def test_cached_and_uncached_top_give_same_forward_and_gradients(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(_config(name, train_blocks=2, embedding_size=8)).train()
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    target = torch.randn(6, 8, generator=torch.Generator().manual_seed(3))
    split = split_backbone(model.backbone, 2)
    trainable = [p for p in model.parameters() if p.requires_grad]
    trunk_params = [
        p
        for path in split.trunk.paths
        for p in model.backbone.body.get_submodule(path).parameters()
    ]
    assert trunk_params and not any(p.requires_grad for p in trunk_params)

    def grads(embed) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        out = embed()
        F.mse_loss(out, target).backward()
        return out.detach(), [p.grad.clone() for p in trainable]

    out_full, grad_full = grads(lambda: model(images))
    with torch.no_grad():
        cached = split.trunk(images)  # what the activation cache stores (float32 here)
    out_top, grad_top = grads(lambda: model.embed_features(split.top(cached)))
    torch.testing.assert_close(out_top, out_full, rtol=0, atol=1e-6)
    assert len(grad_full) == len(grad_top) > 2  # head and top stages
    for full, top in zip(grad_full, grad_top, strict=True):
        torch.testing.assert_close(top, full, rtol=1e-5, atol=1e-7)


def test_freeze_bn_covers_the_trainable_stages() -> None:
    model = build_model(_config("timm:test_efficientnet", train_blocks=1))
    bns = [
        m
        for m in split_backbone(model.backbone, 1).top.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    ]
    assert bns and not any(p.requires_grad for m in bns for p in m.parameters())
    free = build_model(_config("timm:test_efficientnet", train_blocks=1, freeze_bn=False))
    bns = [
        m
        for m in split_backbone(free.backbone, 1).top.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    ]
    assert all(p.requires_grad for m in bns for p in m.parameters())


def test_unsupported_backbone_is_one_line_error() -> None:
    with pytest.raises(DaalmlError) as info:
        build_model(_config("timm:test_vit", train_blocks=1))
    message = str(info.value)
    assert "\n" not in message
    assert "model.train_blocks=1" in message and "timm:test_vit" in message
    assert "efficientnet_lite0" in message and "vgg19" in message and "resnet50" in message


def test_too_many_stages_is_one_line_error() -> None:
    with pytest.raises(DaalmlError) as info:
        build_model(_config("small_cnn", train_blocks=5))
    message = str(info.value)
    assert "\n" not in message and "model.train_blocks=5" in message and "only 4 stages" in message


def test_train_blocks_zero_keeps_todays_freezing() -> None:
    frozen = build_model(
        config_from_dict(
            {"model": {"backbone": "small_cnn", "pretrained": False, "freeze_backbone": True}}
        )
    )
    assert not any(p.requires_grad for p in frozen.backbone.parameters())


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"model.train_blocks": -2}, "model.train_blocks: must be >= -1"),
        ({"model.train_blocks": 1, "model.freeze_backbone": True}, "contradicts"),
        ({"model.train_blocks": -1, "train.cache_features": True}, "no frozen trunk"),
        ({"data.cached_views": 0}, "data.cached_views"),
        ({"train.cache_dtype": "bfloat16"}, "train.cache_dtype"),
    ],
)
def test_config_rejects_bad_settings(settings: dict, words: str) -> None:
    with pytest.raises(DaalmlError, match=words):
        config_from_dict(settings)
