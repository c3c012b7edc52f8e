"""The one device choice of the project: training, evaluation, feature caches, embedding."""

from __future__ import annotations

import torch

from daalml.engine.distributed import launched_local_rank


def device_for(accelerator: str = "auto") -> torch.device:
    """CUDA when ``accelerator`` (``train.accelerator``: cpu, gpu, auto) allows it and a GPU is
    there, else the CPU. Each process of a node takes its own GPU, even before DDP starts."""
    if accelerator not in ("gpu", "auto") or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", launched_local_rank() % torch.cuda.device_count())
