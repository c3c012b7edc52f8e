"""The LightningModule: embedding model + metric loss, optimiser groups, validation recall."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import nn

from daalml.config import Config
from daalml.data.seeding import mix_seed, seed_host
from daalml.engine.distributed import gather_batch, gather_tensor
from daalml.engine.loaders import PROGRESS_KEY as PROGRESS_KEY  # its old home, still importable
from daalml.engine.loaders import adopt_old_progress
from daalml.errors import DaalmlError
from daalml.evaluation.retrieval import retrieval_metrics
from daalml.losses.registry import MetricLoss
from daalml.models.embedder import EmbeddingModel

VAL_METRICS_KEY = "daalml_val_metrics"


class NonFiniteLossError(DaalmlError, RuntimeError):
    """The loss or the weights became NaN or Inf; the run stops, its last good checkpoint kept.

    ``detail`` says what and where (epoch, step), ``hint`` the usual causes.
    """

    def __init__(self, detail: str, hint: str = "") -> None:
        super().__init__(f"{detail}. {hint}" if hint else detail)
        self.detail = detail
        self.hint = hint


class EmbeddingModule(L.LightningModule):
    """Trains ``model`` with ``loss``; inputs are images, or backbone features when ``features``."""

    def __init__(
        self,
        cfg: Config,
        model: EmbeddingModel,
        loss: MetricLoss | None,
        *,
        features: bool = False,
        steps_per_epoch: int = 1,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = model
        self.steps_per_epoch = steps_per_epoch
        self.features = features
        self._frozen_names: set[str] = set()
        if loss is not None:
            self.attach(loss, features=features)
        self._val_embeddings: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        # the last validation's figures, saved in checkpoints: best.ckpt then holds those of the
        # selected epoch, which metrics.json reports (model selection is made on them)
        self.val_metrics: dict[str, float] = {}

    def attach(self, loss: MetricLoss, *, features: bool) -> None:
        """Give the module its loss and its kind of input; a training run does it in ``setup``,
        once the data (the class count, cached features or not) is built and the model's
        backbone set to what trains (none on cached features, the top on activations)."""
        self.loss = loss
        self.features = features
        trunk = self.model.backbone
        # parameters frozen by the config (freeze_backbone, freeze_bn) never train; the rest of
        # the backbone is switched off only during the warm-up epochs
        self._frozen_names = (
            {n for n, p in trunk.named_parameters() if not p.requires_grad}
            if trunk is not None
            else set()
        )

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
            # under DDP the loss sees the whole global batch, gradients flowing back to this
            # rank's slice (docs/distributed.md); a single process gets its own batch back
            embeddings, labels = gather_batch(embeddings.float(), labels)
            loss = self.loss(embeddings, labels)
        finite = bool(torch.isfinite(loss))
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # every rank stops together, or the others would wait forever in the next all-reduce
            # (a process group exists only under a Trainer's strategy; the module also runs
            # without a Trainer, where the public ``self.trainer`` would raise)
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            raise NonFiniteLossError(
                f"the loss became {loss.item()} at epoch {self.current_epoch}, step "
                f"{self.global_step}",
                self.usual_causes(),
            )
        # every rank holds the same value (the loss of the global batch); sync_dist only says so
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True)
        for name, value in getattr(self.loss.loss, "last_terms", {}).items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def usual_causes(self) -> str:
        """The hint every non-finite failure ends with."""
        return (
            f"Usual causes: a learning rate too high (train.lr={self.cfg.train.lr}, "
            f"loss.lr_multiplier={self.cfg.loss.lr_multiplier}) or loss weights such as "
            "lambda_daal too large"
        )

    def on_train_start(self) -> None:
        self._warm_up()  # also when a run resumes inside an epoch (no epoch start then)

    def on_train_epoch_start(self) -> None:
        self._warm_up()

    def _warm_up(self) -> None:
        """During the warm-up epochs only the head and the loss train."""
        warming = self.current_epoch < self.cfg.train.warmup_epochs
        for _, param in self._trainable_backbone():
            param.requires_grad_(not warming)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # the model's randomness (dropout, miners) is a function of (seed, step), so a run resumed
        # from any checkpoint repeats it; the data's is seeded per sample by the engine's sampler
        step_seed = mix_seed(self.cfg.train.seed, self.global_step, 0x5EED)
        seed_host(step_seed)
        torch.manual_seed(step_seed)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # where the epoch stands is the training loader's state, which Lightning saves itself
        if self.val_metrics:
            checkpoint[VAL_METRICS_KEY] = dict(self.val_metrics)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_metrics = dict(checkpoint.get(VAL_METRICS_KEY, {}))
        adopt_old_progress(checkpoint)  # an older checkpoint's PROGRESS_KEY

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
        # under DDP every rank embedded its shard of the validation set: gather them once, in
        # order, so that every rank computes the same recall (model selection agrees)
        width = self.cfg.model.embedding_size
        embeddings = (
            torch.cat(self._val_embeddings) if self._val_embeddings else torch.empty(0, width)
        )
        labels = (
            torch.cat(self._val_labels) if self._val_labels else torch.empty(0, dtype=torch.long)
        )
        self._val_embeddings.clear()
        self._val_labels.clear()
        embeddings = gather_tensor(embeddings, self.device)
        labels = gather_tensor(labels, self.device)
        if embeddings.shape[0] == 0:
            return
        if not bool(torch.isfinite(embeddings).all()):
            raise NonFiniteLossError(
                f"the validation embeddings became non-finite after epoch {self.current_epoch}, "
                f"step {self.global_step}",
                self.usual_causes(),
            )
        metrics = retrieval_metrics(embeddings, labels, ks=(1,), seed=self.cfg.train.seed)
        # the figures only (not the int count of queries without a relevant item)
        self.val_metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, float)}
        self.log("val/recall@1", metrics["recall@1"], prog_bar=True, sync_dist=True)
        self.log("val/map@r", metrics["map@r"], sync_dist=True)
        self.log("val/nmi", metrics["nmi"], sync_dist=True)

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
