"""From a config to the datasets a run needs: train / validation / test, images or cached features.

The engine composes the data layer (layouts, splits, transforms, the glyph renderer) with the
backbone here, because the cached-feature mode turns images into backbone features once.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset

from daalml.config import Config
from daalml.data.cache import cached_features
from daalml.data.dataset import ImageDataset
from daalml.data.images import check_images
from daalml.data.layouts import load_splits
from daalml.data.records import ImageRecord
from daalml.data.splits import carve_validation
from daalml.data.transforms import describe_transform, eval_transform, train_transform
from daalml.errors import DaalmlError
from daalml.models.backbones import Backbone


@dataclass
class RunData:
    """Everything the engine trains and evaluates on; features instead of images when cached."""

    train: Dataset
    num_train_classes: int
    test: Dataset | None  # leave-one-out retrieval set (None for query/gallery protocols)
    val: Dataset | None = None
    query: Dataset | None = None
    gallery: Dataset | None = None
    features: bool = False  # True: items are backbone features, not images
    train_eval: Dataset | None = None  # the training set without augmentation (PCA, data init)
    skipped_images: list[tuple[Path, str]] = field(default_factory=list)
    families: list[str] | None = None  # per test sample (glyphs: font family), for plots


def default_cache_dir(cfg: Config) -> Path:
    """`train.cache_dir`, else $DAALML_CACHE, else ~/.cache/daalml."""
    if cfg.train.cache_dir:
        return Path(cfg.train.cache_dir).expanduser()
    env = os.environ.get("DAALML_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "daalml"


def _labels_of(dataset: Dataset) -> torch.Tensor:
    labels = getattr(dataset, "labels", None)
    if labels is None and isinstance(dataset, TensorDataset):
        labels = dataset.tensors[1]
    if labels is None:
        raise TypeError(f"{type(dataset).__name__} exposes no labels")
    return torch.as_tensor(labels).long()


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """The (N,) int64 labels of any dataset the engine builds."""
    return _labels_of(dataset)


class LabelledTensors(TensorDataset):
    """(features, label) pairs with a ``labels`` attribute, like the image datasets."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__(features, labels)
        self.labels = labels


def _records_fingerprint(records: list[ImageRecord]) -> str:
    digest = hashlib.sha1()
    for record in records:
        digest.update(f"{record.path}\t{record.label}\n".encode())
    return digest.hexdigest()


def _check(records: list[ImageRecord], cfg: Config, skipped: list[tuple[Path, str]]):
    good, bad = check_images(records, strict=cfg.data.strict, progress=True)
    for path, reason in bad:
        warnings.warn(f"skipping unreadable image {path}: {reason}", stacklevel=2)
    skipped.extend(bad)
    return good


def _image_data(cfg: Config, backbone: Backbone) -> RunData:
    if cfg.data.root is None:
        raise DaalmlError(f"data.root is required for data.dataset={cfg.data.dataset!r}")
    splits = load_splits(cfg.data.dataset, cfg.data.root, train_classes=cfg.data.train_classes)
    train_records, val_records = splits.train, []
    if cfg.train.val_classes:
        train_records, val_records = carve_validation(splits.train, cfg.train.val_classes)
    skipped: list[tuple[Path, str]] = []
    train_records = _check(train_records, cfg, skipped)
    val_records = _check(val_records, cfg, skipped) if val_records else []
    mean, std = backbone.mean, backbone.std
    aug = train_transform(cfg.data.image_size, mean=mean, std=std)
    plain = eval_transform(cfg.data.image_size, cfg.data.resize, mean=mean, std=std)

    def images(records: list[ImageRecord], transform) -> ImageDataset | None:
        return ImageDataset(records, transform) if records else None

    num_classes = len({r.label for r in train_records})
    data = RunData(
        train=ImageDataset(train_records, aug),
        num_train_classes=num_classes,
        test=None,
        val=images(val_records, plain),
        train_eval=ImageDataset(train_records, plain),
        skipped_images=skipped,
    )
    if splits.query is not None and splits.gallery is not None:
        data.query = images(_check(splits.query, cfg, skipped), plain)
        data.gallery = images(_check(splits.gallery, cfg, skipped), plain)
    else:
        data.test = images(_check(splits.test, cfg, skipped), plain)
    if cfg.train.cache_features:
        _to_features(data, cfg, backbone, plain)
    return data


def _to_features(data: RunData, cfg: Config, backbone: Backbone, transform) -> None:
    """Replace every image dataset by the backbone's features of it (computed once, cached)."""
    cache_dir = default_cache_dir(cfg) / "features"

    def features(dataset: ImageDataset | None) -> LabelledTensors | None:
        if dataset is None:
            return None
        key = {
            "dataset": cfg.data.dataset,
            "root": str(Path(cfg.data.root or "").resolve()),
            "records": _records_fingerprint(dataset.records),
            "backbone": backbone.name,
            "pretrained": str(cfg.model.pretrained),
            "transform": describe_transform(transform),
        }
        feats, labels = cached_features(
            backbone,
            dataset,
            cache_dir=cache_dir,
            key=key,
            batch_size=cfg.train.eval_batch_size,
            num_workers=cfg.data.num_workers,
        )
        return LabelledTensors(feats, labels)

    data.train_eval = features(data.train_eval)
    data.train = data.train_eval
    data.val = features(data.val)
    data.test = features(data.test)
    data.query = features(data.query)
    data.gallery = features(data.gallery)
    data.features = True


def _glyph_data(cfg: Config) -> RunData:
    from daalml.data.glyphs import GlyphTensorDataset, load_glyphs

    glyphs = load_glyphs(
        seed=cfg.train.seed,
        image_size=cfg.data.glyph_image_size,
        samples_per_font=cfg.data.glyph_samples_per_font,
        font_files=cfg.data.font_files,
        cache_dir=default_cache_dir(cfg) / "glyphs",
        progress=True,
    )
    train, val = glyphs.train, None
    if cfg.train.val_classes:
        train, val = _carve_tensor_validation(train, cfg.train.val_classes)
    return RunData(
        train=GlyphTensorDataset(train),
        num_train_classes=int(train.labels.max()) + 1,
        test=GlyphTensorDataset(glyphs.test),
        val=GlyphTensorDataset(val) if val is not None else None,
        train_eval=GlyphTensorDataset(train),
        families=list(glyphs.test.families),
    )


def _carve_tensor_validation(split, val_classes: int):
    """Hold out the last ``val_classes`` classes of an in-memory split (relabelled)."""
    from daalml.data.glyphs import GlyphSplit

    num_classes = int(split.labels.max()) + 1
    if num_classes - val_classes < 2:
        raise DaalmlError(
            f"train.val_classes={val_classes} leaves {num_classes - val_classes} training "
            f"classes of {num_classes}; at least 2 must remain"
        )
    cut = num_classes - val_classes

    def part(mask: torch.Tensor, offset: int) -> GlyphSplit:
        index = mask.nonzero().squeeze(1).tolist()
        return GlyphSplit(
            images=split.images[mask],
            labels=split.labels[mask] - offset,
            fonts=[split.fonts[i] for i in index],
            families=[split.families[i] for i in index],
            class_names=split.class_names[offset : offset + (cut if offset == 0 else val_classes)],
        )

    return part(split.labels < cut, 0), part(split.labels >= cut, cut)


def prepare_data(cfg: Config, backbone: Backbone) -> RunData:
    """Build the run's datasets from ``cfg`` (images, features or glyph renderings)."""
    if cfg.data.dataset == "glyphs":
        return _glyph_data(cfg)
    return _image_data(cfg, backbone)
