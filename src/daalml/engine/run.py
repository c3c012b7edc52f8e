"""`train(config)` and `evaluate(checkpoint)` as plain functions; the CLI is a shell over them."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from torch.utils.data import DataLoader, Dataset, Subset

from daalml.config import Config, config_from_dict, save_config
from daalml.engine.checkpoint import (
    META_KEY,
    AtomicCheckpointIO,
    SaveOnInterrupt,
    StampCheckpoint,
    check_resumable,
    check_weights_fit,
    load_checkpoint,
    remove_stale_temporaries,
    resume_point,
)
from daalml.engine.data import (
    RunData,
    eval_loader,
    prepare_data,
    retrieval_exclusions,
    train_loader,
)
from daalml.engine.distributed import (
    gather_tensor,
    is_distributed,
    launched_as_rank_zero,
    launched_local_rank,
    shard,
    strategy,
    world,
)
from daalml.engine.module import VAL_METRICS_KEY, EmbeddingModule, NonFiniteLossError
from daalml.errors import DaalmlError
from daalml.losses.registry import MetricLoss, build_loss
from daalml.metrics import query_gallery_metrics, retrieval_metrics
from daalml.models.backbones import Backbone, build_backbone, register_backbone
from daalml.models.embedder import EmbeddingModel, freeze_batchnorm, freeze_module
from daalml.models.heads import PCAHead, build_head
from daalml.models.stages import split_backbone

METRICS_FILE = "metrics.json"


def _register_small_cnn(in_channels: int) -> None:
    """small_cnn trains from scratch: grey glyphs have one channel, photos three."""
    from daalml.models.small_cnn import SmallCNN

    register_backbone(
        "small_cnn", lambda *, pretrained: SmallCNN(in_channels=in_channels), replace=True
    )


def build_model(cfg: Config) -> EmbeddingModel:
    """Backbone + head as the config says (nothing is trained or fitted yet)."""
    _register_small_cnn(1 if cfg.data.dataset == "glyphs" else 3)
    backbone: Backbone = build_backbone(
        cfg.model.backbone, pretrained=cfg.model.pretrained, channels_last=cfg.model.channels_last
    )
    head = build_head(
        cfg.model.head,
        backbone.feature_dim,
        cfg.model.embedding_size,
        hidden_size=cfg.model.hidden_size,
    )
    if cfg.model.train_blocks:
        # the trunk before the last train_blocks stages is frozen; freeze_bn covers the rest
        for path in split_backbone(backbone, cfg.model.train_blocks).trunk.paths:
            freeze_module(backbone.body.get_submodule(path))
        if cfg.model.freeze_bn:
            freeze_batchnorm(backbone)
    elif cfg.model.freeze_backbone or cfg.train.cache_features:
        freeze_module(backbone)
    elif cfg.model.freeze_bn:
        freeze_batchnorm(backbone)
    return EmbeddingModel(backbone, head)


# ---------------------------------------------------------------------------- embedding
@torch.no_grad()
def embed(
    fn, dataset: Dataset, *, batch_size: int, device: torch.device, num_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``fn`` to every input of ``dataset`` in order: (embeddings, labels) on the CPU."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    outputs, labels = [], []
    for inputs, batch_labels in loader:
        outputs.append(fn(inputs.to(device)).float().cpu())
        labels.append(torch.as_tensor(batch_labels).long())
    return torch.cat(outputs), torch.cat(labels)


def embed_sharded(
    fn, dataset: Dataset, *, batch_size: int, device: torch.device, num_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`embed` split across DDP ranks: each embeds its contiguous share, all get it all.

    The gathered rows come back in the dataset's order; without a process group this is
    :func:`embed`. Every rank needs a non-empty share (``len(dataset) >= world size``).
    """
    kwargs = {"batch_size": batch_size, "device": device, "num_workers": num_workers}
    if not is_distributed():
        return embed(fn, dataset, **kwargs)
    size, rank = world()
    embeddings, labels = embed(fn, Subset(dataset, list(shard(len(dataset), size, rank))), **kwargs)
    return gather_tensor(embeddings, device), gather_tensor(labels, device)


