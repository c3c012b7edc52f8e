"""Typed run configuration: YAML files plus dotted ``--set key=value`` overrides, validated.

Layers are merged in order defaults <- ``base`` <- YAML file <- overrides. Every layer may be
nested (``train: {lr: 0.001}``), flat with dotted keys (``train.lr: 0.001``) or mixed; mapping
values merge key by key, anything else replaces. Loss keys other than ``name``, ``lr_multiplier``
and ``params`` are the loss's own hyperparameters and are routed into ``loss.params``.

One cohesive thing over 400 lines: the config's schema, its parsing and its validation, which
name every key and must change together.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daalml.errors import DaalmlError
from daalml.shipped import resolve_config

__all__ = [
    "BACKBONES",
    "DATASETS",
    "HEADS",
    "SCHEDULERS",
    "Config",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "flat_keys",
    "load_config",
    "save_config",
]

# the built-in names; a config may name any registered one (validation asks the registries)
DATASETS = ("cub200", "cars196", "sop", "inshop", "folder", "csv", "glyphs")
BACKBONES = ("vgg19", "resnet50", "efficientnet_lite0", "small_cnn")  # or "timm:<name>"
HEADS = ("paper", "linear", "pca")
SCHEDULERS = ("cosine", "step", "none")
ACCELERATORS = ("cpu", "gpu", "auto")


@dataclass
class DataConfig:
    """Which dataset to read and how to turn its images into tensors."""

    dataset: str = "folder"
    root: str | None = None
    train_classes: int | None = None
    image_size: int = 224
    resize: int = 256
    num_workers: int = 2
    strict: bool = False
    glyph_samples_per_font: int = 2
    glyph_image_size: int = 32
    glyph_max_classes: int | None = None  # glyphs only: keep the first N characters (quick runs)
    font_files: list[str] = field(default_factory=list)
    cached_views: int = 4  # augmented views per training image in the activation cache

    @property
    def channels(self) -> int:
        """Image channels of the dataset (its registry entry says): 1 for glyphs, else 3."""
        from daalml.data.registry import dataset_entry

        return dataset_entry(self.dataset).channels


@dataclass
class ModelConfig:
    """Backbone and embedding head."""

    backbone: str = "vgg19"
    pretrained: bool = True
    embedding_size: int = 512
    head: str = "paper"
    hidden_size: int = 1024
    freeze_backbone: bool = False
    freeze_bn: bool = True
    channels_last: bool = True
    train_blocks: int = 0  # last N backbone stages that train (-1: all; docs/performance.md)


@dataclass
class LossConfig:
    """Loss name, learning-rate multiplier of its parameters, and its own hyperparameters."""

    name: str = "daal"
    lr_multiplier: float = 100.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Optimisation, sampling, hardware and model-selection settings."""

    epochs: int = 50
    batch_size: int = 120
    samples_per_class: int = 4
    lr: float = 1e-4
    weight_decay: float = 1e-4
    scheduler: str = "cosine"
    warmup_epochs: int = 0
    gradient_clip: float | None = 10.0
    seed: int = 0
    cache_features: bool = False
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    precision: str = "32-true"
    val_classes: int = 0
    patience: int | None = None
    eval_every: int = 1
    deterministic: bool = False
    eval_batch_size: int = 128
    cache_dir: str | None = None
    cache_dtype: str = "float16"  # activation cache (train_blocks > 0): float16 or float32


@dataclass
class EvalConfig:
    """Retrieval evaluation settings."""

    ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8])


@dataclass
class Config:
    """The whole run configuration, one typed section per pipeline stage."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain-Python dict (deep copy) that ``config_from_dict`` turns back into ``self``."""
        return dataclasses.asdict(self)


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}
_HINTS: dict[str, dict[str, Any]] = {
    name: typing.get_type_hints(cls) for name, cls in _SECTIONS.items()
}
_LOSS_FIXED = ("name", "lr_multiplier", "params")
# Keys holding file-system paths: os.PathLike values are accepted and stored as str.
_PATH_KEYS = frozenset({"data.root", "data.font_files", "train.cache_dir"})
# str keys where a bare YAML int is meant as text (Lightning accepts precision=16).
_INT_AS_STR_KEYS = frozenset({"train.precision"})
_FLOAT_TEXT = re.compile(r"[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][-+]?\d+)?")
_MAX_REPR = 80


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.2), not the YAML 1.1 string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # _Loader derives from SafeLoader


def flat_keys() -> list[str]:
    """All valid dotted keys, section by section in declaration order."""
    return [f"{sec}.{f.name}" for sec, cls in _SECTIONS.items() for f in dataclasses.fields(cls)]


