"""The loss registry: names, presets, published baseline values, overrides and errors."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from daalml.errors import DaalmlError
from daalml.losses.daal import DAALLoss
from daalml.losses.registry import (
    RECIPE_NOTES,
    MetricLoss,
    build_loss,
    loss_defaults,
    loss_names,
)

C, D = 5, 16
PRESETS: dict[str, dict[str, Any]] = {
    "daal_point": {"segment": "point"},
    "daal_fixed_margin": {"kappa": 0.0},
    "daal_rigid": {"lambda_len": 0.0},
    "daal_line": {"segment": "line"},
    "daal_data_init": {"init": "data"},
    "daal_v1": {"thickness": "rms_distance"},
}
BASELINES = [
    "proxy_anchor",
    "proxy_nca",
    "soft_triple",
    "multi_similarity",
    "contrastive",
    "triplet",
    "arcface",
    "subcenter_arcface",
    "normalized_softmax",
    "cosface",
    "circle",
]
PAIR_BASED = {"multi_similarity", "contrastive", "triplet", "circle"}  # nothing to learn


def _batch(seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """16 embeddings, 4 per class for 4 of the 5 classes (m-per-class sampling)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 1, 3, 4]).repeat_interleave(4)
    return torch.randn(16, D, generator=gen, dtype=dtype), labels


def _build(name: str, params: dict[str, Any] | None = None, seed: int = 0) -> MetricLoss:
    torch.manual_seed(seed)
    return build_loss(name, C, D, params)


def test_names_are_daal_presets_then_baselines() -> None:
    assert loss_names() == ["daal", *PRESETS, *BASELINES]
    assert set(RECIPE_NOTES) == set(loss_names())
    assert all(note and "\n" not in note for note in RECIPE_NOTES.values())


@pytest.mark.parametrize("name", loss_names())
def test_forward_backward_gives_finite_scalar_and_gradients(name: str) -> None:
    metric_loss = _build(name)
    assert isinstance(metric_loss, MetricLoss) and metric_loss.name == name
    x, y = _batch()
    x.requires_grad_()
    value = metric_loss(x, y)
    value.backward()
    assert value.dim() == 0 and torch.isfinite(value)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", loss_names())
def test_parameters_are_exposed_and_trained(name: str) -> None:
    metric_loss = _build(name)
    params = list(metric_loss.parameters())
    if name in PAIR_BASED:
        assert params == []
        return
    assert params and params == list(metric_loss.loss.parameters())
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(params, lr=0.5)
    x, y = _batch(1)
    metric_loss(x.requires_grad_(), y).backward()
    optimizer.step()
    changed = [not torch.equal(old, new) for old, new in zip(before, params, strict=True)]
    assert changed == [name != "daal_rigid"] * len(params)


def test_rigid_preset_freezes_vertices() -> None:
    metric_loss = _build("daal_rigid")
    assert isinstance(metric_loss.loss, DAALLoss)
    assert not metric_loss.loss.vertices.requires_grad
    assert metric_loss.loss.lambda_len == 0.0
    x, y = _batch(2)
    x.requires_grad_()
    metric_loss(x, y).backward()
    assert metric_loss.loss.vertices.grad is None
    assert _build("daal").loss.vertices.requires_grad


@pytest.mark.parametrize(("preset", "switch"), PRESETS.items())
def test_preset_sets_exactly_its_switch(preset: str, switch: dict[str, Any]) -> None:
    base = loss_defaults("daal")
    expected = {**base, **switch}
    assert loss_defaults(preset) == expected
    wrapped = _build(preset).loss
    assert isinstance(wrapped, DAALLoss)
    assert {key: getattr(wrapped, key) for key in base} == expected
    assert _build(preset).hparams == expected


def test_daal_defaults_follow_the_constructor() -> None:
    wrapped = _build("daal").loss
    defaults = loss_defaults("daal")
    assert set(defaults) == {
        "alpha",
        "delta",
        "kappa",
        "delta_min",
        "delta_max",
        "lambda_daal",
        "lambda_len",
        "gamma_len",
        "momentum",
        "normalize",
        "segment",
        "init",
        "thickness",
    }
    assert {key: getattr(wrapped, key) for key in defaults} == defaults