def _metrics(fn, data: RunData, cfg: Config, device: torch.device) -> dict[str, Any]:
    """Test metrics of ``fn``; under DDP every rank embeds a share and rank 0 alone scores.

    Where the layout has categories (SOP, In-Shop) the result also has ``per_category``."""
    kwargs = {"batch_size": cfg.train.eval_batch_size, "device": device}
    if not (data.features or data.activations):
        kwargs["num_workers"] = cfg.data.num_workers
    if data.test is not None:
        embeddings, labels = embed_sharded(fn, data.test, **kwargs)
        if world()[1] != 0:
            return {}
        return retrieval_metrics(
            embeddings, labels, ks=cfg.eval.ks, seed=cfg.train.seed, categories=data.categories
        )
    assert data.query is not None and data.gallery is not None
    q, ql = embed_sharded(fn, data.query, **kwargs)
    g, gl = embed_sharded(fn, data.gallery, **kwargs)
    if world()[1] != 0:
        return {}
    return query_gallery_metrics(
        q, ql, g, gl, ks=cfg.eval.ks, seed=cfg.train.seed, categories=data.categories
    )


def _device(cfg: Config) -> torch.device:
    wants_gpu = cfg.train.accelerator in ("gpu", "auto") and torch.cuda.is_available()
    if not wants_gpu:
        return torch.device("cpu")
    # before DDP starts, each process of a node works on its own GPU
    return torch.device("cuda", launched_local_rank() % torch.cuda.device_count())


def pretrained_metrics(model: EmbeddingModel, data: RunData, cfg: Config) -> dict[str, float]:
    """The backbone's own features before any training (MLRC's `pretrained` row)."""
    device = _device(cfg)
    if data.features:
        return _metrics(lambda x: x, data, cfg, device)
    backbone = model.backbone
    was_training = backbone.training
    backbone.to(device).eval()
    try:
        return _metrics(backbone, data, cfg, device)
    finally:
        backbone.train(was_training)


def model_metrics(module: EmbeddingModule, data: RunData, cfg: Config) -> dict[str, float]:
    """Test metrics of the trained embedding model."""
    device = _device(cfg)
    module.to(device).eval()
    return _metrics(module, data, cfg, device)


