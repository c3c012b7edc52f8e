"""`build_model(cfg)`: the backbone and head a config describes, frozen where it says."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daalml.models.backbones import Backbone, build_backbone
from daalml.models.embedder import EmbeddingModel, freeze_batchnorm, freeze_module
from daalml.models.heads import build_head
from daalml.models.stages import split_backbone

if TYPE_CHECKING:  # models know no config at run time: they read its attributes
    from daalml.config import Config


def build_model(cfg: Config) -> EmbeddingModel:
    """Backbone + head as the config says (nothing is trained or fitted yet).

    The backbone's input takes the dataset's image channels (``cfg.data.channels``, from the
    dataset registry), for the backbones whose factory accepts them.
    """
    backbone: Backbone = build_backbone(
        cfg.model.backbone,
        pretrained=cfg.model.pretrained,
        channels_last=cfg.model.channels_last,
        in_channels=cfg.data.channels,
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
