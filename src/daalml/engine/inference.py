"""The one embedding loop, its DDP-sharded form, the device a run computes on, test metrics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from daalml.config import Config
from daalml.data.images import load_rgb
from daalml.data.preprocessing import Preprocessing, preprocessing_for
from daalml.engine.data import RunData
from daalml.engine.distributed import (
    gather_tensor,
    is_distributed,
    launched_local_rank,
    shard,
    world,
)
from daalml.engine.module import EmbeddingModule
from daalml.errors import DaalmlError
from daalml.metrics import query_gallery_metrics, retrieval_metrics
from daalml.models.embedder import EmbeddingModel

ImageInput = str | Path | Image.Image


@torch.no_grad()
def embed(
    fn, dataset: Dataset, *, batch_size: int, device: torch.device, num_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``fn`` to every input of ``dataset`` in order: (embeddings, labels) on the CPU."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    outputs, labels = [], []
    for inputs, batch_labels in loader:
        outputs.append(fn(inputs.to(device)).float().cpu())
        labels.append(torch.as_tensor(batch_labels).long())
    return torch.cat(outputs), torch.cat(labels)


def embed_sharded(
    fn, dataset: Dataset, *, batch_size: int, device: torch.device, num_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`embed` split across DDP ranks: each embeds its contiguous share, all get it all.

    The gathered rows come back in the dataset's order; without a process group this is
    :func:`embed`. Every rank needs a non-empty share (``len(dataset) >= world size``).
    """
    kwargs = {"batch_size": batch_size, "device": device, "num_workers": num_workers}
    if not is_distributed():
        return embed(fn, dataset, **kwargs)
    size, rank = world()
    embeddings, labels = embed(fn, Subset(dataset, list(shard(len(dataset), size, rank))), **kwargs)
    return gather_tensor(embeddings, device), gather_tensor(labels, device)


def _metrics(fn, data: RunData, cfg: Config, device: torch.device) -> dict[str, float]:
    """Test metrics of ``fn``; under DDP every rank embeds a share and rank 0 alone scores."""
    kwargs = {"batch_size": cfg.train.eval_batch_size, "device": device}
    if not (data.features or data.activations):
        kwargs["num_workers"] = cfg.data.num_workers
    if data.test is not None:
        embeddings, labels = embed_sharded(fn, data.test, **kwargs)
        if world()[1] != 0:
            return {}
        return retrieval_metrics(embeddings, labels, ks=cfg.eval.ks, seed=cfg.train.seed)
    assert data.query is not None and data.gallery is not None
    q, ql = embed_sharded(fn, data.query, **kwargs)
    g, gl = embed_sharded(fn, data.gallery, **kwargs)
    if world()[1] != 0:
        return {}
    return query_gallery_metrics(q, ql, g, gl, ks=cfg.eval.ks, seed=cfg.train.seed)


def run_device(cfg: Config) -> torch.device:
    wants_gpu = cfg.train.accelerator in ("gpu", "auto") and torch.cuda.is_available()
    if not wants_gpu:
        return torch.device("cpu")
    # before DDP starts, each process of a node works on its own GPU
    return torch.device("cuda", launched_local_rank() % torch.cuda.device_count())


def pretrained_metrics(model: EmbeddingModel, data: RunData, cfg: Config) -> dict[str, float]:
    """The backbone's own features before any training (MLRC's `pretrained` row)."""
    device = run_device(cfg)
    if data.features:
        return _metrics(lambda x: x, data, cfg, device)
    backbone = model.backbone
    was_training = backbone.training
    backbone.to(device).eval()
    try:
        return _metrics(backbone, data, cfg, device)
    finally:
        backbone.train(was_training)


def model_metrics(module: EmbeddingModule, data: RunData, cfg: Config) -> dict[str, float]:
    """Test metrics of the trained embedding model."""
    device = run_device(cfg)
    module.to(device).eval()
    return _metrics(module, data, cfg, device)


# ---------------------------------------------------------------------------- image files
def preprocessing(module: EmbeddingModule) -> Preprocessing:
    """The preprocessing of a module rebuilt with ``daalml.engine.run.load_module``."""
    backbone = module.model.backbone
    if backbone is None:
        raise DaalmlError("this module has no backbone (cached-feature head only): cannot embed")
    return preprocessing_for(module.cfg, backbone)


class _Images(Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, images: Sequence[ImageInput], transform: Any) -> None:
        self.images = list(images)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.images[index]
        image = item.convert("RGB") if isinstance(item, Image.Image) else load_rgb(item)
        return self.transform(image), index


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def embed_images(
    module: EmbeddingModule,
    images: Sequence[ImageInput],
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """L2-normalised embeddings (N, d), float32 on the CPU, of image files or PIL images.

    Images go through the checkpoint's evaluation preprocessing (:func:`preprocessing`).
    """
    if not images:
        raise DaalmlError("embed_images: no images given")
    if batch_size < 1:
        raise DaalmlError(f"batch_size must be a positive integer, got {batch_size}")
    try:
        target = torch.device(device) if device is not None else default_device()
    except RuntimeError as err:
        raise DaalmlError(f"device {device!r} is not a valid torch device ({err})") from err
    features = module.features
    module.features = False  # images, even for a head trained on cached features
    module.to(target).eval()
    loader = DataLoader(
        _Images(images, preprocessing(module).transform()),
        batch_size=batch_size,
        num_workers=num_workers,
    )
    batches: Any = loader
    if progress:
        from rich.console import Console
        from rich.progress import track

        batches = track(
            loader,
            total=len(loader),
            description="Embedding",
            transient=True,
            console=Console(stderr=True),  # stdout stays for results
        )
    try:
        out = [module(inputs.to(target)).float().cpu() for inputs, _ in batches]
    finally:
        module.features = features
    return torch.cat(out)
