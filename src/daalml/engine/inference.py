"""The one embedding loop (datasets, image files), its DDP-sharded form, and test metrics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from daalml.config import Config
from daalml.data.batches import concat_batches, map_batches
from daalml.data.images import load_rgb
from daalml.data.preprocessing import Preprocessing, preprocessing_for
from daalml.engine.data import RunData
from daalml.engine.devices import device_for
from daalml.engine.distributed import gather_tensor, is_distributed, shard, world
from daalml.engine.module import EmbeddingModule
from daalml.errors import DaalmlError
from daalml.evaluation.retrieval import query_gallery_metrics, retrieval_metrics
from daalml.models.embedder import EmbeddingModel

ImageInput = str | Path | Image.Image


def embed(
    fn,
    dataset: Dataset,
    *,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``fn`` to every input of ``dataset`` in order: (embeddings, labels) on the CPU.

    The engine's embedding loop: training's evaluations, image files, pictures of a run all use
    it. It is the data layer's one batch loop (:func:`daalml.data.batches.map_batches`, which
    the feature and activation caches run too), without gradients. ``progress`` shows a bar on
    stderr (stdout stays for results).
    """
    batches = map_batches(
        fn,
        dataset,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        progress=progress,
        description="Embedding",
    )
    return concat_batches(batches)


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


def _metrics(fn, data: RunData, cfg: Config, device: torch.device) -> dict[str, Any]:
    """Test metrics of ``fn``; under DDP every rank embeds a share and rank 0 alone scores.

    Where the layout has categories (SOP, In-Shop) the result also has ``per_category``."""
    kwargs = {"batch_size": cfg.train.eval_batch_size, "device": device}
    if not (data.features or data.activations):
        kwargs["num_workers"] = cfg.data.num_workers
    if data.test is not None:
        embeddings, labels = embed_sharded(fn, data.test, **kwargs)
        if world()[1] != 0:
            return {}
        return retrieval_metrics(
            embeddings, labels, ks=cfg.eval.ks, seed=cfg.train.seed, categories=data.categories
        )
    assert data.query is not None and data.gallery is not None
    q, ql = embed_sharded(fn, data.query, **kwargs)
    g, gl = embed_sharded(fn, data.gallery, **kwargs)
    if world()[1] != 0:
        return {}
    return query_gallery_metrics(
        q, ql, g, gl, ks=cfg.eval.ks, seed=cfg.train.seed, categories=data.categories
    )


def pretrained_metrics(
    model: EmbeddingModel, data: RunData, cfg: Config, device: torch.device | None = None
) -> dict[str, Any]:
    """The backbone's own features before any training (MLRC's `pretrained` row), computed on
    ``device`` (the Trainer's, in a run; else the config's choice)."""
    device = device or device_for(cfg.train.accelerator)
    if data.features:
        return _metrics(lambda x: x, data, cfg, device)
    backbone = model.backbone
    was_training = backbone.training
    backbone.to(device).eval()
    try:
        return _metrics(backbone, data, cfg, device)
    finally:
        backbone.train(was_training)


def model_metrics(
    module: EmbeddingModule, data: RunData, cfg: Config, device: torch.device | None = None
) -> dict[str, Any]:
    """Test metrics of the trained embedding model, computed on ``device`` (as above)."""
    device = device or device_for(cfg.train.accelerator)
    module.to(device).eval()
    return _metrics(module, data, cfg, device)


# ---------------------------------------------------------------------------- image files
def preprocessing(module: EmbeddingModule) -> Preprocessing:
    """The input a module rebuilt by :func:`daalml.engine.checkpoint.load_module` wants.

    The description its checkpoint saved, else (older checkpoints) the one its config gives.
    """
    backbone = module.model.backbone
    if backbone is None:
        raise DaalmlError("this module has no backbone (cached-feature head only): cannot embed")
    saved = getattr(module, "input_preprocessing", None)
    return saved if isinstance(saved, Preprocessing) else preprocessing_for(module.cfg, backbone)


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
    """CUDA when available, else the CPU (:func:`daalml.engine.devices.device_for`)."""
    return device_for("auto")


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
    images_set = _Images(images, preprocessing(module).transform())
    kwargs = {"batch_size": batch_size, "num_workers": num_workers, "progress": progress}
    try:
        return embed(module, images_set, device=target, **kwargs)[0]
    finally:
        module.features = features
