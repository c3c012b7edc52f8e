"""Tests for daalml.config: YAML layouts, --set overrides, validation errors, save/load."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from daalml.config import (
    Config,
    DataConfig,
    LossConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    flat_keys,
    load_config,
    save_config,
)
from daalml.errors import DaalmlError


def _write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(excinfo: pytest.ExceptionInfo[DaalmlError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, "user-facing errors must be one line"
    return message


# --------------------------------------------------------------------------------- defaults


def test_defaults_match_dataclasses() -> None:
    cfg = load_config()
    assert cfg == Config()
    assert cfg == config_from_dict({})
    assert cfg.train.batch_size == 120 and cfg.train.samples_per_class == 4
    assert cfg.eval.ks == [1, 2, 4, 8]
    assert cfg.loss == LossConfig(name="daal", lr_multiplier=100.0, params={})


def test_flat_keys_cover_every_field_in_order() -> None:
    keys = flat_keys()
    assert keys[0] == "data.dataset"
    assert keys[-1] == "eval.ks"
    assert len(keys) == len(set(keys))
    expected = {
        f"{section.name}.{f.name}"
        for section in dataclasses.fields(Config)
        for f in dataclasses.fields(section.default_factory())  # type: ignore[misc]
    }
    assert set(keys) == expected
    assert "loss.params" in keys and "train.cache_dir" in keys


# ------------------------------------------------------------------------- YAML layouts

NESTED = """
data:
  dataset: cub200
  root: /data/cub
model:
  backbone: resnet50
  embedding_size: 128
train:
  lr: 0.001
  epochs: 3
loss:
  name: daal
  kappa: 0
eval:
  ks: [1, 10]
"""

FLAT = """
data.dataset: cub200
data.root: /data/cub
model.backbone: resnet50
model.embedding_size: 128
train.lr: 1e-3
train.epochs: 3
loss.name: daal
loss.kappa: 0
eval.ks: [1, 10]
"""

MIXED = """
data:
  dataset: cub200
data.root: /data/cub
model: {backbone: resnet50}
model.embedding_size: 128
train.lr: 1.0e-3
train:
  epochs: 3
