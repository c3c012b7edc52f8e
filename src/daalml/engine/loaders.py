"""The run's loaders: seeded, resumable m-per-class training batches and in-order validation.

Every augmented sample is a function of the run's seed and its place in the epoch, so a resumed
run (or one on more processes) sees exactly the data an uninterrupted one would.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset, Sampler

from daalml.config import Config
from daalml.data.sampling import MPerClassBatchSampler
from daalml.data.seeding import mix_seed, seed_host
from daalml.engine.data import RunData, dataset_labels


def _worker_ignores_sigint(worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process, which stops at a step's end and saves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class SeededItems(Dataset):
    """Reads ``(index, seed)`` keys: seeds the host generators, then returns ``dataset[index]``.

    With the seeds from :class:`SeededBatches`, every augmented sample is a function of the run's
    seed and its place in the epoch, whichever process loads it and whenever.
    """

    def __init__(self, dataset: Dataset, *, seeded: bool = True) -> None:
        self.dataset = dataset
        self.seeded = seeded

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        if self.seeded:
            seed_host(seed)
        return self.dataset[index]


class SeededBatches(Sampler[list[tuple[int, int]]]):
    """The m-per-class batches of ``sampler`` as ``(index, seed)`` lists; resumable mid-epoch.

    ``skip`` leaves out the first batches of the first epoch iterated, which a checkpoint
    written mid-epoch had already trained on. ``self.sampler`` is where Lightning calls
    ``set_epoch``.

    Lightning's own mid-epoch resume (a loader with ``state_dict``/``load_state_dict``) is not
    used yet: it has not been shown here to give the SIGKILL resume tests identical
    metrics.json, which this path does (TODO(#16)).
    """

    def __init__(self, sampler: MPerClassBatchSampler, *, seed: int, skip: int = 0) -> None:
        self.sampler = sampler
        self.seed = seed
        self.skip = skip

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, rank = self.sampler.epoch, self.sampler.rank
        skip, self.skip = self.skip, 0
        for number, batch in enumerate(self.sampler):
            if number >= skip:
                # the slot in the GLOBAL batch: the same augmentation for any number of ranks
                first = rank * len(batch)
                yield [
                    (index, mix_seed(self.seed, epoch, number, first + slot))
                    for slot, index in enumerate(batch)
                ]


def train_loader(
    data: RunData,
    cfg: Config,
    *,
    world_size: int = 1,
    rank: int = 0,
    epoch: int = 0,
    skip: int = 0,
) -> DataLoader:
    """The training loader from ``epoch`` on (its first ``skip`` batches left out).

    Batches depend on (seed, epoch) only and each sample's augmentation on (seed, epoch, batch,
    slot), so a resumed run sees exactly the data an uninterrupted one would.
    """
    sampler = MPerClassBatchSampler(
        dataset_labels(data.train),
        batch_size=cfg.train.batch_size,
        samples_per_class=cfg.train.samples_per_class,
        seed=cfg.train.seed,
        num_replicas=world_size,
        rank=rank,
    )
    sampler.set_epoch(epoch)
    batches = SeededBatches(sampler, seed=cfg.train.seed, skip=skip)
    cached = data.features or data.activations
    workers = 0 if cached else cfg.data.num_workers
    # cached activations read the per-sample seed themselves: it picks the view of the epoch
    items = data.train if data.activations else SeededItems(data.train, seeded=not cached)
    return DataLoader(
        items,
        batch_sampler=batches,
        num_workers=workers,
        worker_init_fn=_worker_ignores_sigint if workers else None,
    )


def eval_loader(dataset: Dataset, cfg: Config, *, features: bool) -> DataLoader:
    """A plain in-order loader for validation."""
    workers = 0 if features else cfg.data.num_workers
    return DataLoader(
        dataset,
        batch_size=cfg.train.eval_batch_size,
        num_workers=workers,
        worker_init_fn=_worker_ignores_sigint if workers else None,
    )