# (PML class, miner class or None, attributes as PML stores them: ArcFace keeps the margin
# in radians, SoftTriple keeps 1 / gamma)
PUBLISHED: dict[str, tuple[type, type | None, dict[str, Any], dict[str, Any]]] = {
    "proxy_anchor": (pml_losses.ProxyAnchorLoss, None, {"margin": 0.1, "alpha": 32}, {}),
    "proxy_nca": (pml_losses.ProxyNCALoss, None, {"softmax_scale": 1}, {}),
    "soft_triple": (
        pml_losses.SoftTripleLoss,
        None,
        {"centers_per_class": 10, "la": 20, "gamma": 10.0, "margin": 0.01},
        {},
    ),
    "multi_similarity": (
        pml_losses.MultiSimilarityLoss,
        pml_miners.MultiSimilarityMiner,
        {"alpha": 2, "beta": 50, "base": 0.5},
        {"epsilon": 0.1},
    ),
    "contrastive": (pml_losses.ContrastiveLoss, None, {"pos_margin": 0, "neg_margin": 1}, {}),
    "triplet": (
        pml_losses.TripletMarginLoss,
        pml_miners.TripletMarginMiner,
        {"margin": 0.05},
        {"margin": 0.05, "type_of_triplets": "semihard"},
    ),
    "arcface": (
        pml_losses.ArcFaceLoss,
        None,
        {"margin": math.radians(28.6), "scale": 64},
        {},
    ),
    "subcenter_arcface": (
        pml_losses.SubCenterArcFaceLoss,
        None,
        {"margin": math.radians(28.6), "scale": 64, "sub_centers": 3},
        {},
    ),
    "normalized_softmax": (pml_losses.NormalizedSoftmaxLoss, None, {"temperature": 0.05}, {}),
    "cosface": (pml_losses.CosFaceLoss, None, {"margin": 0.35, "scale": 64}, {}),
    "circle": (pml_losses.CircleLoss, None, {"m": 0.4, "gamma": 80}, {}),
}


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_use_published_hyperparameters(name: str) -> None:
    loss_cls, miner_cls, loss_attrs, miner_attrs = PUBLISHED[name]
    metric_loss = _build(name)
    assert type(metric_loss.loss) is loss_cls
    for key, value in loss_attrs.items():
        assert getattr(metric_loss.loss, key) == pytest.approx(value), key
    if miner_cls is None:
        assert metric_loss.miner is None
    else:
        assert type(metric_loss.miner) is miner_cls
        assert {k: getattr(metric_loss.miner, k) for k in miner_attrs} == miner_attrs
    assert not metric_loss.needs_data_init


def test_triplet_miner_is_used_in_forward() -> None:
    metric_loss = _build("triplet", {"margin": 0.2, "miner_margin": 0.0})
    x, y = _batch(3)
    assert metric_loss(x, y) == 0  # semihard with a zero miner margin mines nothing
    assert _build("triplet", {"margin": 0.2})(x, y) > 0


def test_params_override_loss_and_miner_values() -> None:
    anchor = _build("proxy_anchor", {"margin": 0.2})
    assert anchor.loss.margin == 0.2 and anchor.hparams == {"alpha": 32.0, "margin": 0.2}
    ms = _build("multi_similarity", {"miner_epsilon": 0.3, "beta": 40})
    assert ms.miner.epsilon == 0.3 and ms.loss.beta == 40
    assert ms.hparams["miner_epsilon"] == 0.3
    daal = _build("daal", {"kappa": 0.25, "segment": "line"})
    assert daal.loss.kappa == 0.25 and daal.loss.segment == "line"
    triplet = _build("triplet", {"miner_type_of_triplets": "all"})
    assert triplet.miner.type_of_triplets == "all"


