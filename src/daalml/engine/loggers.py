"""The run's loggers (logs/metrics.csv kept across resumes, TensorBoard) and progress bar."""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor


class ProgressBar(TQDMProgressBar):
    """Closes its bars when training fails, so the error starts on a line of its own."""

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        for name in ("val_progress_bar", "train_progress_bar"):  # public properties
            try:
                bar = getattr(self, name)
            except TypeError:  # Lightning's way of saying this bar was never created
                continue
            if not bar.disable:
                bar.close()
        sys.stdout.flush()


class RunCSVLogger(Logger):
    """Writes logs/metrics.csv and appends to an existing one, so a resumed run keeps its log.

    Lightning's CSVLogger deletes an existing metrics.csv when it starts and has no public
    switch against that, so this is a Logger of its own on Lightning's public interface, with
    CSVLogger's file format: one row per logging call with its ``step``, the header the sorted
    union of the keys (the file rewritten, atomically here, when a new key appears). Every
    call is written at once, so a killed run keeps its log. Hyperparameters are not written
    (the config is saved with the run).
    """

    def __init__(self, save_dir: str | Path, name: str = "logs") -> None:
        super().__init__()
        self._save_dir = Path(save_dir)
        self._name = name
        self._keys: list[str] | None = None  # the file's header, read on the first write

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self._save_dir)

    @property
    def root_dir(self) -> str:
        return str(self._save_dir / self._name)

    @property
    def log_dir(self) -> str:
        return self.root_dir

    @property
    def metrics_file(self) -> Path:
        """logs/metrics.csv of the run."""
        return self._save_dir / self._name / "metrics.csv"

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing to write: the run's config is saved in its folder and checkpoints."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        row = {key: value.item() if isinstance(value, Tensor) else value
               for key, value in metrics.items()}
        row["step"] = step if step is not None else 0
        self._write(row)

    def _write(self, row: dict[str, Any]) -> None:
        path = self.metrics_file
        exists = path.is_file()
        if self._keys is None:
            self._keys = _header(path) if exists else []
        new = set(row) - set(self._keys)
        if new:
            self._keys = sorted([*self._keys, *new])
            if exists:
                _rewrite(path, self._keys)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a" if exists else "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._keys)
            if not exists:
                writer.writeheader()
            writer.writerow(row)


def _header(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        return next(csv.reader(handle), [])


def _rewrite(path: Path, fieldnames: list[str]) -> None:
    """Rewrite ``path`` under a new header."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    _write_rows(path, fieldnames, rows)


def _write_rows(path: Path, fieldnames: list[str], rows: list[dict[str, str]]) -> None:
    """Replace ``path`` by ``rows`` atomically: a kill leaves the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def trim_log(path: Path, before_epoch: int | None) -> None:
    """Keep the rows of epochs before ``before_epoch`` (a resume redoes the rest); None: none."""
    if not path.is_file():
        return
    if before_epoch is None:
        path.unlink()
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = sorted(reader.fieldnames or [])
        rows = [row for row in reader if _epoch_of(row) < before_epoch]
    _write_rows(path, header, rows)


def _epoch_of(row: dict[str, str]) -> float:
    try:
        return float(row.get("epoch") or "-1")
    except ValueError:
        return -1.0


def run_loggers(output: Path) -> list[Logger]:
    """logs/metrics.csv, plus TensorBoard event files when tensorboard is installed."""
    loggers: list[Logger] = [RunCSVLogger(save_dir=output, name="logs")]
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=output, name="logs", version="tensorboard"))
    except ImportError:
        pass
    return loggers