def config_differences(
    saved: Any, current: Any, prefix: str = ""
) -> list[tuple[str, Any, Any]]:
    """``(dotted key, saved value, current value)`` wherever two config trees (``to_dict()``
    form, or any subtree of it) differ, sorted by key; a key missing on one side is None."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(saved) | set(current)):
            dotted = f"{prefix}.{key}" if prefix else str(key)
            out += config_differences(saved.get(key), current.get(key), dotted)
        return out
    return [] if saved == current else [(prefix, saved, current)]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def _suggest(word: str, options: Sequence[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


# ---------------------------------------------------------------------------------------------
# Normalisation: any nested/flat/mixed mapping -> {section: {field: value}}, loss extras routed.


def _put(node: dict[str, Any], parts: list[str], value: Any, source: str, key: str) -> None:
    """Store ``value`` at the dotted path ``parts``; mapping values merge into what is there."""
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    last = parts[-1]
    if isinstance(value, Mapping):
        child = node.get(last)
        if not isinstance(child, dict):
            child = node[last] = {}
        for sub_key, sub_value in value.items():
            _put_key(child, sub_key, sub_value, source, f"{key}.{sub_key}")
    else:
        node[last] = value


def _put_key(node: dict[str, Any], key: Any, value: Any, source: str, full: str) -> None:
    if not isinstance(key, str):
        raise DaalmlError(f"{source}: config keys must be strings, got {_short(key)} in '{full}'")
    parts = key.split(".")
    if not all(p.strip() == p and p for p in parts):
        raise DaalmlError(f"{source}: malformed key {full!r}")
    _put(node, parts, value, source, full)


def _normalize(raw: Mapping[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """Nest dotted keys, check section/key names, route loss hyperparameters into params."""
    if not isinstance(raw, Mapping):
        raise DaalmlError(
            f"{source}: top level must be a mapping of config keys, got {type(raw).__name__}"
        )
    tree: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(key, str) and key in _SECTIONS and value is None:
            value = {}  # an empty "train:" block in YAML
        _put_key(tree, key, value, source, str(key))
    out: dict[str, dict[str, Any]] = {}
    for section, body in tree.items():
        if section not in _SECTIONS:
            raise DaalmlError(
                f"{source}: unknown section '{section}'{_suggest(section, list(_SECTIONS))}; "
                f"valid sections: {', '.join(sorted(_SECTIONS))}"
            )
        if not isinstance(body, dict):
            raise DaalmlError(f"{source}: {section}: expected a mapping, got {_short(body)}")
        if section == "loss":
            body = _route_loss(body)
        valid = _HINTS[section]
        for name in body:
            if name not in valid:
                raise DaalmlError(
                    f"{source}: unknown key '{section}.{name}'"
                    f"{_suggest(name, list(valid), f'{section}.')}; "
                    f"valid keys in '{section}': {', '.join(sorted(valid))}"
                )
        out[section] = body
    return out


def _route_loss(body: dict[str, Any]) -> dict[str, Any]:
    """Move every loss key that is not a LossConfig field into ``params`` (extras win)."""
    routed = {k: v for k, v in body.items() if k in _LOSS_FIXED}
    extras = {k: v for k, v in body.items() if k not in _LOSS_FIXED}
    if routed.get("params", {}) is None:
        routed["params"] = {}  # an empty "params:" block in YAML
    params = routed.get("params", {})
    if extras and isinstance(params, dict):
        routed["params"] = {**params, **extras}
    return routed


# ---------------------------------------------------------------------------------------------
# Type checking and coercion, driven by the dataclass annotations.


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        return f"list of {_type_name(typing.get_args(hint)[0])}"
    if origin is dict:
        return "mapping"
    return getattr(hint, "__name__", str(hint))


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Return ``value`` converted to ``hint`` or raise the 'expected X, got Y' error."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        try:
            return _coerce(value, inner, key)
        except DaalmlError:
            raise DaalmlError(f"{key}: expected {_type_name(hint)}, got {_short(value)}") from None
    ok, result = _convert(value, hint, key)
    if not ok:
        raise DaalmlError(f"{key}: expected {_type_name(hint)}, got {_short(value)}")
    return result


def _convert(value: Any, hint: Any, key: str) -> tuple[bool, Any]:
    if value is None:
        return False, None
    if key in _PATH_KEYS and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, bool):
            return False, None
        if isinstance(value, int | float):
            return True, float(value)
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return True, float(value.strip().replace("_", ""))
        return False, None
    if hint is str:
        if key in _INT_AS_STR_KEYS and isinstance(value, int) and not isinstance(value, bool):
            return True, str(value)
        return isinstance(value, str), value
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list | tuple):
            return False, None
        (item_hint,) = typing.get_args(hint)
        items = []
        for item in value:
            ok, conv = _convert(item, item_hint, key)
            if not ok:
                return False, None
            items.append(conv)
        return True, items
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            return False, None
        return True, dict(value)
    raise TypeError(f"unsupported config annotation {hint!r} for {key}")  # programming error


def _check_types(tree: dict[str, dict[str, Any]], source: str) -> dict[str, dict[str, Any]]:
    """Coerce every present value to its field type; errors name ``source`` and the key."""
    out: dict[str, dict[str, Any]] = {}
    for section, body in tree.items():
        hints = _HINTS[section]
        out[section] = {}
        for name, value in body.items():
            try:
                out[section][name] = _coerce(value, hints[name], f"{section}.{name}")
            except DaalmlError as exc:
                raise DaalmlError(f"{source}: {exc}") from None
    return out


def _merge(dst: dict[str, Any], src: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``src`` into ``dst`` (mappings merge, everything else replaces)."""
    for key, value in src.items():
        if isinstance(value, Mapping) and isinstance(dst.get(key), dict):
            _merge(dst[key], value)
        elif isinstance(value, Mapping):
            dst[key] = _merge({}, value)
        else:
            dst[key] = value
    return dst


