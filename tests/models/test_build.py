"""build_model: registered backbones and heads, named in a config, are validated and built."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from daalml.config import config_from_dict
from daalml.errors import DaalmlError
from daalml.models import backbones, heads
from daalml.models.backbones import Backbone, register_backbone
from daalml.models.build import build_model
from daalml.models.heads import available_heads, register_head


@pytest.fixture
def registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test are dropped after it."""
    monkeypatch.setattr(backbones, "_REGISTRY", dict(backbones._REGISTRY))
    monkeypatch.setattr(heads, "_REGISTRY", dict(heads._REGISTRY))


def _config(backbone: str, head: str = "linear"):
    return config_from_dict(
        {
            "data": {"dataset": "folder", "root": "."},
            "model": {"backbone": backbone, "head": head, "embedding_size": 4, "pretrained": False},
        }
    )


def test_a_registered_backbone_and_head_are_named_in_a_config_and_built(registries) -> None:
    seen: list[bool] = []

    def tiny(*, pretrained: bool) -> Backbone:
        seen.append(pretrained)
        body = nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        return Backbone(body, name="tiny", feature_dim=5)

    with pytest.raises(DaalmlError, match=r"model\.backbone: expected one of"):
        _config("tiny")
    register_backbone("tiny", tiny)
    register_head("doubled", lambda in_dim, size, *, hidden_size: nn.Linear(in_dim, 2 * size))
    assert available_heads()[-1] == "doubled"
    model = build_model(_config("tiny", head="doubled"))
    assert seen == [False]
    assert model(torch.rand(2, 3, 12, 12)).shape == (2, 8)


def test_build_model_leaves_the_backbone_registry_as_it_was() -> None:
    before = dict(backbones._REGISTRY)
    build_model(
        config_from_dict({"data": {"dataset": "glyphs"}, "model": {"backbone": "small_cnn"}})
    )
    build_model(_config("small_cnn"))
    assert backbones._REGISTRY == before


def test_unknown_heads_are_refused_with_the_registered_names() -> None:
    with pytest.raises(DaalmlError, match="unknown head 'big': choose one of paper, linear, pca"):
        heads.build_head("big", 4, 2)
    with pytest.raises(DaalmlError, match="already registered"):
        register_head("paper", heads._paper)
