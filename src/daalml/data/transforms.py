"""The standard DML image transforms (torchvision) and a stable text form for cache keys.

Training uses RandomResizedCrop + horizontal flip; evaluation resizes the short side and takes a
centre crop, as in the DML literature (256 -> 224 for ImageNet-pretrained backbones).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torchvision import transforms as T

from daalml.errors import DaalmlError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check(name: str, value: int) -> None:
    """Sizes come from configs: name the key when one is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DaalmlError(f"{name} must be a positive integer, got {value!r}")


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> None:
    """Mean and std need one value per RGB channel, and std must be positive."""
    if len(mean) != 3 or len(std) != 3:
        raise DaalmlError(f"mean and std need 3 values (RGB), got {list(mean)} and {list(std)}")
    if any(s <= 0 for s in std):
        raise DaalmlError(f"std values must be positive, got {list(std)}")


def train_transform(
    image_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """Random resized crop to ``image_size``, random horizontal flip, tensor, normalisation."""
    _check("image_size", image_size)
    _check_stats(mean, std)
    return T.Compose(
        [
            T.RandomResizedCrop(image_size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(list(mean), list(std)),
        ]
    )


def eval_transform(
    image_size: int = 224,
    resize: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """Resize the short side to ``resize``, centre-crop ``image_size``, tensor, normalisation."""
    _check("image_size", image_size)
    _check("resize", resize)
    if resize < image_size:
        raise DaalmlError(f"resize ({resize}) must be at least image_size ({image_size})")
    _check_stats(mean, std)
    return T.Compose(
        [
            T.Resize(resize),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(list(mean), list(std)),
        ]
    )


def describe_transform(transform: Callable[..., object] | None) -> str:
    """A one-line, run-independent description of ``transform``, usable as a cache key.

    Compositions are described step by step; a ``Lambda`` by its function's qualified name.
    Raises if the description would hold a memory address (it would change between runs).
    """
    if transform is None:
        return "None"
    kind = type(transform).__name__  # torchvision v1 and v2 share these class names
    steps = getattr(transform, "transforms", None)
    if kind == "Compose" and isinstance(steps, (list, tuple)):
        return f"Compose[{'; '.join(describe_transform(step) for step in steps)}]"
    function = getattr(transform, "lambd", None)
    if kind == "Lambda" and callable(function):
        return f"Lambda({function.__module__}.{function.__qualname__})"
    text = " ".join(repr(transform).split())
    if " at 0x" in text:
        raise DaalmlError(
            f"cannot describe transform {type(transform).__name__} for caching: its repr "
            "holds a memory address; give it a __repr__ that states its parameters"
        )
    return text
