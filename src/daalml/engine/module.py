"""The LightningModule: embedding model + metric loss, optimiser groups, validation recall."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn

from daalml.config import Config
from daalml.losses.registry import MetricLoss
from daalml.metrics import retrieval_metrics
from daalml.models.embedder import EmbeddingModel


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the run stops and keeps its last good checkpoint."""


class EmbeddingModule(L.LightningModule):
    """Trains ``model`` with ``loss``; inputs are images, or backbone features when ``features``."""

    def __init__(
        self,
        cfg: Config,
        model: EmbeddingModel,
        loss: MetricLoss,
        *,
        features: bool = False,
        steps_per_epoch: int = 1,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = model
        self.loss = loss
        self.features = features
        self.steps_per_epoch = steps_per_epoch
        backbone = model.backbone
        # parameters frozen by the config (freeze_backbone, freeze_bn) never train; the rest of
        # the backbone is switched off only during the warm-up epochs
        self._frozen_names = (
            {n for n, p in backbone.named_parameters() if not p.requires_grad}
            if backbone is not None
            else set()
        )
        self._val_embeddings: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.features:
            return self.model.embed_features(inputs)
        if self.cfg.model.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return self.model(inputs)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        inputs, labels = batch
        embeddings = self(inputs)
        # losses run in float32 outside autocast: PML's proxy losses would cast their weights
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            loss = self.loss(embeddings.float(), labels)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the loss became {loss.item()} at epoch {self.current_epoch}, step "
                f"{self.global_step}; the last good checkpoint is kept. Usual causes: a learning "
                f"rate too high (train.lr={self.cfg.train.lr}, loss.lr_multiplier="
                f"{self.cfg.loss.lr_multiplier}), or loss weights such as lambda_daal too large"
            )
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_start(self) -> None:
        # every epoch's randomness is a function of (seed, epoch): a resumed run repeats it
        L.seed_everything(self.cfg.train.seed + 7919 * (self.current_epoch + 1), verbose=False)
        warming = self.current_epoch < self.cfg.train.warmup_epochs
        for _, param in self._trainable_backbone():
            param.requires_grad_(not warming)

    def _trainable_backbone(self) -> list[tuple[str, nn.Parameter]]:
        backbone = self.model.backbone
        if backbone is None or self.features:
            return []
        return [(n, p) for n, p in backbone.named_parameters() if n not in self._frozen_names]

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        inputs, labels = batch
        self._val_embeddings.append(self(inputs).float().cpu())
        self._val_labels.append(labels.cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_embeddings:
            return
        embeddings = torch.cat(self._val_embeddings)
        labels = torch.cat(self._val_labels)
        self._val_embeddings.clear()
        self._val_labels.clear()
        metrics = retrieval_metrics(embeddings, labels, ks=(1,), seed=self.cfg.train.seed)
        self.log("val/recall@1", metrics["recall@1"], prog_bar=True)
        self.log("val/map@r", metrics["map@r"])

    # ------------------------------------------------------------------ optimiser
    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: backbone, head, and the loss's own parameters at lr * lr_multiplier."""
        lr = self.cfg.train.lr
        groups = []
        backbone = [p for _, p in self._trainable_backbone()]
        if backbone:
            groups.append({"params": backbone, "lr": lr, "name": "backbone"})
        head = [p for p in self.model.head.parameters() if p.requires_grad]
        if head:
            groups.append({"params": head, "lr": lr, "name": "head"})
        loss_params = [p for p in self.loss.parameters() if p.requires_grad]
        if loss_params:
            groups.append(
                {
                    "params": loss_params,
                    "lr": lr * self.cfg.loss.lr_multiplier,
                    "name": "loss",
                    "weight_decay": 0.0,
                }
            )
        return groups

    def configure_optimizers(self):
        train = self.cfg.train
        optimizer = torch.optim.AdamW(
            self.parameter_groups(), lr=train.lr, weight_decay=train.weight_decay
        )
        if train.scheduler == "none":
            return optimizer
        epochs = max(train.epochs, 1)
        if train.scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        else:
            step = max(1, math.ceil(epochs / 3))
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=0.1)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
