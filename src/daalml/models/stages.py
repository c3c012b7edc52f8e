"""Split a backbone into a frozen trunk and its last N trainable stages (``model.train_blocks``).

One "stage" is, per backbone:

- ``efficientnet_lite0`` and timm EfficientNets (``timm:efficientnet_b0``, ...): one entry of
  ``blocks`` (lite0 has 7; the last one, with the 1x1 head convolution ``conv_head``/``bn2``
  that follows it, is stage 7);
- timm ResNets (``timm:resnet18``, ...) and torchvision ``resnet50``: ``layer1`` .. ``layer4``;
- ``vgg19``: one of the 5 convolution blocks, each ending in its max-pooling;
- ``small_cnn`` (the glyph demo's net): one of its 4 conv-BN-ReLU blocks.

The stem (the layers before the first stage) belongs to the trunk; the layers after the last
stage (head convolution, pooling) belong to the top. ``train_blocks = -1`` trains everything,
the stem included. The trunk and the top share their modules with the backbone, and the top's
state-dict names are the backbone's (``body.blocks.6...``), so weights trained on cached
activations load straight into the whole backbone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from daalml.errors import DaalmlError
from daalml.models.backbones import TIMM_PREFIX, Backbone, set_memory_format

SUPPORTED = (
    "efficientnet_lite0, resnet50, vgg19, small_cnn, timm:<EfficientNet> "
    "(e.g. timm:efficientnet_b0) and timm:<ResNet> (e.g. timm:resnet50)"
)


@dataclass(frozen=True)
class StagePlan:
    """Dotted paths (inside ``Backbone.body``) of the stem, of each stage, and of the tail."""

    stem: tuple[str, ...]
    stages: tuple[tuple[str, ...], ...]
    tail: tuple[str, ...]


def _sequence(prefix: str, start: int, stop: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(start, stop))


def _vgg_plan(features: nn.Sequential, prefix: str, tail: tuple[str, ...]) -> StagePlan:
    """VGG: a stage ends at each max-pooling of ``features``."""
    stages, start = [], 0
    for i, layer in enumerate(features):
        if isinstance(layer, nn.MaxPool2d):
            stages.append(_sequence(prefix, start, i + 1))
            start = i + 1
    if start != len(features):
        stages.append(_sequence(prefix, start, len(features)))
    return StagePlan(stem=(), stages=tuple(stages), tail=tail)


def _timm_plan(body: nn.Module) -> StagePlan | None:
    try:
        from timm.models.efficientnet import EfficientNet
        from timm.models.resnet import ResNet
    except ImportError:  # pragma: no cover - timm is a dependency of every timm backbone
        return None
    if isinstance(body, EfficientNet):
        n = len(body.blocks)
        return StagePlan(
            stem=("conv_stem", "bn1"),
            stages=tuple((f"blocks.{i}",) for i in range(n)),
            tail=("conv_head", "bn2", "global_pool"),
        )
    if isinstance(body, ResNet):
        return StagePlan(
            stem=("conv1", "bn1", "act1", "maxpool"),
            stages=(("layer1",), ("layer2",), ("layer3",), ("layer4",)),
            tail=("global_pool",),
        )
    return None


def stage_plan(backbone: Backbone) -> StagePlan | None:
    """The stages of ``backbone``, or None when it has no stage split defined."""
    name, body = backbone.name, backbone.body
    if name == "efficientnet_lite0" or name.startswith(TIMM_PREFIX):
        return _timm_plan(body)
    if name == "resnet50":
        return StagePlan(
            stem=("conv1", "bn1", "relu", "maxpool"),
            stages=(("layer1",), ("layer2",), ("layer3",), ("layer4",)),
            tail=("avgpool",),
        )
    if name == "vgg19" and isinstance(body, nn.Sequential):
        return _vgg_plan(body[0], "0.", ("1", "2"))
    if name == "small_cnn" and isinstance(body, nn.Sequential):
        # [block, pool, block, pool, block, pool, block, avgpool, flatten]
        return StagePlan(
            stem=(), stages=(("0",), ("1", "2"), ("3", "4"), ("5", "6")), tail=("7", "8")
        )
    return None


def num_stages(backbone: Backbone) -> int:
    """How many stages ``backbone`` has (0 when it has no stage split)."""
    plan = stage_plan(backbone)
    return len(plan.stages) if plan is not None else 0


def _split_paths(backbone: Backbone, train_blocks: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(trunk paths, top paths) for the last ``train_blocks`` stages; checked one-line errors."""
    plan = stage_plan(backbone)
    if plan is None:
        raise DaalmlError(
            f"model.train_blocks={train_blocks}: backbone {backbone.name!r} has no stages "
            f"defined; supported: {SUPPORTED}"
        )
    count = len(plan.stages)
    if train_blocks < -1 or train_blocks == 0:
        raise DaalmlError(f"model.train_blocks={train_blocks}: a split needs -1 or 1..{count}")
    if train_blocks > count:
        raise DaalmlError(
            f"model.train_blocks={train_blocks}: backbone {backbone.name} has only {count} "
            "stages (use 1.."
            f"{count}, or -1 for all)"
        )
    if train_blocks == -1:
        return (), plan.stem + sum(plan.stages, ()) + plan.tail
    cut = count - train_blocks
    trunk = plan.stem + sum(plan.stages[:cut], ())
    top = sum(plan.stages[cut:], ()) + plan.tail
    return trunk, top


