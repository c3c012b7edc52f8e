"""The one batch loop: a function over a dataset, in order, batch by batch, without gradients.

Everything that runs a network over a whole dataset goes through :func:`map_batches`: the
frozen-backbone feature cache (``data/cache.py``), the trunk-activation cache
(``data/activations.py``, which streams each batch into its memory-mapped file) and the
engine's embedding loop (``engine.inference.embed``); the feature cache and ``embed`` join
the batches with :func:`concat_batches`. It lives in ``data/`` because ``data/`` may not
import the engine; what differs between its users (eval mode, device placement of the
network, memory format, where the outputs go) stays with them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, Dataset

BatchFn = Callable[[torch.Tensor], torch.Tensor]


def progress_bar(enabled: bool) -> Progress:
    """A transient rich bar on stderr (stdout stays for results): description, bar, M/N, ETA."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, disable=not enabled, transient=True, console=Console(stderr=True))


@torch.no_grad()  # around each step of the generator only: the caller's grad mode is its own
def map_batches(
    fn: BatchFn,
    dataset: Dataset,
    *,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    pin_memory: bool = False,
    progress: bool = False,
    description: str = "Embedding",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(fn(inputs) as float32 on the CPU, labels as int64 (B,))`` batch by batch.

    ``dataset`` items are ``(input, label, *extra)``; batches come in dataset order, the last
    one short when ``batch_size`` does not divide the dataset. Inputs are moved to ``device``
    (without blocking, which only matters for ``pin_memory`` loaders on CUDA). ``progress``
    shows :func:`progress_bar` with ``description`` on a terminal, plain lines on stderr
    otherwise (a log file shows the progress of a long cache build too). A consumer that
    may stop early should close the generator (``contextlib.closing``) so the bar ends at
    once.
    """
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
    lines = _LogLines(description, len(loader)) if progress and not _stderr_is_terminal() else None
    with progress_bar(progress and lines is None) as bar:
        task = bar.add_task(description, total=len(loader))
        for done, (inputs, labels, *_) in enumerate(loader, start=1):
            outputs = fn(inputs.to(device, non_blocking=True)).float().cpu()
            bar.advance(task)
            if lines is not None:
                lines.advance(done)
            yield outputs, torch.as_tensor(labels).long().reshape(-1)


def _stderr_is_terminal() -> bool:
    return Console(stderr=True).is_terminal


class _LogLines:
    """Progress as plain lines on stderr where a live bar would not show (stderr a log file,
    as in ``daalml benchmark ... > run.log 2>&1``): the start, each tenth, the end."""

    def __init__(self, description: str, total: int) -> None:
        self.description, self.total = description, total
        self.start = time.monotonic()
        self.tenths = 0
        self._print(0)

    def advance(self, done: int) -> None:
        """Print a line when ``done`` batches reach the next tenth (or the last batch)."""
        if done * 10 >= (self.tenths + 1) * self.total or done == self.total:
            self.tenths = done * 10 // max(1, self.total)
            self._print(done)

    def _print(self, done: int) -> None:
        elapsed = time.monotonic() - self.start
        print(
            f"{self.description}: {done}/{self.total} batches, {elapsed:.0f} s",
            file=sys.stderr,
            flush=True,
        )


def concat_batches(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """All of :func:`map_batches` at once: ``(outputs (N, ...), labels (N,))`` on the CPU."""
    outputs: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    for batch_outputs, batch_labels in batches:
        outputs.append(batch_outputs)
        labels.append(batch_labels)
    return torch.cat(outputs), torch.cat(labels)
