"""The LightningDataModule of a run: its training and validation loaders."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset, Subset

from daalml.config import Config
from daalml.engine.data import RunData
from daalml.engine.distributed import shard
from daalml.engine.loaders import eval_loader, train_loader


class RunDataModule(L.LightningDataModule):
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
