"""`train(config)` and `evaluate(checkpoint)` as plain functions; the CLI is a shell over them."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import warnings
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger
from torch.utils.data import DataLoader, Dataset

from daalml.config import Config, config_from_dict, save_config
from daalml.data.sampling import MPerClassBatchSampler
from daalml.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    META_KEY,
    AtomicCheckpointIO,
    load_checkpoint,
)
from daalml.engine.data import RunData, dataset_labels, prepare_data
from daalml.engine.module import EmbeddingModule
from daalml.errors import DaalmlError
from daalml.losses.registry import MetricLoss, build_loss
from daalml.metrics import count_unmatchable_queries, query_gallery_metrics, retrieval_metrics
from daalml.models.backbones import Backbone, build_backbone, register_backbone
from daalml.models.embedder import EmbeddingModel, freeze_batchnorm, freeze_module
from daalml.models.heads import PCAHead, build_head

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
    if cfg.model.freeze_backbone or cfg.train.cache_features:
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


def _metrics(fn, data: RunData, cfg: Config, device: torch.device) -> dict[str, float]:
    kwargs = {"batch_size": cfg.train.eval_batch_size, "device": device}
    if not data.features:
        kwargs["num_workers"] = cfg.data.num_workers
    if data.test is not None:
        embeddings, labels = embed(fn, data.test, **kwargs)
        return retrieval_metrics(embeddings, labels, ks=cfg.eval.ks, seed=cfg.train.seed)
    assert data.query is not None and data.gallery is not None
    q, ql = embed(fn, data.query, **kwargs)
    g, gl = embed(fn, data.gallery, **kwargs)
    return query_gallery_metrics(q, ql, g, gl, ks=cfg.eval.ks, seed=cfg.train.seed)


def _device(cfg: Config) -> torch.device:
    wants_gpu = cfg.train.accelerator in ("gpu", "auto") and torch.cuda.is_available()
    return torch.device("cuda" if wants_gpu else "cpu")


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
class _MetaCallback(Callback):
    """Stamps every checkpoint with the config and format needed to rebuild the model."""

    def __init__(self, cfg: Config, num_train_classes: int, features: bool) -> None:
        self.meta = {
            "format": CHECKPOINT_FORMAT,
            "version": _version("daalml"),
            "config": cfg.to_dict(),
            "num_train_classes": num_train_classes,
            "features": features,
        }

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = self.meta


class _SaveOnInterrupt(Callback):
    """Ctrl-C: write last.ckpt before exiting so that --resume continues from here."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            trainer.save_checkpoint(self.path)


def _train_loader(data: RunData, cfg: Config, world_size: int, rank: int) -> DataLoader:
    labels = dataset_labels(data.train)
    sampler = MPerClassBatchSampler(
        labels,
        batch_size=cfg.train.batch_size,
        samples_per_class=cfg.train.samples_per_class,
        seed=cfg.train.seed,
        num_replicas=world_size,
        rank=rank,
    )
    workers = 0 if data.features else cfg.data.num_workers
    # fresh workers each epoch draw their seeds from the per-epoch seeded main process
    return DataLoader(data.train, batch_sampler=sampler, num_workers=workers)


class _DataModule(L.LightningDataModule):
    def __init__(self, data: RunData, cfg: Config) -> None:
        super().__init__()
        self.data = data
        self.cfg = cfg

    def train_dataloader(self) -> DataLoader:
        return _train_loader(self.data, self.cfg, self.trainer.world_size, self.trainer.global_rank)

    def val_dataloader(self) -> DataLoader | list:
        if self.data.val is None:
            return []
        workers = 0 if self.data.features else self.cfg.data.num_workers
        return DataLoader(
            self.data.val, batch_size=self.cfg.train.eval_batch_size, num_workers=workers
        )


