"""Distributed training helpers: gather the global batch for the loss, shard and gather evaluation.

Under DDP every rank embeds its own slice of a global batch (``MPerClassBatchSampler`` gives
rank r the r-th contiguous slice). :func:`gather_batch` puts the global batch back together,
rank 0's slice first, so the loss sees exactly what one process with the whole batch would see:
the same pairs, the same proxy negatives, the same DAAL statistics on every rank.

Gradients: every rank computes the same loss L on the global batch. The backward of the gather
sums, over ranks, the gradient each rank's loss sends to a slice, so a rank's own embeddings get
``W * dL/dx_local`` (W ranks). DDP then averages the model's parameter gradients over ranks
(a factor 1/W), which leaves exactly the single-process gradient; the loss's own parameters
(DAAL vertices, proxies) get dL/dV on every rank, and the average of W equal values is dL/dV.

The gather is a small autograd function over the public collectives ``all_gather`` and
``all_reduce`` (every backend has both; gloo has no reduce-scatter): PyTorch's
``torch.distributed.nn.functional.all_gather`` is deprecated in favour of a private module, and
both need equal sizes on every rank, whereas this one accepts slices of different lengths.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from daalml.config import TrainConfig
from daalml.errors import DaalmlError


def world() -> tuple[int, int]:
    """(world size, global rank) of the default process group; (1, 0) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def is_distributed() -> bool:
    """Whether a process group with more than one rank is running."""
    return world()[0] > 1


def strategy(train: TrainConfig) -> Any:
    """Lightning's ``strategy`` for ``train``: "auto" on one device, else DDP.

    Warm-up epochs switch the backbone's gradients off and on while the DDP wrapper exists, so
    DDP must then look for parameters without a gradient (``find_unused_parameters``).
    """
    if train.devices * train.num_nodes == 1:
        return "auto"
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(find_unused_parameters=train.warmup_epochs > 0)


def launched_local_rank() -> int:
    """This process's index on its node as the launcher set it (``LOCAL_RANK``), else 0.

    Only for work with no Trainer (``daalml evaluate``, embedding, export under a launcher): it
    picks the process's own GPU instead of crowding every process onto GPU 0. A training run
    takes its device from the Trainer (``trainer.strategy.root_device``).
    """
    value = os.environ.get("LOCAL_RANK", "0").strip() or "0"
    try:
        return int(value)
    except ValueError:
        raise DaalmlError(f"environment variable LOCAL_RANK={value!r} is not an integer") from None


def _sizes(length: int, device: torch.device) -> list[int]:
    """The first-dimension length of every rank's tensor, in rank order."""
    size = torch.tensor([length], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _gather_padded(tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0 in rank order (lengths ``sizes``)."""
    longest = max(sizes)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient into the local slice."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        rank = dist.get_rank()
        ctx.start = sum(sizes[:rank])
        ctx.stop = ctx.start + sizes[rank]
        return _gather_padded(tensor.detach(), sizes)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total[ctx.start : ctx.stop], None


def _check_shapes(tensor: torch.Tensor, what: str) -> None:
    if tensor.dim() == 0:
        raise DaalmlError(f"{what}: cannot gather a 0-d tensor across ranks, got shape ()")


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order, differentiable.

    The backward of rank r's result sends to its local slice the sum of the gradients that all
    ranks' results received there; unchanged ``tensor`` when not distributed.
    """
    _check_shapes(tensor, "gather_with_grad")
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor, _sizes(tensor.shape[0], tensor.device))


@torch.no_grad()
def gather_tensor(tensor: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order, without gradient.

    Ranks may hold different numbers of rows (an uneven evaluation shard, even none); the other
    dimensions and the dtype must agree. ``device`` is where the collective runs (NCCL needs the
    rank's GPU); the result comes back on ``tensor``'s device. Unchanged ``tensor`` when not
    distributed.
    """
    _check_shapes(tensor, "gather_tensor")
    if not is_distributed():
        return tensor
    moved = tensor if device is None else tensor.to(device)
    return _gather_padded(moved, _sizes(moved.shape[0], moved.device)).to(tensor.device)


def gather_batch(
    embeddings: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch (embeddings with gradient to the local part, labels) for the loss.

    Call it on every rank at every step, before the loss: under DDP the loss then sees the
    whole batch in the order one process would; without a process group it returns its inputs.
    """
    if embeddings.shape[0] != labels.shape[0]:
        raise DaalmlError(
            f"gather_batch: {embeddings.shape[0]} embeddings but {labels.shape[0]} labels"
        )
    if not is_distributed():
        return embeddings, labels
    sizes = _sizes(embeddings.shape[0], embeddings.device)
    gathered = _GatherWithGrad.apply(embeddings, sizes)
    return gathered, _gather_padded(labels.to(embeddings.device), sizes).to(labels.device)


def shard(length: int, world_size: int, rank: int) -> range:
    """Rank ``rank``'s contiguous share of ``range(length)``; shares differ by at most one.

    Concatenating the shares of ranks 0..W-1 gives ``range(length)`` back, so gathering the
    per-rank results with :func:`gather_tensor` restores the original order.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise DaalmlError(f"shard: rank {rank} is not in 0..{world_size - 1}")
    if length < 0:
        raise DaalmlError(f"shard: length must be non-negative, got {length}")
    base, extra = divmod(length, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))