@pytest.mark.parametrize("name", loss_names())
def test_defaults_round_trip_as_params(name: str) -> None:
    defaults = loss_defaults(name)
    assert _build(name, defaults).hparams == defaults
    defaults.clear()
    assert loss_defaults(name)  # each call returns a fresh dict


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("proxy_anchor", {"kapa": 1}, "loss 'proxy_anchor': unknown parameter 'kapa'; valid: alpha, margin"),
        ("proxy_anchor", {"miner_epsilon": 0.1}, "loss 'proxy_anchor': unknown parameter 'miner_epsilon'; valid: alpha, margin"),
        ("multi_similarity", {"epsilon": 0.1}, "loss 'multi_similarity': unknown parameter 'epsilon'; valid: alpha, base, beta, miner_epsilon"),
        ("proxy_anchor", {"num_classes": 3}, "loss 'proxy_anchor': unknown parameter 'num_classes'; valid: alpha, margin"),
        ("triplet", {"triplets_per_anchor": 5}, "loss 'triplet': unknown parameter 'triplets_per_anchor'; valid: margin, miner_margin, miner_type_of_triplets, smooth_loss, swap"),
        ("daal_point", {"segment": "line"}, "loss 'daal_point': parameter 'segment' is fixed to 'point' by this preset; use loss 'daal' to change it"),
        ("daal_rigid", {"lambda_len": 0.1}, "loss 'daal_rigid': parameter 'lambda_len' is fixed to 0.0 by this preset; use loss 'daal' to change it"),
        ("proxy_anchor", {"margin": "0.1"}, "loss 'proxy_anchor': parameter 'margin' must be a number, got '0.1'"),
        ("daal", {"alpha": True}, "loss 'daal': parameter 'alpha' must be a number, got True"),
        ("daal", {"normalize": 1}, "loss 'daal': parameter 'normalize' must be true or false, got 1"),
        ("triplet", {"miner_type_of_triplets": "semi"}, "loss 'triplet': parameter 'miner_type_of_triplets' must be one of all, hard, semihard, easy, got 'semi'"),
    ],
)  # fmt: skip
def test_bad_params_raise_one_line_errors(name: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(DaalmlError) as info:
        build_loss(name, C, D, params)
    assert str(info.value) == message


def test_constructor_failures_become_daalml_errors() -> None:
    with pytest.raises(DaalmlError, match=r"^loss 'soft_triple': "):
        build_loss("soft_triple", C, D, {"centers_per_class": 2.5})
    with pytest.raises(DaalmlError, match=r"^loss 'daal': delta_min \(0.5\) must not exceed"):
        build_loss("daal", C, D, {"delta_min": 0.5})
    with pytest.raises(DaalmlError, match=r"^loss 'daal': segment must be one of .*'arc'"):
        build_loss("daal", C, D, {"segment": "arc"})


@pytest.mark.parametrize("size", [0, -2, 2.0, True])
def test_bad_sizes_raise(size: Any) -> None:
    with pytest.raises(DaalmlError, match=r"^loss 'arcface': num_classes must be a positive"):
        build_loss("arcface", size, D)
    with pytest.raises(DaalmlError, match=r"^loss 'daal': embedding_size must be a positive"):
        build_loss("daal", C, size)


def test_unknown_name_lists_valid_names() -> None:
    listing = ", ".join(loss_names())
    for call in (lambda: build_loss("proxyanchor", C, D), lambda: loss_defaults("proxyanchor")):
        with pytest.raises(DaalmlError) as info:
            call()
        assert str(info.value) == f"unknown loss 'proxyanchor'; valid: {listing}"


def test_needs_data_init_follows_daal_init() -> None:
    assert _build("daal_data_init").needs_data_init
    assert _build("daal", {"init": "data"}).needs_data_init
    assert not _build("daal").needs_data_init
    assert not _build("daal_rigid").needs_data_init
    metric_loss = _build("daal_data_init")
    before = metric_loss.loss.vertices.detach().clone()
    x, y = _batch(4)
    metric_loss.loss.initialize_from_embeddings(x, y)  # what the engine does before training
    after = metric_loss.loss.vertices.detach()
    assert not torch.equal(before[[0, 1, 3, 4]], after[[0, 1, 3, 4]])
    torch.testing.assert_close(before[2], after[2])  # class 2 has no samples


def test_degenerate_daal_equals_proxy_anchor_on_same_proxies() -> None:
    degenerate = {"alpha": 32.0, "delta": 0.1, "kappa": 0.0, "lambda_len": 0.0, "segment": "point"}
    daal = _build("daal", degenerate).double()
    anchor = _build("proxy_anchor", {"alpha": 32.0, "margin": 0.1}, seed=1).double()
    with torch.no_grad():
        anchor.loss.proxies.copy_(daal.loss.vertices[:, 0])
    for seed in range(2):  # the second step runs with statistics from the first
        x, y = _batch(10 + seed, torch.float64)
        torch.testing.assert_close(daal(x, y), anchor(x, y), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", loss_names())
def test_bad_labels_and_shapes_name_both_sizes(name: str) -> None:
    metric_loss = build_loss(name, 5, 8)
    with pytest.raises(ValueError, match=r"shape \(4, 8\) and labels of shape \(3,\)"):
        metric_loss(torch.randn(4, 8), torch.tensor([0, 1, 2]))
    if metric_loss.num_classes is None:  # pair losses take any integer labels
        return
    with pytest.raises(ValueError, match=r"label 7 is outside \[0, 5\)"):
        metric_loss(torch.randn(4, 8), torch.tensor([0, 1, 2, 7]))
