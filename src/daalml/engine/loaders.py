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
from daalml.errors import DaalmlError

# where checkpoints written before the loader's own state (ResumableLoader) kept the epoch's
# progress: {"epoch", "batches" trained in it, "steps_per_epoch"}; still read, never written
PROGRESS_KEY = "daalml_progress"


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

    ``skip`` leaves out the first batches of the next epoch iterated: :class:`ResumableLoader`
    sets it from the state Lightning restores. ``self.sampler`` is where Lightning calls
    ``set_epoch``.
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


class ResumableLoader(DataLoader):
    """The training loader, with Lightning's stateful-loader interface for mid-epoch resume.

    Lightning's fit loop saves :meth:`state_dict` in each checkpoint's loop state
    (``loops.fit_loop.state_dict.combined_loader``) and, when it restarts from one, gives it back
    to :meth:`load_state_dict` before iterating. The state counts the batches this loader has
    handed out in the epoch, not those its workers or sampler prepared ahead; the loader is
    sized, so Lightning's fetcher prefetches none (lightning 2.6: ``_PrefetchDataFetcher`` only
    prefetches loaders without a length) and that count is what has been trained on. Iterating
    starts at the first ``next``, after Lightning's ``set_epoch`` for the epoch.
    """

    batch_sampler: SeededBatches

    def __init__(self, dataset: Dataset, batches: SeededBatches, **kwargs: Any) -> None:
        super().__init__(dataset, batch_sampler=batches, **kwargs)
        self._epoch = batches.sampler.epoch
        self._served = 0
        self._restored: tuple[int, int] | None = None  # (epoch, batches done) to go on from
        self._loaded: dict[str, int] | None = None  # the state given back, until iterated

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        batches = self.batch_sampler
        self._epoch = batches.sampler.epoch
        restored, self._restored, self._loaded = self._restored, None, None
        if restored is not None and restored[0] == self._epoch:
            batches.skip = restored[1]
        self._served = batches.skip
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Where the epoch stands: its number, the batches handed out, the batches in it.

        Between :meth:`load_state_dict` and the first batch it is the state given back (the
        run still stands there), so a checkpoint saved in that window resumes from it too.
        """
        if self._loaded is not None:
            return dict(self._loaded)
        return {"epoch": self._epoch, "batches": self._served, "length": len(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on after the batches ``state`` says were trained; a finished epoch leaves none."""
        epoch, done = int(state["epoch"]), int(state["batches"])
        length = int(state.get("length", 0))
        if 0 < done < length and length != len(self):
            raise DaalmlError(
                f"cannot resume inside epoch {epoch}: it had {length} batches when the checkpoint"
                f" was written and has {len(self)} now (another number of devices or processes,"
                " batch size or training classes); resume on the same setup, or from an"
                " epoch-end checkpoint"
            )
        self._restored = (epoch, done) if 0 < done < len(self) else None
        self._loaded = {"epoch": epoch, "batches": done, "length": int(state.get("length", 0))}


def _fit_loop_state(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The fit loop's own entries in a Lightning checkpoint (where it keeps the loader state)."""
    loops = checkpoint.get("loops")
    fit = loops.get("fit_loop") if isinstance(loops, dict) else None
    own = fit.get("state_dict") if isinstance(fit, dict) else None
    return own if isinstance(own, dict) else None


def _old_progress(checkpoint: dict[str, Any]) -> dict[str, int] | None:
    progress = checkpoint.get(PROGRESS_KEY)
    if not isinstance(progress, dict):
        return None
    return {
        "epoch": int(progress.get("epoch", checkpoint.get("epoch", 0))),
        "batches": int(progress.get("batches", 0)),
        "length": int(progress.get("steps_per_epoch", 0)),
    }


def saved_loader_state(checkpoint: dict[str, Any]) -> dict[str, int] | None:
    """The training loader's state in ``checkpoint``, as :meth:`ResumableLoader.state_dict` says.

    Lightning's fit loop saves it in the loop state; an older checkpoint has its
    :data:`PROGRESS_KEY` instead, turned into the same state. None when it has neither.
    """
    states = (_fit_loop_state(checkpoint) or {}).get("combined_loader")
    if states:
        return {key: int(value) for key, value in states[0].items()}
    return _old_progress(checkpoint)


def adopt_old_progress(checkpoint: dict[str, Any]) -> None:
    """Give an older checkpoint's :data:`PROGRESS_KEY` to Lightning as the loader state.

    Called as the checkpoint loads (``on_load_checkpoint``), before Lightning restores its
    loops: the fit loop then hands it to :meth:`ResumableLoader.load_state_dict`, and the run
    resumes exactly where the old one stopped.
    """
    own, progress = _fit_loop_state(checkpoint), _old_progress(checkpoint)
    if own is not None and progress is not None and not own.get("combined_loader"):
        own["combined_loader"] = [progress]


def train_loader(
    data: RunData, cfg: Config, *, world_size: int = 1, rank: int = 0, epoch: int = 0
) -> ResumableLoader:
    """The training loader, its sampler set to ``epoch`` (Lightning sets it at each epoch).

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
    batches = SeededBatches(sampler, seed=cfg.train.seed)
    cached = data.features or data.activations
    workers = 0 if cached else cfg.data.num_workers
    # cached activations read the per-sample seed themselves: it picks the view of the epoch
    items = data.train if data.activations else SeededItems(data.train, seeded=not cached)
    return ResumableLoader(
        items,
        batches,
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
