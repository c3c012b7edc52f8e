"""`daalml benchmark --losses daal@kappa=1.0@...`: parameter variants of a registry loss."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from daalml.config import Config, load_config
from daalml.engine.checkpoint import load_module
from daalml.errors import DaalmlError
from daalml.workflows.benchmark import (
    METRIC_COLUMNS,
    PRETRAINED,
    bar_chart,
    parse_entry,
    parse_losses,
    run_benchmark,
    summarise,
)
from tests.cli import invoke_fails, invoke_ok
from tests.workflows.test_train import _config

VARIANT = "daal@kappa=1.0@delta_max=0.5"


def test_entries_parse_as_yaml_scalars() -> None:
    assert parse_entry("daal") == ("daal", {})
    name, params = parse_entry("daal@kappa=1@delta_max=0.5@normalize=false@segment=line")
    assert name == "daal"
    assert params == {"kappa": 1, "delta_max": 0.5, "normalize": False, "segment": "line"}
    assert type(params["delta_max"]) is float and type(params["kappa"]) is int
    assert parse_entry("daal@delta=1e-2")[1] == {"delta": 0.01}  # YAML 1.2 floats, as --set
    assert parse_losses(f"daal, {VARIANT},proxy_anchor@margin=0.2") == [
        "daal",
        VARIANT,
        "proxy_anchor@margin=0.2",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("daal,daall@kappa=1", "entry 'daall@kappa=1': unknown loss 'daall'; valid: daal, "),
        ("daal@kapa=1", "entry 'daal@kapa=1': loss 'daal': unknown parameter 'kapa'; valid: alpha"),
        (
            "daal@kappa=abc",
            "entry 'daal@kappa=abc': loss 'daal': parameter 'kappa' must be a number, got 'abc' "
            "(valid keys: alpha, delta",
        ),
        ("daal@normalize=1", "parameter 'normalize' must be true or false, got 1"),
        ("daal@segment=lin", "segment must be one of ('segment', 'line', 'point'), got 'lin'"),
        ("daal@delta_min=0.5", "delta_min (0.5) must not exceed delta_max (0.3)"),
        ("daal_fixed_margin@kappa=1", "'kappa' is fixed to 0.0 by this preset; use loss 'daal'"),
        ("proxy_anchor@kappa=1", "loss 'proxy_anchor': unknown parameter 'kappa'; valid: alpha"),
        ("daal@kappa", "entry 'daal@kappa': 'kappa' is not key=value"),
        ("daal@=1", "entry 'daal@=1': '=1' is not key=value"),
        ("daal@kappa=1@kappa=2", "parameter 'kappa' is given twice"),
        ("daal@kappa=[1]", "kappa='[1]' must be a number, true/false or a word, got list"),
        ("daal@kappa=[1", "kappa='[1' is not a YAML value"),
        ("daal@segment=a/b", "no '/' or '\\'"),
        ("daal,daal", "entry 'daal' is given twice"),
    ],
)
def test_bad_entries_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(DaalmlError) as caught:
        parse_losses(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def _fake_metrics(seed: int, kappa: float) -> dict[str, Any]:
    values = dict.fromkeys(METRIC_COLUMNS, 0.5 + 0.01 * seed + 0.1 * kappa)
    return {**values, PRETRAINED: dict.fromkeys(METRIC_COLUMNS, 0.3)}


def test_variant_runs_get_their_parameters_and_folders(tmp_path: Path) -> None:
    """Fake training: what each run is given, where it goes, what is reused and resumed."""
    base = load_config(_config(tmp_path), ())
    calls: list[tuple[str, dict[str, Any], int, Path, bool]] = []

    def fake_train(cfg: Config, run_dir: Path, *, resume: bool, progress: bool) -> dict:
        calls.append((cfg.loss.name, dict(cfg.loss.params), cfg.train.seed, run_dir, resume))
        metrics = _fake_metrics(cfg.train.seed, float(cfg.loss.params.get("kappa", 0.5)))
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    out = tmp_path / "bench"
    losses = ["daal", VARIANT]
    rows = run_benchmark(base, losses, 2, out, train_fn=fake_train, progress=False)
    assert [(c[0], c[1], c[2]) for c in calls] == [
        ("daal", {}, 0),
        ("daal", {"kappa": 1.0, "delta_max": 0.5}, 0),
        ("daal", {}, 1),
        ("daal", {"kappa": 1.0, "delta_max": 0.5}, 1),
    ]
    assert calls[1][3] == out / "runs" / VARIANT / "seed0"
    assert {r["loss"] for r in rows} == {"daal", VARIANT, PRETRAINED}
    with (out / "results.csv").open() as handle:
        assert [r["loss"] for r in csv.DictReader(handle)].count(VARIANT) == 2
    assert f"| {VARIANT} | " in (out / "results.md").read_text()
    figure = bar_chart(summarise(rows))
    assert figure is not None
    for axes in figure.axes:
        assert [t.get_text() for t in axes.get_xticklabels()] == [VARIANT, "daal", PRETRAINED]

    # a rerun: finished runs are reused; one without metrics.json resumes from last.ckpt
    (out / "runs" / VARIANT / "seed1" / "metrics.json").unlink()
    (out / "runs" / VARIANT / "seed1" / "checkpoints").mkdir()
    (out / "runs" / VARIANT / "seed1" / "checkpoints" / "last.ckpt").write_bytes(b"")
    calls.clear()
    run_benchmark(base, losses, 2, out, train_fn=fake_train, progress=False)
    assert [(c[0], c[2], c[3].parent.name, c[4]) for c in calls] == [("daal", 1, VARIANT, True)]


def test_runs_of_another_config_are_neither_reused_nor_resumed(tmp_path: Path) -> None:
    """A rerun with another protocol stops with a one-line error before training; keys that
    only say where the data lie or how they are read may differ."""
    from daalml.config import save_config

    base = load_config(_config(tmp_path), ())
    trained: list[int] = []

    def fake_train(cfg: Config, run_dir: Path, *, resume: bool, progress: bool) -> dict:
        trained.append(cfg.train.seed)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        metrics = _fake_metrics(cfg.train.seed, 0.5)
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    out = tmp_path / "bench"
    run_benchmark(base, ["daal"], 1, out, train_fn=fake_train, progress=False)
    moved = load_config(_config(tmp_path), ("data.num_workers=3", f"data.root={tmp_path}/x"))
    run_benchmark(moved, ["daal"], 1, out, train_fn=fake_train, progress=False)
    assert trained == [0]  # reused
    longer = load_config(_config(tmp_path), (f"train.epochs={base.train.epochs + 1}",))
    with pytest.raises(DaalmlError) as caught:
        run_benchmark(longer, ["daal"], 1, out, train_fn=fake_train, progress=False)
    message = str(caught.value)
    assert "runs/daal/seed0 was started with another config: train.epochs is" in message
    assert "\n" not in message and trained == [0]


def test_bad_entry_stops_before_any_training(tmp_path: Path) -> None:
    base = load_config(_config(tmp_path), ())

    def never(*args: Any, **kwargs: Any) -> dict:
        raise AssertionError("trained although an entry is invalid")

    with pytest.raises(DaalmlError, match="entry 'daal@kapa=1'"):
        run_benchmark(base, ["daal", "daal@kapa=1"], 1, tmp_path / "b", train_fn=never)


def test_benchmark_cli_trains_a_variant(tmp_path: Path) -> None:
    """End to end: the variant's run trains with its parameters and is reported by its name."""
    cfg = _config(tmp_path)
    out = tmp_path / "bench"
    args = ["benchmark", str(cfg), "--losses", f"daal,{VARIANT}", "--seeds", "1", "-o", str(out)]
    printed = invoke_ok(*args)
    assert f"| {VARIANT} |" in printed
    run = out / "runs" / VARIANT / "seed0"
    saved = yaml.safe_load((run / "config.yaml").read_text())["loss"]
    assert saved["name"] == "daal" and saved["params"] == {"kappa": 1.0, "delta_max": 0.5}
    module, _ = load_module(run / "checkpoints" / "last.ckpt")
    assert (module.loss.loss.kappa, module.loss.loss.delta_max) == (1.0, 0.5)
    with (out / "results.csv").open() as handle:
        names = sorted({r["loss"] for r in csv.DictReader(handle)})
    assert names == ["daal", VARIANT, PRETRAINED]
    assert (out / "results.png").is_file()
    message = invoke_fails("benchmark", str(cfg), "--losses", "daal@kapa=1", "-o", str(out))
    assert "entry 'daal@kapa=1'" in message and "valid: alpha" in message
