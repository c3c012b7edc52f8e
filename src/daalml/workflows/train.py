"""`train(config, output_dir)`: a training run as a plain function; the CLI is a shell over it.

It composes the engine (data, module, Trainer, callbacks, checkpoints, logs) and writes the run
directory: config.yaml, run.json, metrics.json, checkpoints/, logs/.
"""

from __future__ import annotations

import signal
import threading
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from daalml.config import Config
from daalml.data.preprocessing import preprocessing_for
from daalml.engine.checkpoint import (
    PREPROCESSING_KEY,
    AtomicCheckpointIO,
    SaveOnInterrupt,
    StampCheckpoint,
    check_resumable,
    load_checkpoint,
    resume_point,
)
from daalml.engine.data import RunData, list_images
from daalml.engine.datamodule import RunDataModule
from daalml.engine.distributed import strategy
from daalml.engine.inference import model_metrics
from daalml.engine.loggers import ProgressBar, run_loggers
from daalml.engine.module import VAL_METRICS_KEY, EmbeddingModule, NonFiniteLossError
from daalml.engine.run_record import package_version, write_json
from daalml.errors import DaalmlError
from daalml.models.build import build_model
from daalml.workflows.prepare_run import PrepareRun, has_validation

METRICS_FILE = "metrics.json"


