"""`daalml demo --quick` end to end, and `daalml benchmark` on a generated dataset."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from daalml.cli import app
from daalml.config import load_config
from daalml.errors import DaalmlError
from daalml.workflows.benchmark import (
    METRIC_COLUMNS,
    VALIDATION_COLUMNS,
    markdown_table,
    parse_losses,
    run_benchmark,
    summarise,
)
from tests.workflows.test_train import _config

runner = CliRunner()


def test_demo_quick_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(
        app, ["demo", "--quick", "--output", str(out), "--seed", "0"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["untrained", "proxy_anchor", "daal"]
    for entry in metrics.values():
        assert set(entry) == set(METRIC_COLUMNS)
        assert all(0.0 <= v <= 1.0 for v in entry.values())
    assert metrics["daal"]["recall@1"] > metrics["untrained"]["recall@1"]
    with Image.open(out / "tsne.png") as picture:
        assert picture.width > 800 and picture.height > 300
    report = (out / "report.md").read_text()
    assert "tsne.png" in report and "daalml demo" in report
    for entry in ("daal", "proxy_anchor"):
        assert (out / "runs" / entry / "metrics.json").is_file()


def test_benchmark_rows_files_and_reuse(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    out = tmp_path / "bench"
    args = [
        "benchmark",
        str(cfg),
        "--losses",
        "daal,proxy_anchor",
        "--seeds",
        "2",
        "--output",
        str(out),
    ]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["loss", "seed", *METRIC_COLUMNS, *VALIDATION_COLUMNS]
    assert all(r[c] == "" for r in rows for c in VALIDATION_COLUMNS)  # no validation split
    assert "Validation classes" not in (out / "results.md").read_text()
    pairs = sorted((r["loss"], r["seed"]) for r in rows)
    assert pairs == sorted(
        [(loss, str(seed)) for loss in ("daal", "proxy_anchor", "pretrained") for seed in (0, 1)]
    )
    table = (out / "results.md").read_text()
    for loss in ("daal", "proxy_anchor", "pretrained"):
        assert f"| {loss} |" in table
    assert "**" in table and "±" in table
    assert (out / "results.png").is_file()
    # seeds differ, and a rerun reuses the finished runs (no retraining: same file times)
    daal = [r for r in rows if r["loss"] == "daal"]
    assert daal[0]["recall@1"] != daal[1]["recall@1"] or daal[0]["nmi"] != daal[1]["nmi"]
    stamp = (out / "runs" / "daal" / "seed0" / "metrics.json").stat().st_mtime_ns
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0
    assert (out / "runs" / "daal" / "seed0" / "metrics.json").stat().st_mtime_ns == stamp


def test_summary_and_table_math() -> None:
    rows = [
        {"loss": "a", "seed": 0, **dict.fromkeys(METRIC_COLUMNS, 0.5)},
        {"loss": "a", "seed": 1, **dict.fromkeys(METRIC_COLUMNS, 0.7)},
        {"loss": "b", "seed": 0, **dict.fromkeys(METRIC_COLUMNS, 0.9)},
    ]
    summary = summarise(rows)
    assert summary["a"]["recall@1"] == pytest.approx((0.6, 0.1414213562))
    assert summary["b"]["nmi"] == (0.9, 0.0)
    table = markdown_table(summary, seeds=2)
    lines = [line for line in table.splitlines() if line.startswith("| ") and "loss" not in line]
    assert lines[0].startswith("| b | **90.00 ± 0.00**")
    assert lines[1].startswith("| a | 60.00 ± 14.14")


def test_validation_figures_are_reported_apart_from_the_test_ones(tmp_path: Path) -> None:
    """Settings are chosen on validation: results.csv and results.md carry those figures too."""
    val = {"daal": (0.8, 0.6), "proxy_anchor": (0.7, 0.9)}  # per loss: seed 0, seed 1 recall@1

    def fake_train(cfg: Any, run_dir: Path, **_: Any) -> dict[str, Any]:
        seed = cfg.train.seed
        validation = {"recall@1": val[cfg.loss.name][seed], "map@r": 0.5, "nmi": 0.4}
        test = dict.fromkeys(METRIC_COLUMNS, 0.1 * (seed + 1))
        return {**test, "pretrained": test, "validation": validation}

    base = load_config(_config(tmp_path))
    rows = run_benchmark(
        base, ["daal", "proxy_anchor"], 2, tmp_path / "b", train_fn=fake_train, progress=False
    )
    assert [r["val_recall@1"] for r in rows if r["loss"] == "daal"] == [0.8, 0.6]
    with (tmp_path / "b" / "results.csv").open() as handle:
        saved = {(r["loss"], r["seed"]): r for r in csv.DictReader(handle)}
    assert float(saved[("proxy_anchor", "1")]["val_recall@1"]) == 0.9
    assert saved[("pretrained", "0")]["val_recall@1"] == ""
    text = (tmp_path / "b" / "results.md").read_text()
    validation = text[text.index("Validation classes") :]
    lines = [
        line for line in validation.splitlines() if line.startswith("| ") and "loss" not in line
    ]
    assert len(lines) == 2  # no pretrained row: it has no selected epoch
    assert lines[0].startswith("| proxy_anchor | **80.00 ± 14.14** | **50.00 ± 0.00**")
    assert lines[1].startswith("| daal | 70.00 ± 14.14")


def test_unknown_loss_names_are_rejected() -> None:
    with pytest.raises(DaalmlError, match="unknown loss 'daall'"):
        parse_losses("daal,daall")
    assert "daal_point" in parse_losses("all")
