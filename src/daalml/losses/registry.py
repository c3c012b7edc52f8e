"""Loss registry: ``loss.name`` in a config -> DAAL, a DAAL ablation preset or a PML baseline.

Every entry is a :class:`Recipe`: the loss class, the hyperparameters it is built with (the
published defaults, written out even where PML's own defaults agree, so that a PML release
cannot change a baseline silently), the keys an ablation preset pins, and, where the published
recipe mines tuples, the miner. ``params`` override any scalar constructor argument of the loss;
miner arguments take the prefix ``miner_`` (``miner_epsilon``). The valid keys are read from the
constructors with :func:`inspect.signature`, so they follow the installed PML version.

Ablation presets of DAAL (each pins exactly one switch; use ``daal`` to vary it freely):

- ``daal_point``: ``segment="point"``, every class a single proxy (no line, no length term).
- ``daal_fixed_margin``: ``kappa=0``, the margin stays at ``delta`` for every class.
- ``daal_rigid``: ``lambda_len=0`` and the vertices frozen (``requires_grad=False``): the
  segments keep their initial place and length, only the margins adapt.
- ``daal_line``: ``segment="line"``, projections onto the infinite line (no clamping).
- ``daal_data_init``: ``init="data"``, the engine places the segments from embeddings of the
  training set (:attr:`MetricLoss.needs_data_init`) before the first step.
- ``daal_v1``: ``thickness="rms_distance"``, version 1 of the density statistic (the RMS
  distance of a class to its segment; docs/daal-loss.md, "History").
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from torch import nn

from daalml.errors import DaalmlError, check_registration
from daalml.losses.daal import DAALLoss

MINER_PREFIX = "miner_"
_SIZE_ARGS = frozenset({"num_classes", "embedding_size"})
_SCALARS = (bool, int, float, str)
# PML base classes and mixins: their scalar arguments (regularizer weights) are no-ops here.
_SKIPPED_MODULES = (
    "pytorch_metric_learning.losses.mixins",
    "pytorch_metric_learning.losses.base_metric_loss_function",
    "pytorch_metric_learning.losses.generic_pair_loss",
    "pytorch_metric_learning.miners.base_miner",
    "pytorch_metric_learning.utils.",
)


@dataclass(frozen=True)
class Recipe:
    """How one registry name is built; ``note`` says why its hyperparameters are what they are."""

    loss_cls: type[nn.Module]
    note: str
    preset: Mapping[str, Any] = field(default_factory=dict)
    pinned: frozenset[str] = frozenset()  # preset keys that ``params`` may not change
    miner_cls: type[nn.Module] | None = None
    miner_preset: Mapping[str, Any] = field(default_factory=dict)
    freeze_vertices: bool = False
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # for unchecked strings
    omit: frozenset[str] = frozenset()  # constructor keys that have no effect in this recipe


def _daal(note: str, pin: Mapping[str, Any] | None = None, freeze: bool = False) -> Recipe:
    pin = dict(pin or {})
    return Recipe(DAALLoss, note, pin, frozenset(pin), freeze_vertices=freeze)


_RECIPES: dict[str, Recipe] = {
    "daal": _daal("DAAL with the defaults of DAALLoss (docs/daal-loss.md)."),
    "daal_point": _daal(
        "Ablation: one proxy per class instead of a segment.", {"segment": "point"}
    ),
    "daal_fixed_margin": _daal("Ablation: no density adaptation of the margin.", {"kappa": 0.0}),
    "daal_rigid": _daal(
        "Ablation: no elastic term and frozen vertices, only the margins adapt.",
        {"lambda_len": 0.0},
        freeze=True,
    ),
    "daal_line": _daal("Ablation: unclamped projection onto the line.", {"segment": "line"}),
    "daal_data_init": _daal(
        "Ablation: segments placed from training embeddings.", {"init": "data"}
    ),
    "daal_v1": _daal(
        "Ablation: version 1 thickness, the RMS distance to the segment (docs/daal-loss.md).",
        {"thickness": "rms_distance"},
    ),
    "proxy_anchor": Recipe(
        pml_losses.ProxyAnchorLoss,
        "Kim et al. 2020 publish margin 0.1, alpha 32 (= PML defaults).",
        {"margin": 0.1, "alpha": 32.0},
    ),
    "proxy_nca": Recipe(
        pml_losses.ProxyNCALoss,
        "Movshovitz-Attias et al. 2017 fix no scale: PML default softmax_scale 1 (ProxyNCA++ "
        "tunes a larger one; override softmax_scale to follow it).",
        {"softmax_scale": 1.0},
    ),
    "soft_triple": Recipe(
        pml_losses.SoftTripleLoss,
        "Qian et al. 2019: K=10, lambda=20, gamma=0.1, delta=0.01 (= PML defaults); the tau "
        "center regularizer is left out, its (C*K)^2 similarity matrix does not fit SOP.",
        {"centers_per_class": 10, "la": 20.0, "gamma": 0.1, "margin": 0.01},
    ),
    "multi_similarity": Recipe(
        pml_losses.MultiSimilarityLoss,
        "Wang et al. 2019: alpha 2, beta 50, lambda 0.5 with their pair miner, epsilon 0.1.",
        {"alpha": 2.0, "beta": 50.0, "base": 0.5},
        miner_cls=pml_miners.MultiSimilarityMiner,
        miner_preset={"epsilon": 0.1},
    ),
    "contrastive": Recipe(
        pml_losses.ContrastiveLoss,
        "PML defaults (pos_margin 0, neg_margin 1, L2 distance of normalized embeddings, all "
        "pairs): Hadsell et al. 2006 give no margin for this setting.",
        {"pos_margin": 0.0, "neg_margin": 1.0},
    ),
    "triplet": Recipe(
        pml_losses.TripletMarginLoss,
        "PML default margin 0.05 with FaceNet's semi-hard mining (Schroff et al. 2015), the "
        "miner margin equal to the loss margin so that every mined triplet has a loss.",
        {"margin": 0.05},
        miner_cls=pml_miners.TripletMarginMiner,
        miner_preset={"margin": 0.05, "type_of_triplets": "semihard"},
        choices={"miner_type_of_triplets": ("all", "hard", "semihard", "easy")},
        omit=frozenset({"triplets_per_anchor"}),  # the miner supplies the triplets
    ),
    "arcface": Recipe(
        pml_losses.ArcFaceLoss,
        "Deng et al. 2019: m 0.5 rad (28.6 degrees), s 64 (= PML defaults).",
        {"margin": 28.6, "scale": 64.0},
    ),
    "subcenter_arcface": Recipe(
        pml_losses.SubCenterArcFaceLoss,
        "Deng et al. 2020: K=3 sub-centers with ArcFace's m 28.6 degrees, s 64 (= PML defaults).",
        {"margin": 28.6, "scale": 64.0, "sub_centers": 3},
    ),
    "normalized_softmax": Recipe(
        pml_losses.NormalizedSoftmaxLoss,
        "Zhai & Wu 2019: temperature 0.05 (= PML default).",
        {"temperature": 0.05},
    ),
    "cosface": Recipe(
        pml_losses.CosFaceLoss,
        "Wang et al. 2018: m 0.35, s 64 (= PML defaults).",
        {"margin": 0.35, "scale": 64.0},
    ),
    "circle": Recipe(
        pml_losses.CircleLoss,
        "Sun et al. 2020, fine-grained retrieval setting: m 0.4, gamma 80 (= PML defaults).",
        {"m": 0.4, "gamma": 80.0},
    ),
}

RECIPE_NOTES: dict[str, str] = {name: recipe.note for name, recipe in _RECIPES.items()}
"""One line per registry name: where its hyperparameters come from."""


class MetricLoss(nn.Module):
    """A registry loss: forward(embeddings (B,d), labels (B,)) -> scalar.

    Wraps the loss and, where the published recipe uses one, its miner. The learnable
    parameters (proxies, vertices, W) live in ``loss``; ``hparams`` are the values it was built
    with (miner ones prefixed ``miner_``), for logging.
    """

    def __init__(
        self,
        name: str,
        loss: nn.Module,
        miner: nn.Module | None = None,
        hparams: Mapping[str, Any] | None = None,
        *,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.num_classes = num_classes  # None for pair losses, which take any labels
        self.loss = loss
        self.miner = miner
        self.hparams: dict[str, Any] = dict(hparams or {})

    @property
    def needs_data_init(self) -> bool:
        """True when the engine must call ``loss.initialize_from_embeddings`` before training."""
        return isinstance(self.loss, DAALLoss) and self.loss.init == "data"

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self._check(embeddings, labels)
        if self.miner is None:
            return self.loss(embeddings, labels)
        tuples = self.miner(embeddings, labels)
        return self.loss(embeddings, labels, tuples)

    def _check(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Bad shapes or labels fail here with both sizes named, not deep inside PML."""
        if embeddings.dim() != 2 or labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
            raise ValueError(
                f"loss {self.name!r}: embeddings of shape {tuple(embeddings.shape)} and labels of "
                f"shape {tuple(labels.shape)} do not match (expected (B, d) and (B,))"
            )
        num_classes = self.num_classes
        if num_classes is not None and labels.numel():
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= num_classes:
                bad = low if low < 0 else high
                raise ValueError(
                    f"loss {self.name!r}: label {bad} is outside [0, {num_classes}) for its "
                    f"{num_classes} classes"
                )

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def register_loss(name: str, recipe: Recipe, *, replace: bool = False) -> None:
    """Make ``loss.name: name`` (and ``build_loss(name, ...)``) build ``recipe``."""
    rule = "empty, padded or holding '@'"
    check_registration("loss", name, _RECIPES, replace=replace, valid="@" not in name, rule=rule)
    _RECIPES[name] = recipe
    RECIPE_NOTES[name] = recipe.note