def train(
    cfg: Config,
    output_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train as ``cfg`` says; write config.yaml, run.json, metrics.json, checkpoints/, logs/.

    Returns the metrics written to metrics.json: the test metrics of the selected model, the
    `pretrained` backbone's metrics under that key, and counts of what was left out. With
    ``resume`` the run goes on from checkpoints/last.ckpt exactly where it stopped. A NaN or
    Inf loss raises :class:`NonFiniteLossError` (a DaalmlError); Ctrl-C saves last.ckpt and
    raises KeyboardInterrupt.
    """
    output = Path(output_dir)
    checkpoints = output / "checkpoints"
    last = checkpoints / "last.ckpt"
    checkpoint: dict[str, Any] | None = None
    start = (0, 0)
    if resume:
        if not last.is_file():
            raise DaalmlError(f"--resume: no checkpoint to resume from at {last}")
        checkpoint = load_checkpoint(last)
        check_resumable(checkpoint, cfg.to_dict(), last)
        start = resume_point(checkpoint)
    elif last.is_file():
        warnings.warn(
            f"{output} already holds a run ({last}); starting it over "
            "(pass --resume to continue it instead)",
            stacklevel=2,
        )
    listed = list_images(cfg)  # a bad data.root fails here, before any weights are downloaded
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    model = build_model(cfg)
    prep = preprocessing_for(cfg, model.backbone)  # saved with the checkpoints
    datamodule = RunDataModule(cfg, model.backbone, listed)
    module = EmbeddingModule(cfg, model, None)  # its loss comes in PrepareRun.setup
    has_val = has_validation(cfg)
    selector = ModelCheckpoint(
        dirpath=checkpoints,
        filename="best",
        monitor="val/recall@1" if has_val else None,
        mode="max",
        save_top_k=1,
        enable_version_counter=False,
    )
    # last.ckpt every epoch, improved or not (save_last of a monitored checkpoint is not)
    latest = ModelCheckpoint(
        dirpath=checkpoints,
        filename="last",
        monitor=None,
        save_top_k=1,
        every_n_epochs=1,
        enable_version_counter=False,
    )
    # PrepareRun adds what the data tells: num_train_classes, features, pretrained
    stamp = StampCheckpoint(
        {
            "version": package_version("daalml"),
            "config": cfg.to_dict(),
            PREPROCESSING_KEY: prep.to_dict(),
        }
    )
    run = PrepareRun(cfg, output, start if resume else None, checkpoint, stamp)
    del checkpoint  # PrepareRun checks it against the module, then drops it
    interrupt = SaveOnInterrupt(last)
    callbacks: list[Callback] = [run, selector, latest, stamp, interrupt]
    if has_val and cfg.train.patience:
        callbacks.append(
            EarlyStopping(monitor="val/recall@1", mode="max", patience=cfg.train.patience)
        )
    if progress:
        callbacks.append(ProgressBar(leave=True))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")
        trainer = L.Trainer(
            max_epochs=cfg.train.epochs,
            accelerator=cfg.train.accelerator,
            devices=cfg.train.devices,
            num_nodes=cfg.train.num_nodes,
            strategy=strategy(cfg.train),
            precision=cfg.train.precision,
            gradient_clip_val=cfg.train.gradient_clip,
            deterministic=cfg.train.deterministic,
            check_val_every_n_epoch=cfg.train.eval_every,
            num_sanity_val_steps=0,
            logger=run_loggers(output),
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=progress,
            enable_model_summary=False,
            use_distributed_sampler=False,
            log_every_n_steps=1,
        )
        _fit(trainer, module, datamodule, last if resume else None, interrupt)
    selected_epoch = _select_best(trainer, module, selector.best_model_path if has_val else "")
    data = datamodule.run_data
    # under DDP every rank embeds a share
    test_metrics = model_metrics(module, data, cfg, trainer.strategy.root_device)
    if not trainer.is_global_zero:
        return {}
    results: dict[str, Any] = dict(test_metrics)
    results["pretrained"] = run.pretrained
    results["selected_epoch"] = int(selected_epoch)
    if has_val:  # the validation classes' figures at the selected epoch (what selection saw)
        results["validation"] = dict(module.val_metrics)
    results["skipped_images"] = len(data.skipped_images)
    results["excluded_queries"] = datamodule.excluded_queries
    write_json(output / METRICS_FILE, results)
    _warn_skipped(data, output)
    return results


def _select_best(trainer: L.Trainer, module: EmbeddingModule, best: str) -> int:
    """Give every rank the weights (and validation figures) of ``best``; the selected epoch.

    With no best checkpoint the module keeps its last weights (the last epoch is selected).
    Broadcasting, rather than reading on every rank, needs no file system shared by the nodes.
    """
    state = None
    if trainer.is_global_zero and best and Path(best).is_file():
        saved = torch.load(best, map_location="cpu", weights_only=False)
        state = {
            "state_dict": saved["state_dict"],
            "epoch": int(saved["epoch"]),
            "val_metrics": saved.get(VAL_METRICS_KEY, {}),
        }
    state = trainer.strategy.broadcast(state, src=0)
    if state is None:
        return trainer.current_epoch - 1
    module.load_state_dict(state["state_dict"])
    module.val_metrics = dict(state["val_metrics"])
    return state["epoch"]


def _fit(
    trainer: L.Trainer,
    module: EmbeddingModule,
    datamodule: RunDataModule,
    ckpt_path: Path | None,
    interrupt: SaveOnInterrupt,
) -> None:
    """trainer.fit, with Ctrl-C as KeyboardInterrupt and NaN as a one-line error."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except NonFiniteLossError as err:
        last = interrupt.path
        kept = (
            f"the last good checkpoint is kept: {last}"
            if last.is_file()
            else "no checkpoint had been written yet"
        )
        raise NonFiniteLossError(f"training stopped: {err.detail}; {kept}", err.hint) from None
    except SystemExit:
        # Lightning turns KeyboardInterrupt into sys.exit(1) after its on_exception hooks
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        interrupt.restore()
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)
    if trainer.interrupted or interrupt.requested:
        raise KeyboardInterrupt  # Ctrl-C during the last epoch's end: last.ckpt is final


def _warn_skipped(data: RunData, output: Path) -> None:
    if not data.skipped_images:
        return
    shown = ", ".join(str(path) for path, _ in data.skipped_images[:3])
    more = len(data.skipped_images) - 3
    warnings.warn(
        f"{output}: {len(data.skipped_images)} unreadable images were skipped ({shown}"
        f"{f' and {more} more' if more > 0 else ''}); skipped_images in metrics.json counts "
        "them, data.strict: true makes them an error",
        stacklevel=3,
    )
