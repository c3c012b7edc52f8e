"""Train/eval transforms and their stable descriptions used as cache keys."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import v2

from daalml.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    describe_transform,
    eval_transform,
    train_transform,
)
from daalml.errors import DaalmlError


def _image(width: int = 60, height: int = 40) -> Image.Image:
    return Image.effect_noise((width, height), 40).convert("RGB")


def test_train_transform_output() -> None:
    torch.manual_seed(0)
    out = train_transform(32)(_image())
    assert out.shape == (3, 32, 32)
    assert out.dtype == torch.float32
    steps = train_transform(32).transforms
    assert [type(s).__name__ for s in steps] == [
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "ToTensor",
        "Normalize",
    ]


def test_train_transform_is_random() -> None:
    torch.manual_seed(0)
    t = train_transform(16)
    image = _image()
    assert not torch.equal(t(image), t(image))


def test_eval_transform_resizes_short_side_then_center_crops() -> None:
    image = Image.new("RGB", (80, 40), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 40))  # a blue left quarter, cut away by the centre crop
    t = eval_transform(image_size=16, resize=20, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out = t(image)
    assert out.shape == (3, 16, 16)
    assert torch.allclose(out[0], torch.ones(16, 16))
    assert torch.equal(out, t(image))


def test_normalisation_uses_given_statistics() -> None:
    image = Image.new("RGB", (8, 8), (255, 255, 255))
    out = eval_transform(8, 8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))(image)
    assert torch.allclose(out[:, 0, 0], torch.tensor([2.0, 1.0, 0.5]))
    default = eval_transform(8, 8)(image)
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(default[:, 0, 0], expected)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: train_transform(0), r"image_size must be a positive integer, got 0"),
        (lambda: eval_transform(image_size=224.0), r"image_size must be a positive integer"),
        (lambda: eval_transform(224, resize=200), r"resize \(200\) must be at least image_size"),
        (lambda: eval_transform(resize=-1), r"resize must be a positive integer, got -1"),
        (lambda: train_transform(mean=(0.5,)), r"mean and std need 3 values \(RGB\)"),
        (lambda: eval_transform(std=(0.2, 0.0, 0.2)), r"std values must be positive"),
    ],
)
def test_invalid_arguments(call: object, message: str) -> None:
    with pytest.raises(DaalmlError, match=message):
        call()  # type: ignore[operator]


def test_describe_is_stable_and_distinguishes_settings() -> None:
    a = describe_transform(eval_transform(224, 256))
    assert a == describe_transform(eval_transform(224, 256))
    assert "\n" not in a
    assert a.startswith("Compose[Resize(size=256")
    assert "CenterCrop(size=(224, 224))" in a
    others = {
        describe_transform(eval_transform(224, 288)),
        describe_transform(eval_transform(192, 256)),
        describe_transform(eval_transform(224, 256, mean=(0.5, 0.5, 0.5))),
        describe_transform(train_transform(224)),
    }
    assert a not in others
    assert len(others) == 4
    assert describe_transform(None) == "None"


def _to_gray(image: Image.Image) -> Image.Image:
    return image.convert("L")


class _Opaque:
    def __call__(self, image: Image.Image) -> Image.Image:
        return image


def test_describe_lambda_by_name_and_refuses_memory_addresses() -> None:
    text = describe_transform(T.Compose([T.Lambda(_to_gray), T.ToTensor()]))
    assert text == f"Compose[Lambda({__name__}._to_gray); ToTensor()]"
    assert describe_transform(v2.Compose([v2.Lambda(_to_gray)])).startswith("Compose[Lambda(")
    with pytest.raises(DaalmlError, match=r"cannot describe transform _Opaque for caching"):
        describe_transform(T.Compose([_Opaque()]))