loss: {params: {kappa: 0}}
eval.ks: [1, 10]
"""


@pytest.mark.parametrize("text", [NESTED, FLAT, MIXED], ids=["nested", "flat", "mixed"])
def test_nested_flat_and_mixed_yaml_give_the_same_config(tmp_path: Path, text: str) -> None:
    cfg = load_config(_write(tmp_path, text))
    assert cfg.data.dataset == "cub200" and cfg.data.root == "/data/cub"
    assert cfg.model.backbone == "resnet50" and cfg.model.embedding_size == 128
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 3
    assert cfg.loss.params == {"kappa": 0}
    assert cfg.eval.ks == [1, 10]
    # everything not mentioned keeps its default
    assert cfg.train.batch_size == TrainConfig().batch_size
    assert cfg.data.image_size == DataConfig().image_size


def test_empty_file_and_empty_sections_mean_defaults(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "")) == Config()
    assert load_config(_write(tmp_path, "# nothing\ntrain:\nloss:\n  params:\n")) == Config()


def test_yaml_scientific_notation_without_dot_is_a_float(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "train:\n  lr: 3e-4\n  weight_decay: 5E-5\n"))
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.weight_decay == pytest.approx(5e-5)


def test_dict_with_float_strings_is_accepted_for_float_fields() -> None:
    cfg = config_from_dict({"train": {"lr": "2e-3", "gradient_clip": " 1_0.5 "}})
    assert cfg.train.lr == pytest.approx(2e-3)
    assert cfg.train.gradient_clip == pytest.approx(10.5)


# ------------------------------------------------------------------------------ overrides

# One valid override per key: (text after '=', expected attribute value).
OVERRIDE_SAMPLES: dict[str, tuple[str, Any]] = {
    "data.dataset": ("glyphs", "glyphs"),
    "data.root": ("/tmp/ds root", "/tmp/ds root"),
    "data.train_classes": ("50", 50),
    "data.image_size": ("32", 32),
    "data.resize": ("288", 288),
    "data.num_workers": ("0", 0),
    "data.strict": ("true", True),
    "data.glyph_samples_per_font": ("3", 3),
    "data.glyph_image_size": ("16", 16),
    "data.glyph_max_classes": ("40", 40),
    "data.font_files": ("[a.ttf, b.otf]", ["a.ttf", "b.otf"]),
    "data.cached_views": ("2", 2),
    "model.backbone": ("timm:resnet18", "timm:resnet18"),
    "model.pretrained": ("false", False),
    "model.embedding_size": ("64", 64),
    "model.head": ("linear", "linear"),
    "model.hidden_size": ("256", 256),
    "model.freeze_backbone": ("yes", True),
    "model.freeze_bn": ("off", False),
    "model.channels_last": ("False", False),
    "model.train_blocks": ("-1", -1),
    "loss.name": ("proxy_anchor", "proxy_anchor"),
    "loss.lr_multiplier": ("10", 10.0),
    "loss.params": ("{alpha: 16, delta: 0.1}", {"alpha": 16, "delta": 0.1}),
    "train.epochs": ("0", 0),
    "train.batch_size": ("64", 64),
    "train.samples_per_class": ("2", 2),
    "train.lr": ("1e-3", 1e-3),
    "train.weight_decay": ("0", 0.0),
    "train.scheduler": ("none", "none"),
    "train.warmup_epochs": ("2", 2),
    "train.gradient_clip": ("null", None),
    "train.seed": ("-7", -7),
    "train.cache_features": ("true", True),
    "train.accelerator": ("cpu", "cpu"),
    "train.devices": ("2", 2),
    "train.num_nodes": ("2", 2),
    "train.precision": ("bf16-mixed", "bf16-mixed"),
    "train.val_classes": ("10", 10),
    "train.patience": ("5", 5),
    "train.eval_every": ("2", 2),
    "train.deterministic": ("true", True),
    "train.eval_batch_size": ("32", 32),
    "train.cache_dir": ("~/cache", "~/cache"),
    "train.cache_dtype": ("float32", "float32"),
    "eval.ks": ("[1, 5, 10]", [1, 5, 10]),
}


def test_override_samples_cover_every_key() -> None:
    assert set(OVERRIDE_SAMPLES) == set(flat_keys())


@pytest.mark.parametrize("key", sorted(OVERRIDE_SAMPLES))
def test_override_sets_each_key_with_its_type(key: str) -> None:
    text, expected = OVERRIDE_SAMPLES[key]
    cfg = load_config(overrides=[f"{key}={text}"])
    section, name = key.split(".")
    value = getattr(getattr(cfg, section), name)
    assert value == expected
    assert type(value) is type(expected)


def test_int_is_accepted_for_float_and_stored_as_float() -> None:
    cfg = load_config(overrides=["train.lr=1", "train.gradient_clip=3"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert isinstance(cfg.train.gradient_clip, float)


def test_int_precision_becomes_lightning_string() -> None:
    assert load_config(overrides=["train.precision=16"]).train.precision == "16"


def test_override_value_may_contain_equals_and_colons() -> None:
    cfg = load_config(overrides=["data.root=/x/a=b:c"])
    assert cfg.data.root == "/x/a=b:c"


def test_layering_order_base_file_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  lr: 0.01\n  epochs: 5\nloss.kappa: 1\n")
    base = {"train": {"lr": 0.5, "epochs": 9, "seed": 3}, "loss": {"params": {"alpha": 32}}}
    cfg = load_config(path, ["train.epochs=7", "loss.delta=0.2"], base=base)
    assert cfg.train.seed == 3  # base only
    assert cfg.train.lr == pytest.approx(0.01)  # file beats base
    assert cfg.train.epochs == 7  # override beats file
    assert cfg.loss.params == {"alpha": 32, "kappa": 1, "delta": 0.2}  # params merge


def test_later_override_wins() -> None:
    cfg = load_config(overrides=["train.epochs=1", "train.epochs=2"])
    assert cfg.train.epochs == 2


def test_apply_overrides_returns_new_nested_dict() -> None:
    original = {"train.lr": 0.1, "loss": {"name": "daal"}}
    out = apply_overrides(original, ["train.epochs=4", "loss.kappa=0"])
    assert original == {"train.lr": 0.1, "loss": {"name": "daal"}}
    assert out == {
        "train": {"lr": 0.1, "epochs": 4},
        "loss": {"name": "daal", "params": {"kappa": 0}},
    }
    assert apply_overrides({}, "eval.ks=[3]") == {"eval": {"ks": [3]}}


# -------------------------------------------------------------------- loss params routing


@pytest.mark.parametrize(
    "raw",
    [
        {"loss.kappa": 0, "loss.alpha": 16},
        {"loss": {"kappa": 0, "alpha": 16}},
        {"loss": {"params": {"kappa": 0, "alpha": 16}}},
        {"loss.params.kappa": 0, "loss": {"alpha": 16}},
        {"loss.params": {"kappa": 0}, "loss.alpha": 16},
    ],
)
def test_loss_hyperparameters_are_routed_into_params(raw: dict[str, Any]) -> None:
    cfg = config_from_dict(raw)
    assert cfg.loss.params == {"kappa": 0, "alpha": 16}
    assert cfg.loss.name == "daal" and cfg.loss.lr_multiplier == 100.0


def test_loss_params_keep_given_values_unvalidated() -> None:
    cfg = load_config(
        overrides=["loss.name=triplet", "loss.margin=0.2", "loss.mode=hard", "loss.x=[1, 2]"]
    )
    assert cfg.loss.name == "triplet"
    assert cfg.loss.params == {"margin": 0.2, "mode": "hard", "x": [1, 2]}


def test_loss_params_scientific_notation_is_a_float() -> None:
    assert load_config(overrides=["loss.delta=1e-2"]).loss.params == {"delta": 0.01}


def test_loss_params_must_be_a_mapping() -> None:
    with pytest.raises(DaalmlError) as excinfo:
        config_from_dict({"loss": {"params": [1, 2]}})
    assert "loss.params: expected mapping, got [1, 2]" in _error(excinfo)


# ----------------------------------------------------------------- unknown keys / sections


def test_unknown_key_in_file_names_file_key_and_valid_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  lrr: 0.1\n")
    with pytest.raises(DaalmlError) as excinfo:
        load_config(path)
    message = _error(excinfo)
    assert message.startswith(f"{path}: unknown key 'train.lrr'")
    assert "did you mean 'train.lr'" in message
    valid = message.split("valid keys in 'train': ")[1]
    assert valid.split(", ") == sorted(
        k.split(".")[1] for k in flat_keys() if k.startswith("train.")
    )


def test_unknown_flat_key_in_model(tmp_path: Path) -> None:
    with pytest.raises(DaalmlError) as excinfo:
        load_config(_write(tmp_path, "model.embeding_size: 3\n"))
    message = _error(excinfo)
    assert "unknown key 'model.embeding_size'" in message
    assert "valid keys in 'model': backbone, channels_last, embedding_size," in message


def test_unknown_section_lists_sections(tmp_path: Path) -> None:
    path = _write(tmp_path, "trian:\n  lr: 1\n")
    with pytest.raises(DaalmlError) as excinfo:
        load_config(path)
    message = _error(excinfo)
    assert message.startswith(f"{path}: unknown section 'trian'")
    assert "valid sections: data, eval, loss, model, train" in message


def test_top_level_key_without_section_is_unknown() -> None:
    with pytest.raises(DaalmlError, match="unknown section 'lr'"):
        config_from_dict({"lr": 0.1})


def test_too_deep_key_is_rejected() -> None:
    with pytest.raises(DaalmlError, match=r"train.lr: expected float, got \{'x': 1\}"):
        config_from_dict({"train.lr.x": 1})


def test_unknown_key_in_override_names_the_override(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  lr: 0.1\n")
    with pytest.raises(DaalmlError) as excinfo:
        load_config(path, ["train.epoch=3"])
    message = _error(excinfo)
    assert message.startswith("--set train.epoch=3: unknown key 'train.epoch'")
    assert "did you mean 'train.epochs'" in message


def test_unknown_key_in_base_names_base() -> None:
    with pytest.raises(DaalmlError, match=r"^<base>: unknown key 'data\.size'"):
        load_config(base={"data": {"size": 1}})


def test_section_must_be_a_mapping() -> None:
    with pytest.raises(DaalmlError, match="train: expected a mapping, got 5"):
        config_from_dict({"train": 5})


def test_non_string_key_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DaalmlError, match="config keys must be strings"):
        load_config(_write(tmp_path, "train:\n  1: 2\n"))


# ------------------------------------------------------------------------------ type errors


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"train.epochs": "ten"}, "train.epochs: expected int, got 'ten'"),
        ({"train.epochs": True}, "train.epochs: expected int, got True"),
        ({"train.epochs": 2.5}, "train.epochs: expected int, got 2.5"),
        ({"train.epochs": None}, "train.epochs: expected int, got None"),
        ({"train.lr": True}, "train.lr: expected float, got True"),
        ({"train.lr": "fast"}, "train.lr: expected float, got 'fast'"),
        ({"train.patience": "x"}, "train.patience: expected int or null, got 'x'"),
        ({"train.gradient_clip": "big"}, "train.gradient_clip: expected float or null, got 'big'"),
        ({"data.strict": 1}, "data.strict: expected bool, got 1"),
        ({"data.strict": "true"}, "data.strict: expected bool, got 'true'"),
        ({"data.dataset": 3}, "data.dataset: expected str, got 3"),
        ({"data.root": 7}, "data.root: expected str or null, got 7"),
        ({"data.font_files": "a.ttf"}, "data.font_files: expected list of str, got 'a.ttf'"),
        ({"eval.ks": [1, "2"]}, "eval.ks: expected list of int, got [1, '2']"),
        ({"eval.ks": [1, True]}, "eval.ks: expected list of int, got [1, True]"),
        ({"model.pretrained": None}, "model.pretrained: expected bool, got None"),
    ],
)
def test_wrong_types_name_key_type_and_value(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(DaalmlError) as excinfo:
        config_from_dict(raw, source="cfg.yaml")
    assert _error(excinfo) == f"cfg.yaml: {expected}"


def test_type_error_in_override_names_the_override(tmp_path: Path) -> None:
    with pytest.raises(DaalmlError) as excinfo:
        load_config(_write(tmp_path, "{}"), ["train.epochs=ten"])
    assert _error(excinfo) == "--set train.epochs=ten: train.epochs: expected int, got 'ten'"


def test_type_error_in_file_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "model:\n  embedding_size: big\n")
    with pytest.raises(DaalmlError) as excinfo:
        load_config(path)
    assert _error(excinfo) == f"{path}: model.embedding_size: expected int, got 'big'"


def test_path_like_values_become_strings(tmp_path: Path) -> None:
    cfg = config_from_dict({"data": {"root": tmp_path, "font_files": [tmp_path / "f.ttf"]}})
    assert cfg.data.root == str(tmp_path)
    assert cfg.data.font_files == [str(tmp_path / "f.ttf")]


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(DaalmlError) as excinfo:
        config_from_dict({"train.epochs": "x" * 500})
    assert len(_error(excinfo)) < 160


# ------------------------------------------------------------------ choices and ranges


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.dataset=imagenet", "data.dataset: expected one of cub200, cars196, sop, inshop,"),
        ("model.head=mlp", "model.head: expected one of paper, linear, pca; got 'mlp'"),
        ("train.scheduler=cosin", "did you mean 'cosine'"),
        ("train.accelerator=tpu", "train.accelerator: expected one of cpu, gpu, auto; got 'tpu'"),
        ("model.backbone=vgg", "small_cnn or timm:<name>; got 'vgg'"),
        ("model.backbone='timm:'", "model.backbone: 'timm:' needs a model name"),
        ("loss.name=''", "loss.name: must not be empty"),
        ("loss.name=proxyanchor", "got 'proxyanchor' (did you mean 'proxy_anchor'?)"),
        ("train.precision=''", "train.precision: must not be empty"),
    ],
)
def test_choice_fields_are_validated(override: str, expected: str) -> None:
    with pytest.raises(DaalmlError) as excinfo:
        load_config(overrides=[override])
    message = _error(excinfo)
    assert message.startswith("--set: ")
    assert expected in message


def test_loss_names_are_asked_of_the_loss_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytorch_metric_learning import losses as pml_losses

    from daalml.losses import registry

    with pytest.raises(DaalmlError) as excinfo:
        load_config(overrides=["loss.name=my_loss"])
    known = ", ".join(registry.loss_names())
    assert _error(excinfo) == f"--set: loss.name: expected one of {known}; got 'my_loss'"
    monkeypatch.setattr(registry, "_RECIPES", dict(registry._RECIPES))
    monkeypatch.setattr(registry, "RECIPE_NOTES", dict(registry.RECIPE_NOTES))
    registry.register_loss("my_loss", registry.Recipe(pml_losses.ContrastiveLoss, note="mine"))
    assert load_config(overrides=["loss.name=my_loss"]).loss.name == "my_loss"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.epochs=-1"], "train.epochs: must be >= 0, got -1"),
        (["train.batch_size=1", "train.samples_per_class=2"], "train.batch_size: must be >= 2"),
        (["train.samples_per_class=1"], "train.samples_per_class: must be >= 2, got 1"),
        (["train.batch_size=10"], "train.batch_size (10) must be divisible by"),
        (["train.devices=0"], "train.devices: must be >= 1, got 0"),
        (["train.lr=0"], "train.lr: must be > 0, got 0.0"),
        (["train.lr=.nan"], "train.lr: must be > 0"),
        (["train.weight_decay=-1e-4"], "train.weight_decay: must be >= 0"),
        (["train.gradient_clip=0"], "train.gradient_clip: must be > 0 or null"),
        (["train.patience=0"], "train.patience: must be >= 1, got 0"),
        (["train.eval_every=0"], "train.eval_every: must be >= 1"),
        (["train.val_classes=-2"], "train.val_classes: must be >= 0"),
        (["data.train_classes=0"], "data.train_classes: must be >= 1"),
        (["data.num_workers=-1"], "data.num_workers: must be >= 0"),
        (["data.image_size=300"], "data.resize (256) must be >= data.image_size (300)"),
        (["model.embedding_size=0"], "model.embedding_size: must be >= 1"),
        (["loss.lr_multiplier=-1"], "loss.lr_multiplier: must be >= 0"),
        (["eval.ks=[]"], "eval.ks: must list at least one k"),
        (["eval.ks=[0, 1]"], "eval.ks: every k must be >= 1"),
        (["eval.ks=[1, 1]"], "eval.ks: duplicate k"),
    ],
)
def test_ranges_are_validated(overrides: list[str], expected: str) -> None:
    with pytest.raises(DaalmlError) as excinfo:
        load_config(overrides=overrides)
    assert expected in _error(excinfo)


def test_global_batch_must_split_over_devices_and_nodes() -> None:
    ok = load_config(overrides=["train.devices=2", "train.num_nodes=3", "train.batch_size=48"])
    assert ok.train.batch_size == 48
    with pytest.raises(DaalmlError) as excinfo:
        load_config(overrides=["train.devices=2", "train.num_nodes=3", "train.batch_size=36"])
    assert "train.batch_size (36) must be divisible by" in _error(excinfo)
    assert "= 24" in str(excinfo.value)


def test_cross_field_error_names_all_sources(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  batch_size: 60\n")
    with pytest.raises(DaalmlError) as excinfo:
        load_config(path, ["train.samples_per_class=8"])
    assert _error(excinfo).startswith(f"{path} + --set: train.batch_size (60)")


def test_file_error_fixed_by_override_is_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  batch_size: 60\n  samples_per_class: 8\n")
    cfg = load_config(path, ["train.samples_per_class=6"])
    assert (cfg.train.batch_size, cfg.train.samples_per_class) == (60, 6)


# ----------------------------------------------------------- files and --set syntax errors


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(DaalmlError) as excinfo:
        load_config(path)
    assert _error(excinfo) == f"config file not found: {path}"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(DaalmlError, match="is a directory"):
        load_config(tmp_path)


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  lr: 0.1\n  epochs: [1, 2\n")
    with pytest.raises(DaalmlError) as excinfo:
        load_config(str(path))
    message = _error(excinfo)
    assert message.startswith(f"{path}:")
    assert "invalid YAML" in message
    line = int(message[len(str(path)) + 1 :].split(":")[0])
    assert 3 <= line <= 4


def test_bad_indentation_reports_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "data:\n  root: x\n   dataset: cub200\n")
    with pytest.raises(DaalmlError) as excinfo:
        load_config(path)
    assert _error(excinfo).startswith(f"{path}:3: invalid YAML")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"data:\n  root: caf\xe9\n")
    with pytest.raises(DaalmlError, match="cannot read config file"):
        load_config(path)


def test_top_level_list_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "- train.lr: 1\n")
    with pytest.raises(DaalmlError) as excinfo:
        load_config(path)
    assert _error(excinfo) == f"{path}: top level must be a mapping of config keys, got list"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs", "--set 'train.epochs': expected key=value"),
        ("=3", "--set '=3': missing key before '='"),
        ("eval.ks=[1, 2", "--set eval.ks=[1, 2: invalid YAML value"),
        ("train..lr=1", "malformed key 'train..lr'"),
    ],
)
def test_bad_set_syntax(override: str, expected: str) -> None:
    with pytest.raises(DaalmlError) as excinfo:
        apply_overrides({}, [override])
    assert expected in _error(excinfo)


# --------------------------------------------------------------------------- save / load


def _custom_config() -> Config:
    return load_config(
        overrides=[
            "data.dataset=csv",
            "data.root=/tmp/list.csv",
            "data.font_files=[a.ttf]",
            "model.backbone=timm:convnext_tiny",
            "model.head=pca",
            "loss.kappa=0",
            "loss.alpha=16.5",
            "loss.tags=[x, y]",
            "train.lr=1e-10",
            "train.gradient_clip=null",
            "train.patience=3",
            "train.precision=bf16-mixed",
            "eval.ks=[1, 100]",
        ]
    )


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    cfg = _custom_config()
    path = tmp_path / "runs" / "exp1" / "config.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert config_from_dict(cfg.to_dict()) == cfg
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temp file left
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert list(data) == ["data", "model", "loss", "train", "eval"]
    assert data["loss"]["params"] == {"kappa": 0, "alpha": 16.5, "tags": ["x", "y"]}


def test_save_overwrites_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    save_config(Config(), path)
    cfg = _custom_config()
    save_config(cfg, str(path))
    assert load_config(path) == cfg


def test_save_into_unwritable_place_is_a_daalml_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(DaalmlError, match="cannot write config to"):
        save_config(Config(), blocker / "config.yaml")


def test_save_non_yaml_value_is_a_daalml_error(tmp_path: Path) -> None:
    cfg = Config(loss=LossConfig(params={"f": object()}))
    path = tmp_path / "config.yaml"
    with pytest.raises(DaalmlError, match="not YAML-serialisable"):
        save_config(cfg, path)
    assert not path.exists()


def test_to_dict_is_a_deep_copy() -> None:
    cfg = _custom_config()
    d = cfg.to_dict()
    d["eval"]["ks"].append(7)
    d["loss"]["params"]["kappa"] = 9
    assert cfg.eval.ks == [1, 100] and cfg.loss.params["kappa"] == 0


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.floats(min_value=1e-12, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_any_positive_float_written_in_set_parses_back(value: float) -> None:
    for text in (repr(value), f"{value:e}", f"{value:g}"):
        cfg = load_config(overrides=[f"train.lr={text}", f"loss.delta={text}"])
        assert cfg.train.lr == float(text)
        assert cfg.loss.params["delta"] == float(text)