def loss_names() -> list[str]:
    """All registry names: ``daal``, its ablation presets, then the PML baselines."""
    return list(_RECIPES)


def loss_defaults(name: str) -> dict[str, Any]:
    """The hyperparameters ``name`` is built with when ``params`` is empty (miner ones prefixed)."""
    recipe = _recipe(name)
    values = {**_scalar_arguments(recipe.loss_cls), **recipe.preset}
    if recipe.miner_cls is not None:
        miner_values = {**_scalar_arguments(recipe.miner_cls), **recipe.miner_preset}
        values.update({MINER_PREFIX + key: value for key, value in miner_values.items()})
    return {key: values[key] for key in sorted(values) if key not in recipe.omit}


def build_loss(
    name: str, num_classes: int, embedding_size: int, params: Mapping[str, Any] | None = None
) -> MetricLoss:
    """Build registry loss ``name`` for ``num_classes`` classes of ``embedding_size``-d embeddings.

    ``params`` override hyperparameters (see :func:`loss_defaults` for the keys); unknown keys,
    keys pinned by an ablation preset and values of the wrong type raise :class:`DaalmlError`.
    """
    recipe = _recipe(name)
    for what, value in (("num_classes", num_classes), ("embedding_size", embedding_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DaalmlError(f"loss {name!r}: {what} must be a positive integer, got {value!r}")
    hparams = _resolve(name, recipe, dict(params or {}))
    loss_kwargs = {k: v for k, v in hparams.items() if not k.startswith(MINER_PREFIX)}
    miner_kwargs = {
        k.removeprefix(MINER_PREFIX): v for k, v in hparams.items() if k.startswith(MINER_PREFIX)
    }
    try:
        if _takes_sizes(recipe.loss_cls):
            sizes = {"num_classes": num_classes, "embedding_size": embedding_size}
            loss = recipe.loss_cls(**sizes, **loss_kwargs)
        else:
            loss = recipe.loss_cls(**loss_kwargs)
        miner = None if recipe.miner_cls is None else recipe.miner_cls(**miner_kwargs)
    except (ValueError, TypeError, AssertionError) as exc:
        raise DaalmlError(f"loss {name!r}: {exc}") from exc
    if recipe.freeze_vertices:
        assert isinstance(loss, DAALLoss)
        loss.vertices.requires_grad_(False)
    takes_classes = _takes_sizes(recipe.loss_cls)
    return MetricLoss(
        name, loss, miner, hparams, num_classes=num_classes if takes_classes else None
    )


def _recipe(name: str) -> Recipe:
    if name not in _RECIPES:
        raise DaalmlError(f"unknown loss {name!r}; valid: {', '.join(_RECIPES)}")
    return _RECIPES[name]


def _resolve(name: str, recipe: Recipe, params: dict[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with ``params``, after checking every key and value type."""
    defaults = loss_defaults(name)
    for key, value in params.items():
        if key in recipe.pinned and value != recipe.preset[key]:
            raise DaalmlError(
                f"loss {name!r}: parameter {key!r} is fixed to {recipe.preset[key]!r} by this "
                f"preset; use loss 'daal' to change it"
            )
        if key not in defaults:
            valid = ", ".join(k for k in defaults if k not in recipe.pinned)
            raise DaalmlError(f"loss {name!r}: unknown parameter {key!r}; valid: {valid}")
        _check_value(name, recipe, key, value, defaults[key])
    return {**defaults, **params}


def _check_value(name: str, recipe: Recipe, key: str, value: Any, default: Any) -> None:
    """Numbers for numeric defaults, booleans for boolean ones (a YAML typo fails here)."""
    if key in recipe.choices:
        options = recipe.choices[key]
        ok, kind = value in options, "one of " + ", ".join(options)
    elif isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, (int, float)):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        return  # other strings: the loss checks them itself (DAALLoss does)
    if not ok:
        raise DaalmlError(f"loss {name!r}: parameter {key!r} must be {kind}, got {value!r}")


def _takes_sizes(cls: type[nn.Module]) -> bool:
    """Whether ``cls`` takes ``num_classes, embedding_size`` (PML passes them on via *args)."""
    return any(_SIZE_ARGS.issubset(_own_parameters(klass)) for klass in _constructor_chain(cls))


def _scalar_arguments(cls: type[nn.Module]) -> dict[str, Any]:
    """Constructor keywords of ``cls`` and its loss/miner bases whose defaults are scalars."""
    found: dict[str, Any] = {}
    for klass in _constructor_chain(cls):
        for key, param in _own_parameters(klass).items():
            default = param.default
            if key in _SIZE_ARGS or not isinstance(default, _SCALARS):
                continue
            found.setdefault(key, default)  # the most derived class's default wins
    return found


def _constructor_chain(cls: type[nn.Module]) -> list[type]:
    """Classes of the MRO below nn.Module that define __init__, minus PML bases and mixins."""
    chain = []
    for klass in cls.__mro__:
        if klass is nn.Module:
            break
        if "__init__" in vars(klass) and not klass.__module__.startswith(_SKIPPED_MODULES):
            chain.append(klass)
    return chain


def _own_parameters(klass: type) -> dict[str, inspect.Parameter]:
    signature = inspect.signature(klass.__init__)
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {k: p for k, p in signature.parameters.items() if k != "self" and p.kind in named}
