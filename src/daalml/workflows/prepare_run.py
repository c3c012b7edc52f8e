"""What a training run does once Lightning has built its data and before it trains.

:class:`PrepareRun` is a callback whose ``setup`` runs on every rank right after the
DataModule's ``setup``: the ranks come from the Trainer, not from the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from daalml.config import Config, save_config
from daalml.engine.checkpoint import (
    META_KEY,
    StampCheckpoint,
    check_weights_fit,
    remove_stale_temporaries,
)
from daalml.engine.data import RunData
from daalml.engine.datamodule import RunDataModule
from daalml.engine.inference import embed, pretrained_metrics
from daalml.engine.loggers import trim_log
from daalml.engine.module import EmbeddingModule
from daalml.engine.run_record import record_run
from daalml.errors import DaalmlError
from daalml.losses.registry import MetricLoss, build_loss
from daalml.models.embedder import EmbeddingModel
from daalml.models.heads import PCAHead
from daalml.models.stages import split_backbone


def has_validation(cfg: Config) -> bool:
    """Whether the run holds out validation classes (model selection, early stopping)."""
    return bool(cfg.train.val_classes)


class PrepareRun(Callback):
    """Writes the run directory (global rank 0), then readies the module from the data.

    From the built data: the backbone as it trains (none on cached features, the top stages on
    cached activations), the loss (one slot per training class), the `pretrained` metrics
    (figures on global rank 0 only; a resumed run reads them from ``checkpoint``), the PCA head and the
    data-initialised loss (a new run only), and the stamp every checkpoint carries.
    """

    def __init__(
        self,
        cfg: Config,
        output: Path,
        resumed_at: tuple[int, int] | None,
        checkpoint: dict[str, Any] | None,
        stamp: StampCheckpoint,
    ) -> None:
        self.cfg = cfg
        self.output = output
        self.resumed_at = resumed_at
        self.checkpoint = checkpoint
        self.stamp = stamp
        self.pretrained: dict[str, Any] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        cfg, output = self.cfg, self.output
        if trainer.is_global_zero:  # the other ranks find the run directory written
            output.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(output / "checkpoints")
            save_config(cfg, output / "config.yaml")
            record_run(output / "run.json", cfg, self.resumed_at)
            trim_log(
                output / "logs" / "metrics.csv", self.resumed_at[0] if self.resumed_at else None
            )
        datamodule = trainer.datamodule
        assert isinstance(datamodule, RunDataModule) and isinstance(pl_module, EmbeddingModule)
        data = datamodule.run_data
        if (data.val is not None) != has_validation(cfg):
            raise DaalmlError(
                f"train.val_classes={cfg.train.val_classes}: the data "
                f"{'has no' if data.val is None else 'has a'} validation split"
            )
        model = pl_module.model
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
        device = trainer.strategy.root_device
        saved = self.checkpoint[META_KEY].get("pretrained") if self.checkpoint else None
        if isinstance(saved, dict):
            self.pretrained = saved
        else:  # every rank embeds a share of the test set; global rank 0 alone gets figures
            self.pretrained = pretrained_metrics(model, data, cfg, device)
        if self.checkpoint is None:
            _initialise(model, loss, data, cfg, device)  # a resumed run reads it all back
        pl_module.attach(loss, features=data.features)
        if self.checkpoint is not None:
            check_weights_fit(self.checkpoint, pl_module, self.output / "checkpoints" / "last.ckpt")
            self.checkpoint = None  # Lightning reads it again; do not hold two copies
        self.stamp.meta.update(
            num_train_classes=data.num_train_classes,
            features=data.features,
            pretrained=self.pretrained,
        )


def _initialise(
    model: EmbeddingModel, loss: MetricLoss, data: RunData, cfg: Config, device: torch.device
) -> None:
    """Fit a PCA head and the data-initialised loss from the non-augmented training set."""
    head = model.head
    needs_pca = isinstance(head, PCAHead) and not head.pca_fitted
    if not (needs_pca or loss.needs_data_init):
        return
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