# ---------------------------------------------------------------------------------------------
# Value checks that need more than the type: choices, ranges, cross-field rules.


def _need(ok: bool, source: str, message: str) -> None:
    if not ok:
        raise DaalmlError(f"{source}: {message}")


def _at_least(source: str, key: str, value: int | float | None, low: float) -> None:
    if value is not None:
        _need(value >= low, source, f"{key}: must be >= {low:g}, got {value!r}")


def _choice(source: str, key: str, value: str, choices: Sequence[str], extra: str = "") -> None:
    _need(
        value in choices,
        source,
        f"{key}: expected one of {', '.join(choices)}{extra}; got {value!r}"
        f"{_suggest(value, choices)}",
    )


def _validate(cfg: Config, source: str) -> None:
    # names are checked against the registries, so a dataset, backbone, head or loss a user
    # registered can be named in a config
    from daalml.data.registry import available_datasets
    from daalml.losses.registry import loss_names
    from daalml.models.backbones import available_backbones
    from daalml.models.heads import available_heads

    d, m, lo, t, e = cfg.data, cfg.model, cfg.loss, cfg.train, cfg.eval
    _choice(source, "data.dataset", d.dataset, available_datasets())
    _at_least(source, "data.train_classes", d.train_classes, 1)
    _at_least(source, "data.image_size", d.image_size, 1)
    _at_least(source, "data.resize", d.resize, 1)
    _need(
        d.resize >= d.image_size,
        source,
        f"data.resize ({d.resize}) must be >= data.image_size ({d.image_size})",
    )
    _at_least(source, "data.num_workers", d.num_workers, 0)
    _at_least(source, "data.glyph_samples_per_font", d.glyph_samples_per_font, 1)
    _at_least(source, "data.glyph_image_size", d.glyph_image_size, 1)
    if d.glyph_max_classes is not None:
        _at_least(source, "data.glyph_max_classes", d.glyph_max_classes, 4)

    if m.backbone.startswith("timm:"):
        _need(len(m.backbone) > 5, source, "model.backbone: 'timm:' needs a model name after it")
    else:
        _choice(source, "model.backbone", m.backbone, available_backbones(), " or timm:<name>")
    _choice(source, "model.head", m.head, available_heads())
    _at_least(source, "model.train_blocks", m.train_blocks, -1)
    _need(
        not (m.train_blocks and m.freeze_backbone),
        source,
        f"model.freeze_backbone: true contradicts model.train_blocks={m.train_blocks}",
    )
    _need(
        not (m.train_blocks == -1 and t.cache_features),
        source,
        "train.cache_features: true with model.train_blocks=-1 leaves no frozen trunk to "
        "cache; train 1..N stages or set cache_features: false",
    )
    _at_least(source, "data.cached_views", d.cached_views, 1)
    _choice(source, "train.cache_dtype", t.cache_dtype, ("float16", "float32"))
    _at_least(source, "model.embedding_size", m.embedding_size, 1)
    _at_least(source, "model.hidden_size", m.hidden_size, 1)

    _need(bool(lo.name.strip()), source, "loss.name: must not be empty")
    _choice(source, "loss.name", lo.name, loss_names())
    _at_least(source, "loss.lr_multiplier", lo.lr_multiplier, 0)

    _at_least(source, "train.epochs", t.epochs, 0)
    _at_least(source, "train.batch_size", t.batch_size, 2)
    _at_least(source, "train.samples_per_class", t.samples_per_class, 2)
    _at_least(source, "train.devices", t.devices, 1)
    _at_least(source, "train.num_nodes", t.num_nodes, 1)
    per_step = t.samples_per_class * t.devices * t.num_nodes
    _need(
        t.batch_size % per_step == 0,
        source,
        f"train.batch_size ({t.batch_size}) must be divisible by train.samples_per_class "
        f"({t.samples_per_class}) x train.devices ({t.devices}) x train.num_nodes "
        f"({t.num_nodes}) = {per_step}",
    )
    _need(t.lr > 0, source, f"train.lr: must be > 0, got {t.lr!r}")
    _at_least(source, "train.weight_decay", t.weight_decay, 0)
    _choice(source, "train.scheduler", t.scheduler, SCHEDULERS)
    _at_least(source, "train.warmup_epochs", t.warmup_epochs, 0)
    if t.gradient_clip is not None:
        _need(
            t.gradient_clip > 0,
            source,
            f"train.gradient_clip: must be > 0 or null, got {t.gradient_clip!r}",
        )
    _choice(source, "train.accelerator", t.accelerator, ACCELERATORS)
    _need(bool(t.precision.strip()), source, "train.precision: must not be empty")
    _at_least(source, "train.val_classes", t.val_classes, 0)
    _at_least(source, "train.patience", t.patience, 1)
    _at_least(source, "train.eval_every", t.eval_every, 1)
    _at_least(source, "train.eval_batch_size", t.eval_batch_size, 1)

    _need(bool(e.ks), source, "eval.ks: must list at least one k")
    _need(all(k >= 1 for k in e.ks), source, f"eval.ks: every k must be >= 1, got {e.ks!r}")
    _need(len(set(e.ks)) == len(e.ks), source, f"eval.ks: duplicate k in {e.ks!r}")