def _get(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path)


def _tree(root: nn.Module, paths: tuple[str, ...]) -> nn.Module:
    """A container holding ``root``'s modules at ``paths`` under the same dotted names."""
    tree = nn.Module()
    for path in paths:
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            if not hasattr(node, part):
                node.add_module(part, nn.Module())
            node = getattr(node, part)
        node.add_module(leaf, _get(root, path))
    return tree


class BackbonePart(nn.Module):
    """Runs some of a backbone's modules in order; state-dict names are the backbone's.

    ``pooled`` parts (the top) flatten their output to (B, feature_dim) like the backbone;
    the trunk returns the activation map (B, C, H, W) that enters the first trainable stage.
    """

    def __init__(
        self, backbone: Backbone, paths: tuple[str, ...], *, pooled: bool, point: str
    ) -> None:
        super().__init__()
        self.body = _tree(backbone.body, paths)
        self.paths = paths
        self.pooled = pooled
        self.point = point  # the split point, e.g. "efficientnet_lite0:1:blocks.6"
        self.name = backbone.name
        self.feature_dim = backbone.feature_dim
        self.channels_last = backbone.channels_last

    def set_channels_last(self, enabled: bool = True) -> BackbonePart:
        """Switch the weights (and later inputs) to channels-last or back; returns ``self``."""
        self.channels_last = set_memory_format(self.body, enabled)
        return self

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        for path in self.paths:
            x = _get(self.body, path)(x)
        return x.flatten(1) if self.pooled else x

    def extra_repr(self) -> str:
        return f"point={self.point!r}, pooled={self.pooled}"


@dataclass
class BackboneSplit:
    """The frozen trunk (images -> activations) and the trainable top (activations -> features)."""

    trunk: BackbonePart
    top: BackbonePart
    train_blocks: int

    @property
    def point(self) -> str:
        """A stable name of the split point, for cache keys."""
        return self.top.point


def split_backbone(backbone: Backbone, train_blocks: int) -> BackboneSplit:
    """Trunk and top of ``backbone`` when its last ``train_blocks`` stages train (-1: all)."""
    trunk_paths, top_paths = _split_paths(backbone, train_blocks)
    first = top_paths[0] if top_paths else "-"
    point = f"{backbone.name}:{train_blocks}:{first}"
    trunk = BackbonePart(backbone, trunk_paths, pooled=False, point=point)
    top = BackbonePart(backbone, top_paths, pooled=True, point=point)
    return BackboneSplit(trunk=trunk, top=top, train_blocks=train_blocks)
