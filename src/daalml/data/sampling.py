"""M-per-class batch sampling that is deterministic per (seed, epoch) and split across ranks.

Pair- and proxy-based DML losses need several images of each class in a batch. PML's
``MPerClassSampler`` draws from a global RNG and knows nothing of ranks, so batches here are
built from a generator seeded with ``(seed, epoch)``: every rank builds the same global batch
and keeps its own contiguous slice, which makes the union over ranks exactly the global batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from daalml.errors import DaalmlError


class _Cycler:
    """Hands out distinct items in shuffled passes, reshuffling when a pass runs out."""

    def __init__(self, items: np.ndarray, rng: np.random.Generator) -> None:
        self.items = items
        self.rng = rng
        self.order = rng.permutation(items)
        self.position = 0

    def take(self, count: int) -> list[int]:
        """``count`` distinct items (``count`` <= number of items), continuing the current pass."""
        taken = [int(x) for x in self.order[self.position : self.position + count]]
        self.position += len(taken)
        if len(taken) < count:
            # New pass: items already taken for this request go last so they are not repeated.
            rest = np.setdiff1d(self.items, taken)
            done = np.asarray(taken, dtype=self.items.dtype)
            self.order = np.concatenate([self.rng.permutation(rest), self.rng.permutation(done)])
            missing = count - len(taken)
            taken += [int(x) for x in self.order[:missing]]
            self.position = missing
        return taken


def _as_labels(labels: Sequence[int] | torch.Tensor | np.ndarray) -> np.ndarray:
    """Labels as a 1-D int64 array."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.ndim != 1 or array.size == 0:
        raise DaalmlError(f"labels must be a non-empty 1-D sequence, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise DaalmlError(f"labels must be integers, got dtype {array.dtype}")
    return array.astype(np.int64)


class MPerClassBatchSampler(Sampler[list[int]]):
    """Yield this rank's slice of batches of ``batch_size // samples_per_class`` classes x m images.

    A global batch lists its classes as contiguous blocks of ``samples_per_class`` indices, so a
    rank's slice is itself m-per-class when ``batch_size // num_replicas`` is a multiple of m.
    Within a class, images are drawn without repetition in shuffled passes (with replacement only
    for classes with fewer than m images); classes are drawn the same way. Call ``set_epoch``
    each epoch (Lightning does) for fresh batches; with DDP pass ``num_replicas``/``rank`` and
    disable the trainer's own distributed sampler.
    """

    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor | np.ndarray,
        *,
        batch_size: int,
        samples_per_class: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        array = _as_labels(labels)
        if samples_per_class < 1:
            raise DaalmlError(f"samples_per_class must be at least 1, got {samples_per_class}")
        if batch_size < 1 or batch_size % samples_per_class:
            raise DaalmlError(
                f"batch_size ({batch_size}) must be a positive multiple of "
                f"samples_per_class ({samples_per_class})"
            )
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise DaalmlError(f"rank ({rank}) must be in 0..num_replicas-1 ({num_replicas})")
        if batch_size % num_replicas:
            raise DaalmlError(
                f"batch_size ({batch_size}) must be divisible by num_replicas ({num_replicas})"
            )
        if seed < 0:
            raise DaalmlError(f"seed must be non-negative, got {seed}")
        classes, inverse = np.unique(array, return_inverse=True)
        self.classes_per_batch = batch_size // samples_per_class
        if self.classes_per_batch > len(classes):
            raise DaalmlError(
                f"batch_size {batch_size} / samples_per_class {samples_per_class} needs "
                f"{self.classes_per_batch} classes per batch but labels have {len(classes)}"
            )
        by_class = np.argsort(inverse, kind="stable")
        self._members = np.split(by_class, np.cumsum(np.bincount(inverse))[:-1])
        self.batch_size = batch_size
        self.samples_per_class = samples_per_class
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.local_batch_size = batch_size // num_replicas
        self.num_batches = max(1, len(array) // batch_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def global_batches(self) -> list[list[int]]:
        """All global batches of the current epoch, identical on every rank."""
        rng = np.random.default_rng([self.seed, self.epoch])
        m = self.samples_per_class
        class_cycler = _Cycler(np.arange(len(self._members)), rng)
        image_cyclers = [
            _Cycler(members, rng) if len(members) >= m else None for members in self._members
        ]
        batches: list[list[int]] = []
        for _ in range(self.num_batches):
            batch: list[int] = []
            for c in class_cycler.take(self.classes_per_batch):
                cycler = image_cyclers[c]
                if cycler is not None:
                    batch += cycler.take(m)
                else:
                    members = self._members[c]
                    extra = rng.choice(members, m - len(members), replace=True)
                    batch += [int(i) for i in np.concatenate([rng.permutation(members), extra])]
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        start = self.rank * self.local_batch_size
        for batch in self.global_batches():
            yield batch[start : start + self.local_batch_size]