def _loggers(output: Path) -> list[Logger]:
    loggers: list[Logger] = [CSVLogger(save_dir=output, name="logs", version="")]
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


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_info(cfg: Config) -> dict[str, Any]:
    """What reproduces a run: seed, package versions, git commit, machine."""
    packages = ["daalml", "torch", "torchvision", "lightning", "pytorch-metric-learning", "numpy"]
    return {
        "seed": cfg.train.seed,
        "versions": {name: _version(name) for name in packages},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": _git_commit(),
    }


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def train(
    cfg: Config,
    output_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train as ``cfg`` says; write config.yaml, metrics.json, checkpoints/ and logs/ to output_dir.

    Returns the metrics written to metrics.json: the test metrics of the selected model, the
    `pretrained` backbone's metrics under that key, and counts of what was left out.
    """
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    checkpoints = output / "checkpoints"
    last = checkpoints / "last.ckpt"
    if resume and not last.is_file():
        raise DaalmlError(f"--resume: no checkpoint to resume from at {last}")
    save_config(cfg, output / "config.yaml")
    _write_json(output / "run.json", run_info(cfg))
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)

    model = build_model(cfg)
    data = prepare_data(cfg, model.backbone)
    if data.features:
        model.backbone = None  # the head trains on cached features; keep the run light
    loss = build_loss(
        cfg.loss.name, data.num_train_classes, cfg.model.embedding_size, cfg.loss.params
    )
    pretrained = _pretrained(model, data, cfg)
    _initialise(model, loss, data, cfg)

    module = EmbeddingModule(cfg, model, loss, features=data.features)
    has_val = data.val is not None
    selector = ModelCheckpoint(
        dirpath=checkpoints,
        filename="best",
        monitor="val/recall@1" if has_val else None,
        mode="max",
        save_last=True,
        save_top_k=1,
        enable_version_counter=False,
    )
    callbacks: list[Callback] = [
        selector,
        _MetaCallback(cfg, data.num_train_classes, data.features),
        _SaveOnInterrupt(last),
    ]
    if has_val and cfg.train.patience:
        callbacks.append(
            EarlyStopping(monitor="val/recall@1", mode="max", patience=cfg.train.patience)
        )
    if progress:
        callbacks.append(TQDMProgressBar(leave=True))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer = L.Trainer(
            max_epochs=cfg.train.epochs,
            accelerator=cfg.train.accelerator,
            devices=cfg.train.devices,
            num_nodes=cfg.train.num_nodes,
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
        trainer.fit(module, datamodule=_DataModule(data, cfg), ckpt_path=last if resume else None)
    if trainer.interrupted:
        raise KeyboardInterrupt
    if not trainer.is_global_zero:
        return {}
    selected_epoch = trainer.current_epoch - 1
    best = selector.best_model_path
    if has_val and best and Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=False)
        module.load_state_dict(state["state_dict"])
        selected_epoch = state["epoch"]
    results: dict[str, Any] = dict(model_metrics(module, data, cfg))
    results["pretrained"] = pretrained
    results["selected_epoch"] = int(selected_epoch)
    results["skipped_images"] = len(data.skipped_images)
    results["excluded_queries"] = _excluded_queries(data)
    _write_json(output / METRICS_FILE, results)
    return results


def _pretrained(model: EmbeddingModel, data: RunData, cfg: Config) -> dict[str, float]:
    if data.features or model.backbone is not None:
        return pretrained_metrics(model, data, cfg)
    raise AssertionError("unreachable: an image run always has a backbone")


def _excluded_queries(data: RunData) -> int:
    if data.test is not None:
        return count_unmatchable_queries(dataset_labels(data.test))
    return 0


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
    results: dict[str, Any] = dict(model_metrics(module, data, cfg))
    results["skipped_images"] = len(data.skipped_images)
    results["excluded_queries"] = _excluded_queries(data)
    if output_dir is not None:
        output = Path(output_dir)
        output.mkdir(parents=True, exist_ok=True)
        _write_json(output / METRICS_FILE, results)
    return results