# ---------------------------------------------------------------------------- training
class _DataModule(L.LightningDataModule):
    """Training batches from (``epoch``, ``skip``) on: where a resumed run goes on."""

    def __init__(self, data: RunData, cfg: Config, *, epoch: int = 0, skip: int = 0) -> None:
        super().__init__()
        self.data = data
        self.cfg = cfg
        self.epoch = epoch
        self.skip = skip

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        return train_loader(
            self.data,
            self.cfg,
            world_size=trainer.world_size,
            rank=trainer.global_rank,
            epoch=self.epoch,
            skip=self.skip,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.data.val is None:
            return []
        val: Dataset = self.data.val
        world_size = self.trainer.world_size
        if world_size > 1:  # each rank embeds its share; the module gathers them in order
            val = Subset(val, shard(len(val), world_size, self.trainer.global_rank))
        cached = self.data.features or self.data.activations
        return eval_loader(val, self.cfg, features=cached)


class _ProgressBar(TQDMProgressBar):
    """Closes its bars when training fails, so the error starts on a line of its own."""

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        for name in ("_val_progress_bar", "_train_progress_bar"):
            bar = getattr(self, name, None)
            if bar is not None and not bar.disable:
                bar.close()
        sys.stdout.flush()


class _AppendingWriter(ExperimentWriter):
    """Appends to an existing metrics.csv (Lightning deletes it): a resumed run keeps its log."""

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


def _trim_log(path: Path, before_epoch: int | None) -> None:
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


def _loggers(output: Path) -> list[Logger]:
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


def _initialise(model: EmbeddingModel, loss: MetricLoss, data: RunData, cfg: Config) -> None:
    """Fit a PCA head and the data-initialised loss from the non-augmented training set."""
    head = model.head
    needs_pca = isinstance(head, PCAHead) and not head.pca_fitted
    if not (needs_pca or loss.needs_data_init):
        return
    device = _device(cfg)
    dataset = data.train_eval if data.train_eval is not None else data.train
    kwargs = {"batch_size": cfg.train.eval_batch_size, "device": device}
    if data.features:
        features, labels = embed(lambda x: x, dataset, **kwargs)
    else:
        model.backbone.to(device).eval()
        features, labels = embed(model.backbone, dataset, **kwargs)
    if needs_pca:
        head.fit_pca(features)
    if loss.needs_data_init:
        embeddings = model.to("cpu").embed_features(features)
        loss.loss.initialize_from_embeddings(embeddings, labels)


# ---------------------------------------------------------------------------- run record
def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _git(*args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None


def _git_state() -> tuple[str | None, bool | None]:
    """(commit, uncommitted changes?) of the daalml source tree, when it is a git checkout.

    An installed copy inside some other repository (a venv in a project) reports None: the
    package's own file must be tracked by the repository found.
    """
    tracked = _git("ls-files", "--error-unmatch", Path(__file__).name)
    if tracked is None or tracked.returncode != 0:
        return None, None
    head = _git("rev-parse", "HEAD")
    commit = head.stdout.strip() if head is not None and head.returncode == 0 else ""
    if not commit:
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    dirty = bool(status.stdout.strip()) if status is not None and status.returncode == 0 else None
    return commit, dirty


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_info(cfg: Config) -> dict[str, Any]:
    """What reproduces a run: seed, resolved config, package versions, git commit, machine."""
    packages = ["daalml", "torch", "torchvision", "lightning", "pytorch-metric-learning", "numpy"]
    commit, dirty = _git_state()
    return {
        "seed": cfg.train.seed,
        "deterministic": cfg.train.deterministic,
        "config": cfg.to_dict(),
        "versions": {name: _version(name) for name in packages},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "git_dirty": dirty,
        "command": list(sys.argv),
        "started": _now(),
    }


def _record_run(path: Path, cfg: Config, resumed_at: tuple[int, int] | None) -> None:
    """Write run.json; a resume keeps the first record and appends its own to ``resumes``."""
    info = run_info(cfg)
    if resumed_at is not None:
        try:
            first = json.loads(path.read_text())
        except (OSError, ValueError):
            first = None
        if isinstance(first, dict):
            epoch, batches = resumed_at
            entry = {"epoch": epoch, "batches_done": batches, **info}
            first["resumes"] = [*first.get("resumes", []), entry]
            info = first
    _write_json(path, info)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- train
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
    rank_zero = launched_as_rank_zero()
    if rank_zero:  # the other DDP processes find the run directory already written
        output.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(checkpoints)
        save_config(cfg, output / "config.yaml")
        _record_run(output / "run.json", cfg, start if resume else None)
        _trim_log(output / "logs" / "metrics.csv", start[0] if resume else None)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)

    model = build_model(cfg)
    data = prepare_data(cfg, model.backbone)
    excluded = retrieval_exclusions(data, cfg)
    _check_processes(data, cfg)
    if data.features:
        model.backbone = None  # the head trains on cached features; keep the run light
    elif data.activations:  # the top stages + head train on cached trunk activations
        model.backbone = split_backbone(model.backbone, cfg.model.train_blocks).top  # type: ignore[assignment]
    # re-seed: preparing data may or may not draw random numbers (feature cache miss or hit),
    # and the loss's initial vertices must not depend on that
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    loss = build_loss(
        cfg.loss.name, data.num_train_classes, cfg.model.embedding_size, cfg.loss.params
    )
    saved_pretrained = checkpoint[META_KEY].get("pretrained") if checkpoint else None
    if isinstance(saved_pretrained, dict):
        pretrained = saved_pretrained
    elif rank_zero:
        pretrained = pretrained_metrics(model, data, cfg)
    else:
        pretrained = {}  # only global rank 0 writes metrics.json and checkpoints
    if checkpoint is None:
        _initialise(model, loss, data, cfg)  # a resumed run gets all of it from the checkpoint

    module = EmbeddingModule(cfg, model, loss, features=data.features)
    if checkpoint is not None:
        check_weights_fit(checkpoint, module, last)
        checkpoint = None  # Lightning reads it again; do not hold two copies
    has_val = data.val is not None
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
    stamp = StampCheckpoint(
        {
            "version": _version("daalml"),
            "config": cfg.to_dict(),
            "num_train_classes": data.num_train_classes,
            "features": data.features,
            "pretrained": pretrained,
        }
    )
    interrupt = SaveOnInterrupt(last)
    callbacks: list[Callback] = [selector, latest, stamp, interrupt]
    if has_val and cfg.train.patience:
        callbacks.append(
            EarlyStopping(monitor="val/recall@1", mode="max", patience=cfg.train.patience)
        )
    if progress:
        callbacks.append(_ProgressBar(leave=True))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")
        # the engine's loader skips the batches a mid-epoch checkpoint had trained on
        warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
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
            logger=_loggers(output),
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=progress,
            enable_model_summary=False,
            use_distributed_sampler=False,
            log_every_n_steps=1,
        )
        datamodule = _DataModule(data, cfg, epoch=start[0], skip=start[1])
        _fit(trainer, module, datamodule, last if resume else None, interrupt)
    selected_epoch = _select_best(trainer, module, selector.best_model_path if has_val else "")
    test_metrics = model_metrics(module, data, cfg)  # under DDP every rank embeds a share
    if not trainer.is_global_zero:
        return {}
    results: dict[str, Any] = dict(test_metrics)
    results["pretrained"] = pretrained
    results["selected_epoch"] = int(selected_epoch)
    if has_val:  # the validation classes' figures at the selected epoch (what selection saw)
        results["validation"] = dict(module.val_metrics)
    results["skipped_images"] = len(data.skipped_images)
    results["excluded_queries"] = excluded
    _write_json(output / METRICS_FILE, results)
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
    datamodule: _DataModule,
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


