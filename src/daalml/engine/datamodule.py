"""The LightningDataModule of a run: it builds the data (caches on one process per node) and
serves the training and validation loaders."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset, Subset

from daalml.config import Config
from daalml.engine.data import ListedImages, RunData, prepare_data, retrieval_exclusions
from daalml.engine.distributed import shard
from daalml.engine.loaders import eval_loader, train_loader
from daalml.errors import DaalmlError
from daalml.models.backbones import Backbone


class RunDataModule(L.LightningDataModule):
    """A run's datasets, built by Lightning's hooks, and their loaders.

    ``prepare_data`` (local rank 0 of each node) builds the feature or activation caches,
    ``setup`` (every rank) builds :class:`RunData` from the config and those caches, then checks
    the evaluation splits. ``listed``: the images :func:`daalml.engine.data.list_images` listed
    and checked before the backbone was built.
    """

    def __init__(
        self,
        cfg: Config,
        backbone: Backbone,
        listed: ListedImages | None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.listed = listed
        self.data: RunData | None = None
        self.excluded_queries = 0  # test queries left out of recall (alone in their class)

    def _build(self) -> RunData:
        device = self.trainer.strategy.root_device
        return prepare_data(self.cfg, self.backbone, self.listed, device)

    def prepare_data(self) -> None:
        # the caches are written here, once per node; this process keeps what it built
        self.data = self._build()

    def setup(self, stage: str) -> None:
        if self.data is None:  # the other ranks read the caches local rank 0 wrote
            self.data = self._build()
        self.excluded_queries = retrieval_exclusions(self.data, self.cfg)
        check_processes(self.data, self.cfg, self.trainer.world_size)

    @property
    def run_data(self) -> RunData:
        """The datasets ``setup`` built."""
        if self.data is None:
            raise RuntimeError("RunDataModule.setup has not run yet")
        return self.data

    def train_dataloader(self) -> DataLoader:
        # where a resumed run goes on, Lightning sets: the epoch, and the batches of it done
        trainer = self.trainer
        return train_loader(
            self.run_data, self.cfg, world_size=trainer.world_size, rank=trainer.global_rank
        )

    def val_dataloader(self) -> DataLoader | list:
        data = self.run_data
        if data.val is None:
            return []
        val: Dataset = data.val
        world_size = self.trainer.world_size
        if world_size > 1:  # each rank embeds its share; the module gathers them in order
            val = Subset(val, shard(len(val), world_size, self.trainer.global_rank))
        return eval_loader(val, self.cfg, features=data.features or data.activations)


def check_processes(data: RunData, cfg: Config, processes: int) -> None:
    """Every DDP process needs at least one validation and one test image of its own to embed."""
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
