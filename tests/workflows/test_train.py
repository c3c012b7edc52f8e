"""End to end: `daalml train` / `daalml evaluate` on tiny generated datasets, on the CPU."""

from __future__ import annotations

import csv
import json
from importlib import metadata
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from daalml.cli import app
from daalml.engine.checkpoint import load_checkpoint
from tests.data.builders import make_folder, make_inshop, make_sop
from tests.runs import tiny_run_config

METRIC_KEYS = {"recall@1", "recall@2", "recall@4", "recall@8", "nmi", "map@r", "r_precision"}
runner = CliRunner()


def _config(tmp: Path, **sections: dict) -> Path:
    root = make_folder(tmp / "ds", n_classes=12, per_class=4, size=40)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_run_config(root, tmp / "cache", **sections)))
    return path


def _train(*args: str) -> None:
    result = runner.invoke(app, ["train", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_train_writes_run_directory(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    run = tmp_path / "run"
    _train(str(cfg), "--output", str(run), "--set", "train.epochs=2")
    metrics = _metrics(run)
    assert METRIC_KEYS <= set(metrics)
    assert {*METRIC_KEYS, "queries_without_relevant"} == set(metrics["pretrained"])
    # the metrics' own count of queries left out agrees with the data checks' count
    assert metrics["queries_without_relevant"] == metrics["excluded_queries"]
    assert metrics["pretrained"]["queries_without_relevant"] == metrics["excluded_queries"]
    for key in METRIC_KEYS:
        assert 0.0 <= metrics[key] <= 1.0
        assert 0.0 <= metrics["pretrained"][key] <= 1.0
    assert metrics["skipped_images"] == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 2
    info = json.loads((run / "run.json").read_text())
    assert info["seed"] == 0
    assert info["versions"]["torch"] == metadata.version("torch")
    assert "git_commit" in info
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "logs" / "metrics.csv").is_file()
    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert checkpoint["epoch"] == 1
    assert checkpoint["daalml"]["config"]["model"]["embedding_size"] == 16


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    _train(str(cfg), "--output", str(tmp_path / "a"))
    _train(str(cfg), "--output", str(tmp_path / "b"))
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")


def test_resume_continues_from_last_checkpoint(tmp_path: Path) -> None:
    cfg = _config(tmp_path, train={"scheduler": "none"})  # the same schedule for 1 and 2 epochs
    run = tmp_path / "run"
    _train(str(cfg), "--output", str(run), "--set", "train.epochs=1")
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 0
    _train(str(cfg), "--output", str(run), "--set", "train.epochs=2", "--resume")
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 1
    # resuming gives what an uninterrupted 2-epoch run gives
    _train(str(cfg), "--output", str(tmp_path / "straight"), "--set", "train.epochs=2")
    assert _metrics(run) == _metrics(tmp_path / "straight")
    resumed = load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.ckpt")["state_dict"]
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


@pytest.mark.parametrize(
    ("dataset", "make", "categories"),
    [
        ("sop", make_sop, {"bicycle_final", "chair_final"}),
        ("inshop", make_inshop, {"WOMEN/Dresses", "MEN/Denim"}),
    ],
)
def test_sop_and_inshop_runs_report_per_category(
    tmp_path: Path, dataset: str, make, categories: set[str]
) -> None:
    root = make(tmp_path / "ds", n_classes=8, per_class=4, size=32)
    config = tiny_run_config(root, tmp_path / "cache", data={"dataset": dataset})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    _train(str(tmp_path / "config.yaml"), "--output", str(tmp_path / "run"))
    metrics = _metrics(tmp_path / "run")
    assert set(metrics["per_category"]) == categories
    assert set(metrics["pretrained"]["per_category"]) == categories
    for entry in metrics["per_category"].values():
        assert METRIC_KEYS - {"nmi"} <= set(entry)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    result = runner.invoke(app, ["train", str(cfg), "--output", str(tmp_path / "new"), "--resume"])
    assert result.exit_code == 2
    assert "no checkpoint to resume from" in result.output


def test_validation_selects_and_evaluate_reproduces(tmp_path: Path) -> None:
    cfg = _config(tmp_path, train={"val_classes": 2, "epochs": 2})
    run = tmp_path / "run"
    _train(str(cfg), "--output", str(run))
    metrics = _metrics(run)
    header = (run / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ("train/loss", "train/intra", "train/inter", "train/elastic", "val/nmi"):
        assert column in header  # the training curves' inputs, per epoch
    best = load_checkpoint(run / "checkpoints" / "best.ckpt")
    assert metrics["selected_epoch"] == best["epoch"]
    # metrics.json reports the validation figures of the selected epoch, as logged then
    rows = list(csv.DictReader((run / "logs" / "metrics.csv").open()))
    logged = [r for r in rows if r.get("val/recall@1") and int(r["epoch"]) == best["epoch"]]
    assert len(logged) == 1
    for key in ("recall@1", "map@r", "nmi"):
        assert metrics["validation"][key] == pytest.approx(float(logged[0][f"val/{key}"]))
    result = runner.invoke(
        app, ["evaluate", str(run / "checkpoints" / "best.ckpt"), "--output", str(tmp_path / "ev")]
    )
    assert result.exit_code == 0, result.output
    again = _metrics(tmp_path / "ev")
    for key in METRIC_KEYS:
        assert again[key] == pytest.approx(metrics[key], abs=1e-6)


def test_cached_features_pca_head_and_data_init(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        model={
            "backbone": "efficientnet_lite0",
            "pretrained": True,
            "head": "pca",
            "embedding_size": 8,
        },
        loss={"name": "daal_data_init"},
        train={"cache_features": True, "epochs": 2},
        data={"image_size": 64, "resize": 72},
    )
    run = tmp_path / "run"
    _train(str(cfg), "--output", str(run))
    assert list((tmp_path / "cache" / "features").glob("*.pt"))
    metrics = _metrics(run)
    assert METRIC_KEYS <= set(metrics)
    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert not any(k.startswith("model.backbone.") for k in checkpoint["state_dict"])
    last = str(run / "checkpoints" / "last.ckpt")
    result = runner.invoke(app, ["evaluate", last, "--output", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    assert _metrics(tmp_path / "ev")["recall@1"] == pytest.approx(metrics["recall@1"], abs=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "train.lrr=1"], "unknown key 'train.lrr'"),
        (["--set", "train.epochs=ten"], "train.epochs: expected int"),
        (["--set", "data.root=/nonexistent/ds"], "/nonexistent/ds"),
        (["--set", "loss.kapa=1"], "unknown parameter 'kapa'"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    cfg = _config(tmp_path)
    result = runner.invoke(app, ["train", str(cfg), "--output", str(tmp_path / "r"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_data_root_fails_before_any_weights_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad data.root is a one-line data error; the VGG19 weights are never fetched."""
    from torchvision.models import _api

    downloads: list[str] = []

    def download(url: str, *args: object, **kwargs: object) -> dict:
        downloads.append(url)
        raise AssertionError(f"downloaded {url}")

    monkeypatch.setattr(_api, "load_state_dict_from_url", download)
    cfg = _config(tmp_path)
    args = ["--set", "data.root=/nonexistent/ds", "--set", "model.backbone=vgg19"]
    args += ["--set", "model.pretrained=true", "--output", str(tmp_path / "r")]
    result = runner.invoke(app, ["train", str(cfg), *args])
    assert result.exit_code == 2, result.output
    assert "dataset root does not exist: /nonexistent/ds" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert downloads == []


def test_evaluate_rejects_foreign_checkpoint(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    result = runner.invoke(app, ["evaluate", str(foreign)])
    assert result.exit_code == 2
    assert "not a daalml checkpoint" in result.output
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["evaluate", str(garbage)])
    assert result.exit_code == 2
    assert "not a readable PyTorch checkpoint" in result.output


def test_last_checkpoint_follows_every_epoch_even_without_improvement(tmp_path: Path) -> None:
    cfg = _config(tmp_path, train={"val_classes": 2, "epochs": 3, "lr": 1e-12})
    run = tmp_path / "run"
    _train(str(cfg), "--output", str(run))
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 2
    assert (
        _metrics(run)["selected_epoch"]
        == load_checkpoint(run / "checkpoints" / "best.ckpt")["epoch"]
    )


def test_feature_cache_hit_or_miss_gives_the_same_run(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        model={
            "backbone": "efficientnet_lite0",
            "pretrained": True,
            "head": "linear",
            "embedding_size": 8,
        },
        train={"cache_features": True, "epochs": 1},
        data={"image_size": 64, "resize": 72},
    )
    _train(str(cfg), "--output", str(tmp_path / "miss"))  # computes the features
    _train(str(cfg), "--output", str(tmp_path / "hit"))  # loads them
    assert _metrics(tmp_path / "miss") == _metrics(tmp_path / "hit")
