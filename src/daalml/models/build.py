"""`build_model(cfg)`: the backbone and head a config describes, frozen where it says."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daalml.models.backbones import Backbone, build_backbone, register_backbone
from daalml.models.embedder import EmbeddingModel, freeze_batchnorm, freeze_module
from daalml.models.heads import build_head
from daalml.models.stages import split_backbone

if TYPE_CHECKING:  # models know no config at run time: they read its attributes
    from daalml.config import Config


def _register_small_cnn(in_channels: int) -> None:
    """small_cnn trains from scratch: grey glyphs have one channel, photos three."""
    from daalml.models.small_cnn import SmallCNN

    register_backbone(
        "small_cnn", lambda *, pretrained: SmallCNN(in_channels=in_channels), replace=True
    )


def build_model(cfg: Config) -> EmbeddingModel:
    """Backbone + head as the config says (nothing is trained or fitted yet)."""
    _register_small_cnn(1 if cfg.data.dataset == "glyphs" else 3)
    backbone: Backbone = build_backbone(
        cfg.model.backbone, pretrained=cfg.model.pretrained, channels_last=cfg.model.channels_last
    )
    head = build_head(
        cfg.model.head,
        backbone.feature_dim,
        cfg.model.embedding_size,
        hidden_size=cfg.model.hidden_size,
    )
    if cfg.model.train_blocks:
        # the trunk before the last train_blocks stages is frozen; freeze_bn covers the rest
        for path in split_backbone(backbone, cfg.model.train_blocks).trunk.paths:
            freeze_module(backbone.body.get_submodule(path))
        if cfg.model.freeze_bn:
            freeze_batchnorm(backbone)
    elif cfg.model.freeze_backbone or cfg.train.cache_features:
        freeze_module(backbone)
    elif cfg.model.freeze_bn:
        freeze_batchnorm(backbone)
    return EmbeddingModel(backbone, head)