# ---------------------------------------------------------------------------------------------
# Public API.


def config_from_dict(d: Mapping[str, Any], *, source: str = "<dict>") -> Config:
    """Build and validate a Config from a nested, flat (dotted) or mixed mapping."""
    tree = _check_types(_normalize(d, source), source)
    cfg = Config(**{name: cls(**tree.get(name, {})) for name, cls in _SECTIONS.items()})
    _validate(cfg, source)
    return cfg


def _parse_override(item: str) -> tuple[str, Any]:
    if not isinstance(item, str) or "=" not in item:
        raise DaalmlError(f"--set {item!r}: expected key=value, e.g. train.lr=1e-3")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key:
        raise DaalmlError(f"--set {item!r}: missing key before '='")
    try:
        value = _yaml_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DaalmlError(f"--set {item}: invalid YAML value: {problem}") from None
    return key, value


def apply_overrides(d: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a new nested dict: ``d`` with each ``key=value`` applied (value parsed as YAML).

    Each override's key and type are checked at once so errors name the offending ``--set``.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    out = _merge({}, _normalize(d, "<dict>"))
    for item in overrides:
        key, value = _parse_override(item)
        layer = _check_types(_normalize({key: value}, f"--set {item}"), f"--set {item}")
        _merge(out, layer)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise DaalmlError(f"config file not found: {path}")
    if path.is_dir():
        raise DaalmlError(f"config path is a directory, not a YAML file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DaalmlError(f"cannot read config file {path}: {exc}") from None
    try:
        data = _yaml_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DaalmlError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DaalmlError(
            f"{path}: top level must be a mapping of config keys, got {type(data).__name__}"
        )
    return data


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    base: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults <- ``base`` <- YAML at ``path`` <- ``overrides`` ("train.lr=1e-3"), validated.

    ``path`` may also name a shipped config (``daalml configs`` lists them): a real file wins.
    """
    merged: dict[str, Any] = {}
    sources = []
    if base is not None:
        _merge(merged, _check_types(_normalize(base, "<base>"), "<base>"))
        sources.append("<base>")
    if path is not None:
        path = resolve_config(path)  # a file, or the name of a config shipped in the package
        _merge(merged, _check_types(_normalize(_read_yaml(path), str(path)), str(path)))
        sources.append(str(path))
    if isinstance(overrides, str):
        overrides = [overrides]
    if overrides:
        merged = apply_overrides(merged, overrides)
        sources.append("--set")
    return config_from_dict(merged, source=" + ".join(sources) or "<defaults>")


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as nested YAML atomically (temp file + rename); ``load_config`` reads it back."""
    path = Path(path)
    try:
        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
    except yaml.YAMLError as exc:
        raise DaalmlError(
            f"cannot save config to {path}: value not YAML-serialisable: {exc}"
        ) from None
    tmp_name: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as handle:
            tmp_name = handle.name
            handle.write("# daalml run configuration\n")
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        raise DaalmlError(f"cannot write config to {path}: {exc.strerror or exc}") from None
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
