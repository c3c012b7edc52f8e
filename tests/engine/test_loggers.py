"""The progress bar closes its bars when training fails (through Lightning's public properties);
logs/metrics.csv is kept and appended to across resumes."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import torch

from daalml.engine.loggers import ProgressBar, RunCSVLogger


class _Bar(SimpleNamespace):
    def close(self) -> None:
        self.closed = True


def test_a_failed_run_closes_the_bars_it_has_and_skips_the_missing_ones() -> None:
    progress = ProgressBar(leave=True)
    progress.on_exception(None, None, RuntimeError("boom"))  # type: ignore[arg-type]  # no bars yet
    shown, hidden = _Bar(disable=False, closed=False), _Bar(disable=True, closed=False)
    progress.train_progress_bar = shown  # type: ignore[assignment]
    progress.val_progress_bar = hidden  # type: ignore[assignment]
    progress.on_exception(None, None, RuntimeError("boom"))  # type: ignore[arg-type]
    assert shown.closed and not hidden.closed


def test_csv_logger_appends_to_an_existing_log_and_merges_new_keys(tmp_path: Path) -> None:
    """A resumed run keeps the rows already in logs/metrics.csv (Lightning's CSVLogger deletes them)."""
    log = tmp_path / "logs" / "metrics.csv"
    log.parent.mkdir()
    log.write_text("epoch,step,train/loss\n0,9,1.5\n")
    logger = RunCSVLogger(save_dir=tmp_path, name="logs")
    assert logger.log_dir == str(tmp_path / "logs") and logger.version == ""
    logger.log_metrics({"epoch": 1, "train/loss": torch.tensor(0.5)}, step=19)
    # on disk at once: a run killed now keeps this row
    assert log.read_text() == "epoch,step,train/loss\n0,9,1.5\n1,19,0.5\n"
    logger.log_metrics({"epoch": 1, "val/recall@1": 0.75}, step=19)
    with log.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["epoch", "step", "train/loss", "val/recall@1"]
    assert [row["train/loss"] for row in rows] == ["1.5", "0.5", ""]
    assert rows[-1]["val/recall@1"] == "0.75"
    assert not list(log.parent.glob(".*.tmp"))  # the header rewrite left no temporary file


def test_csv_logger_starts_a_new_log(tmp_path: Path) -> None:
    logger = RunCSVLogger(save_dir=tmp_path)
    logger.log_hyperparams({"lr": 1.0})  # written nowhere: the config is saved with the run
    logger.log_metrics({"epoch": 0, "train/loss": 2.0}, step=4)
    assert (tmp_path / "logs" / "metrics.csv").read_text() == "epoch,step,train/loss\n0,4,2.0\n"
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["metrics.csv"]