def _check_processes(data: RunData, cfg: Config) -> None:
    """Every DDP process needs at least one validation and one test image of its own to embed."""
    processes = cfg.train.devices * cfg.train.num_nodes
    if data.val is not None and len(data.val) < processes:
        raise DaalmlError(
            f"train.val_classes={cfg.train.val_classes}: the validation split has "
            f"{len(data.val)} images, fewer than the {processes} processes "
            "(train.devices x train.num_nodes); raise train.val_classes"
        )
    for name in ("test", "query", "gallery"):
        split = getattr(data, name)
        if split is not None and len(split) < processes:
            raise DaalmlError(
                f"data.root={cfg.data.root}: the {name} split has {len(split)} images, fewer "
                f"than the {processes} processes (train.devices x train.num_nodes)"
            )


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


# ---------------------------------------------------------------------------- evaluation
def load_module(
    checkpoint_path: str | Path, overrides: Sequence[str] = ()
) -> tuple[EmbeddingModule, Config]:
    """Rebuild the trained module from a checkpoint (its own config, plus ``overrides``)."""
    from daalml.config import apply_overrides

    checkpoint = load_checkpoint(checkpoint_path)
    meta = checkpoint[META_KEY]
    cfg = config_from_dict(
        apply_overrides(meta["config"], overrides), source=f"{checkpoint_path} + --set"
    )
    if cfg.model.train_blocks and cfg.train.cache_features:
        # trained on cached trunk activations: the whole backbone now runs on images, its top
        # stages from the checkpoint, its trunk from the same pretrained weights
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, cache_features=False))
    # the weights a checkpoint lacks (a frozen backbone or trunk) come from the backbone's own
    # initialisation: seeded as train() seeds it, so that even pretrained: false rebuilds them
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    model = build_model(cfg)
    loss = build_loss(
        cfg.loss.name, meta["num_train_classes"], cfg.model.embedding_size, cfg.loss.params
    )
    module = EmbeddingModule(cfg, model, loss, features=False)
    missing, unexpected = module.load_state_dict(checkpoint["state_dict"], strict=False)
    bad = [k for k in missing if not k.startswith("model.backbone.")] + list(unexpected)
    if bad:
        raise DaalmlError(
            f"checkpoint {checkpoint_path}: weights do not fit the model its config describes "
            f"({', '.join(bad[:5])}{'...' if len(bad) > 5 else ''})"
        )
    return module, cfg


def evaluate(
    checkpoint_path: str | Path,
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Re-evaluate a checkpoint on its config's test split; write metrics.json when asked."""
    module, cfg = load_module(checkpoint_path, overrides)
    data = prepare_data(cfg, module.model.backbone)
    module.features = data.features  # cached features of the same frozen backbone, when enabled
    excluded = retrieval_exclusions(data, cfg)
    results: dict[str, Any] = dict(model_metrics(module, data, cfg))
    results["skipped_images"] = len(data.skipped_images)
    results["excluded_queries"] = excluded
    if output_dir is not None:
        output = Path(output_dir)
        output.mkdir(parents=True, exist_ok=True)
        _write_json(output / METRICS_FILE, results)
    return results
