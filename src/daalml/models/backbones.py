"""Image backbones that return one pooled feature vector per image.

Built in: ``vgg19`` (torchvision conv features + global average pooling, 512-d: the paper's
head sits on top of this), ``resnet50`` (torchvision, fc removed, 2048-d),
``efficientnet_lite0`` (timm ``tf_efficientnet_lite0`` with offline ImageNet weights, 1280-d)
and ``timm:<name>`` for any timm model. More names are added with :func:`register_backbone`.
With ``pretrained=True`` the torchvision/timm weights are downloaded by those libraries;
``efficientnet_lite0`` never downloads.
"""

from __future__ import annotations

import inspect
from typing import Protocol

import torch
from torch import nn
from torchvision import models as tvm

from daalml.errors import DaalmlError, check_registration
from daalml.models.lite0 import LITE0_MEAN, LITE0_STD, build_lite0

MeanStd = tuple[float, float, float]
IMAGENET_MEAN: MeanStd = (0.485, 0.456, 0.406)
IMAGENET_STD: MeanStd = (0.229, 0.224, 0.225)
TIMM_PREFIX = "timm:"
BACKBONES: tuple[str, ...] = ("vgg19", "resnet50", "efficientnet_lite0")


def _per_channel(
    values: tuple[float, ...] | None,
    default: tuple[float, ...] | None,
    channels: int,
    name: str,
    what: str,
) -> tuple[float, ...]:
    """One float per input channel (``default``, or 0.5 each, when not given)."""
    if values is None:
        values = default if default is not None else (0.5,) * channels
    if len(values) != channels:
        raise DaalmlError(
            f"backbone {name}: {what} has {len(values)} values for {channels} channels"
        )
    return tuple(float(v) for v in values)


def set_memory_format(body: nn.Module, channels_last: bool) -> bool:
    """Channels-last weights (faster convolutions on CPU) or contiguous ones; returns the flag."""
    body.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return bool(channels_last)


class Backbone(nn.Module):
    """Wraps a network ``body`` mapping images (B, C, H, W) to pooled features (B, feature_dim).

    ``mean``/``std`` are the per-channel normalisation the weights expect (images in [0, 1]
    are normalised by the data pipeline, not here): one value per input channel, ImageNet's
    by default for 3 channels and 0.5 otherwise. With ``channels_last`` the body's weights
    and every input use the channels-last memory format, which is faster on CPU.
    """

    def __init__(
        self,
        body: nn.Module,
        *,
        name: str,
        feature_dim: int,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        in_chans: int = 3,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.body = body
        self.name = name
        self.feature_dim = int(feature_dim)
        self.in_chans = int(in_chans)
        rgb = self.in_chans == 3
        self.mean = _per_channel(mean, IMAGENET_MEAN if rgb else None, self.in_chans, name, "mean")
        self.std = _per_channel(std, IMAGENET_STD if rgb else None, self.in_chans, name, "std")
        self.channels_last = False
        self.set_channels_last(channels_last)

    def set_channels_last(self, enabled: bool = True) -> Backbone:
        """Switch the weights (and later inputs) to channels-last or back; returns ``self``."""
        self.channels_last = set_memory_format(self.body, enabled)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, feature_dim) of images (B, in_chans, H, W)."""
        if images.ndim != 4 or images.shape[1] != self.in_chans:
            raise DaalmlError(
                f"backbone {self.name}: images must have shape (B, {self.in_chans}, H, W), "
                f"got {tuple(images.shape)}"
            )
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.body(images).flatten(1)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, feature_dim={self.feature_dim}"


class BackboneFactory(Protocol):
    """Builds a backbone; must not download anything when ``pretrained`` is False.

    A factory that also takes ``in_channels`` is given the dataset's image channels (1 for
    greyscale renderings, 3 for photos); one that does not builds its own input layer.
    """

    def __call__(self, *, pretrained: bool) -> Backbone: ...


def _vgg19(*, pretrained: bool) -> Backbone:
    weights = tvm.VGG19_Weights.IMAGENET1K_V1 if pretrained else None
    net = tvm.vgg19(weights=weights)
    body = nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    return Backbone(body, name="vgg19", feature_dim=512)


def _resnet50(*, pretrained: bool) -> Backbone:
    weights = tvm.ResNet50_Weights.IMAGENET1K_V1 if pretrained else None
    net = tvm.resnet50(weights=weights)
    net.fc = nn.Identity()
    return Backbone(net, name="resnet50", feature_dim=2048)


def _efficientnet_lite0(*, pretrained: bool) -> Backbone:
    body = build_lite0(pretrained=pretrained, num_classes=0)
    return Backbone(
        body, name="efficientnet_lite0", feature_dim=1280, mean=LITE0_MEAN, std=LITE0_STD
    )


def _timm(model_name: str, *, pretrained: bool) -> Backbone:
    """Any timm model with its classifier removed; normalisation from timm's data config."""
    full_name = TIMM_PREFIX + model_name
    try:
        import timm
    except ImportError as err:
        raise DaalmlError(f"backbone {full_name} needs timm (pip install 'daalml[timm]')") from err
    if not model_name or not timm.is_model(model_name):
        raise DaalmlError(f"backbone {full_name}: timm has no model named {model_name!r}")
    try:
        model = timm.create_model(model_name, pretrained=pretrained, num_classes=0)
    except Exception as err:  # hub/network/file errors come in many types
        if not pretrained:
            raise
        raise DaalmlError(
            f"backbone {full_name}: could not load pretrained weights ({err})"
        ) from err
    config = timm.data.resolve_model_data_config(model)
    feature_dim = getattr(model, "head_hidden_size", None) or model.num_features
    return Backbone(
        model,
        name=full_name,
        feature_dim=int(feature_dim),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        in_chans=int(config["input_size"][0]),
    )


