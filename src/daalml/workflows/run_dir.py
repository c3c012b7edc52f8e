"""A finished run ready to draw: its checkpoint, model, config and embedded splits with images.

A run directory is what ``daalml train`` writes. Its model comes from checkpoints/best.ckpt
when present, else last.ckpt. Runs trained on cached features are embedded from the same
cached features (fast), while their images are read from the dataset's files for the pictures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from daalml.config import Config, config_from_dict
from daalml.engine.data import RunData, dataset_labels, prepare_data
from daalml.engine.devices import device_for
from daalml.engine.module import EmbeddingModule
from daalml.errors import DaalmlError

__all__ = [
    "EmbeddedSet",
    "Run",
    "class_names_of",
    "find_checkpoint",
    "images_of",
    "load_run",
]

CHECKPOINT_NAMES = ("best.ckpt", "last.ckpt")
ImageSource = Callable[[int], np.ndarray]


def find_checkpoint(run_dir: str | Path) -> Path:
    """RUN_DIR/checkpoints/best.ckpt if present, else last.ckpt."""
    root = Path(run_dir)
    if not root.is_dir():
        raise DaalmlError(f"run directory {root}: no such directory")
    for name in CHECKPOINT_NAMES:
        path = root / "checkpoints" / name
        if path.is_file():
            return path
    raise DaalmlError(
        f"run directory {root}: no checkpoints/best.ckpt or checkpoints/last.ckpt "
        "(is it a `daalml train` output?)"
    )


def _base(dataset: Dataset) -> tuple[Dataset, list[int] | None]:
    """The dataset under a Subset, with the subset's indices."""
    if isinstance(dataset, Subset):
        inner, indices = _base(dataset.dataset)
        chosen = list(dataset.indices)
        return inner, chosen if indices is None else [indices[i] for i in chosen]
    return dataset, None


def images_of(dataset: Dataset) -> ImageSource | None:
    """``i -> (H, W, 3) uint8`` image of item i, when the dataset has pictures, else None."""
    base, indices = _base(dataset)
    picture = getattr(base, "picture", None)
    if picture is None:
        return None
    return picture if indices is None else lambda i: picture(indices[i])


def class_names_of(dataset: Dataset) -> list[str] | None:
    """The class name of each label value, when the dataset knows them."""
    base, _ = _base(dataset)
    names = getattr(base, "class_names", None)
    return list(names) if names is not None else None


@dataclass
class EmbeddedSet:
    """Embeddings of one split with labels, class names and (when available) the images."""

    embeddings: torch.Tensor  # (N, d), unit length
    labels: torch.Tensor  # (N,) int64
    class_names: list[str] | None = None
    images: ImageSource | None = None

    def __len__(self) -> int:
        return int(self.labels.numel())

    def name(self, label: int) -> str:
        """Class name of ``label`` (the number itself when names are unknown)."""
        if self.class_names is not None and 0 <= label < len(self.class_names):
            return self.class_names[label]
        return str(label)

    def image(self, index: int) -> np.ndarray:
        """Image of item ``index`` as (H, W, 3) uint8."""
        if self.images is None:
            raise DaalmlError("this split has no images to show (features only)")
        return self.images(index)


@dataclass
class Run:
    """A loaded run: model in eval mode, its config, data as trained and as images."""

    directory: Path
    checkpoint: Path
    module: EmbeddingModule
    cfg: Config
    data: RunData
    image_data: RunData
    device: torch.device

    def _split(self, data: RunData, split: str) -> Dataset | None:
        if split == "train":
            return data.train_eval if data.train_eval is not None else data.train
        if split not in ("test", "query", "gallery"):
            raise DaalmlError(f"unknown split {split!r}: choose train, test, query or gallery")
        return getattr(data, split)

    def embed(self, split: str, classes: Sequence[int] | None = None) -> EmbeddedSet:
        """Embed ``split`` (train = the training set without augmentation), all of it or only
        the items of ``classes``."""
        from daalml.engine.inference import embed

        dataset = self._split(self.data, split)
        shown = self._split(self.image_data, split)
        if dataset is None or shown is None:
            raise DaalmlError(f"run {self.directory}: its dataset has no {split} split")
        if classes is not None:
            labels = dataset_labels(dataset)
            keep = torch.isin(labels, torch.as_tensor(list(classes), dtype=torch.long))
            indices = keep.nonzero().squeeze(1).tolist()
            dataset, shown = Subset(dataset, indices), Subset(shown, indices)
        self.module.features = self.data.features
        self.module.to(self.device).eval()
        embeddings, labels = embed(
            self.module,
            dataset,
            batch_size=self.cfg.train.eval_batch_size,
            device=self.device,
        )
        return EmbeddedSet(embeddings, labels, class_names_of(shown), images_of(shown))

    def retrieval_sets(self) -> tuple[EmbeddedSet, EmbeddedSet, bool]:
        """(queries, gallery, exclude_self): the test set against itself, or query/gallery."""
        if self.data.test is not None:
            test = self.embed("test")
            return test, test, True
        return self.embed("query"), self.embed("gallery"), False


def load_run(run_dir: str | Path, *, device: str | torch.device | None = None) -> Run:
    """Load the model of ``run_dir`` and prepare its datasets (nothing is embedded yet)."""
    from daalml.engine.checkpoint import load_module

    directory = Path(run_dir)
    checkpoint = find_checkpoint(directory)
    module, cfg = load_module(checkpoint)
    module.eval()
    backbone = module.model.backbone
    data = prepare_data(cfg, backbone)
    image_data = data
    if data.features:  # the pictures need the image files behind the cached features
        raw = cfg.to_dict()
        raw["train"]["cache_features"] = False
        image_data = prepare_data(config_from_dict(raw, source=str(checkpoint)), backbone)
    if device is None:
        device = device_for(cfg.train.accelerator)
    return Run(directory, checkpoint, module, cfg, data, image_data, torch.device(device))
