"""The run's loggers (logs/metrics.csv kept across resumes, TensorBoard) and progress bar."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


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


class _AppendingWriter(ExperimentWriter):
    """Appends to an existing metrics.csv (Lightning deletes it): a resumed run keeps its log.

    Lightning has no public switch for this: its writer deletes the file in the private
    ``_check_log_dir_exists``, which this overrides (and :class:`_CSVLogger` builds the writer).
    A Logger of our own would have to copy CSVLogger's row and header handling instead.
    """

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = next(csv.reader(handle), [])


class _CSVLogger(CSVLogger):
    """CSVLogger writing logs/metrics.csv through :class:`_AppendingWriter`."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


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
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _epoch_of(row: dict[str, str]) -> float:
    try:
        return float(row.get("epoch") or "-1")
    except ValueError:
        return -1.0


def run_loggers(output: Path) -> list[Logger]:
    """logs/metrics.csv, plus TensorBoard event files when tensorboard is installed."""
    # flushed at every logging call (once or twice an epoch), so a killed run keeps its log
    loggers: list[Logger] = [
        _CSVLogger(save_dir=output, name="logs", version="", flush_logs_every_n_steps=1)
    ]
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=output, name="logs", version="tensorboard"))
    except ImportError:
        pass
    return loggers