def _small_cnn(*, pretrained: bool, in_channels: int = 3) -> Backbone:
    """The glyph demo's net, trained from scratch (``pretrained`` has nothing to load)."""
    from daalml.models.small_cnn import SmallCNN  # it subclasses Backbone: imported late

    return SmallCNN(in_channels=in_channels)


_REGISTRY: dict[str, BackboneFactory] = {
    "vgg19": _vgg19,
    "resnet50": _resnet50,
    "efficientnet_lite0": _efficientnet_lite0,
    "small_cnn": _small_cnn,
}


def register_backbone(name: str, factory: BackboneFactory, *, replace: bool = False) -> None:
    """Make ``build_backbone(name)`` call ``factory(pretrained=...)``."""
    rule = "empty, padded or 'timm:' prefixed"
    valid = not name.startswith(TIMM_PREFIX)
    check_registration("backbone", name, _REGISTRY, replace=replace, valid=valid, rule=rule)
    _REGISTRY[name] = factory


def available_backbones() -> tuple[str, ...]:
    """Registered names (built-ins first); ``timm:<name>`` is accepted on top of these."""
    return tuple(_REGISTRY)


def _takes_channels(factory: BackboneFactory) -> bool:
    try:
        return "in_channels" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        return False


def build_backbone(
    name: str, *, pretrained: bool = True, channels_last: bool = False, in_channels: int = 3
) -> Backbone:
    """Build the backbone called ``name`` (see :func:`available_backbones` and ``timm:<name>``).

    ``in_channels`` reaches the factories that take it (see :class:`BackboneFactory`).
    """
    if name.startswith(TIMM_PREFIX):
        backbone = _timm(name[len(TIMM_PREFIX) :], pretrained=pretrained)
    elif name in _REGISTRY:
        factory = _REGISTRY[name]
        if _takes_channels(factory):
            backbone = factory(pretrained=pretrained, in_channels=in_channels)  # type: ignore[call-arg]
        else:
            backbone = factory(pretrained=pretrained)
    else:
        choices = ", ".join(available_backbones())
        raise DaalmlError(f"unknown backbone {name!r}: choose one of {choices} or timm:<name>")
    if not isinstance(backbone, Backbone):
        raise DaalmlError(f"backbone {name!r}: factory returned {type(backbone).__name__}")
    if channels_last:
        backbone.set_channels_last(True)
    return backbone
