"""From a config to the datasets a run needs: train / validation / test, images or cached features.

The engine composes the data layer (the dataset registry, splits, transforms, caches) with the
backbone here, because the cached-feature mode turns images into backbone features once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset

from daalml.config import Config
from daalml.data.activations import CachedActivations, cached_activations, weights_digest
from daalml.data.cache import cached_features
from daalml.data.dataset import ImageDataset
from daalml.data.images import check_images
from daalml.data.preprocessing import preprocessing_for
from daalml.data.records import ImageRecord
from daalml.data.registry import BuiltDatasets, categories_of, dataset_entry, load_layout
from daalml.data.splits import carve_validation
from daalml.data.transforms import describe_transform, train_transform
from daalml.engine.devices import device_for
from daalml.errors import DaalmlError
from daalml.evaluation.ranking import count_unmatchable_queries
from daalml.models.backbones import Backbone
from daalml.models.stages import split_backbone


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
    activations: bool = False  # True: items are cached trunk activations (model.train_blocks)
    train_eval: Dataset | None = None  # the training set without augmentation (PCA, data init)
    skipped_images: list[tuple[Path, str]] = field(default_factory=list)
    families: list[str] | None = None  # a group per test sample (a font family), for plots
    categories: list[str] | None = None  # per test sample or query (SOP, In-Shop), for metrics


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


def _contiguous(records: list[ImageRecord]) -> list[ImageRecord]:
    """Relabel 0..C-1 when skipped images emptied a class (the loss has one slot per label)."""
    order = {label: i for i, label in enumerate(sorted({r.label for r in records}))}
    if all(order[r.label] == r.label for r in records):
        return records
    return [dataclasses.replace(r, label=order[r.label]) for r in records]


@dataclass
class ListedImages:
    """The checked image records of a run's splits: what the files say, before any backbone.

    Listing comes first so that a bad ``data.root`` fails with its one-line error before any
    backbone weights are downloaded.
    """

    train: list[ImageRecord]
    val: list[ImageRecord]
    test: list[ImageRecord] | None  # leave-one-out protocols
    query: list[ImageRecord] | None  # query/gallery protocols
    gallery: list[ImageRecord] | None
    skipped: list[tuple[Path, str]]
    categories: list[str] | None


def list_images(cfg: Config) -> ListedImages | None:
    """List and check the image files of ``cfg``'s splits; None for in-memory datasets."""
    if dataset_entry(cfg.data.dataset).build is not None:
        return None
    if cfg.data.root is None:
        raise DaalmlError(f"data.root is required for data.dataset={cfg.data.dataset!r}")
    splits = load_layout(cfg.data.dataset, cfg.data.root, train_classes=cfg.data.train_classes)
    train_records, val_records = splits.train, []
    if cfg.train.val_classes:
        train_records, val_records = carve_validation(splits.train, cfg.train.val_classes)
    skipped: list[tuple[Path, str]] = []
    train_records = _contiguous(_check(train_records, cfg, skipped))
    val_records = _check(val_records, cfg, skipped) if val_records else []
    listed = ListedImages(train_records, val_records, None, None, None, skipped, None)
    if splits.query is not None and splits.gallery is not None:
        listed.query = _check(splits.query, cfg, skipped)
        listed.gallery = _check(splits.gallery, cfg, skipped)
        queries = listed.query
    else:
        listed.test = queries = _check(splits.test, cfg, skipped)
    listed.categories = categories_of(cfg.data.dataset, queries)
    return listed


def _image_data(
    listed: ListedImages, cfg: Config, backbone: Backbone, device: torch.device
) -> RunData:
    aug = train_transform(cfg.data.image_size, mean=backbone.mean, std=backbone.std)
    plain = preprocessing_for(cfg, backbone).transform()  # what retrieval and export use too

    def images(records: list[ImageRecord] | None, transform) -> ImageDataset | None:
        return ImageDataset(records, transform) if records else None

    data = RunData(
        train=ImageDataset(listed.train, aug),
        num_train_classes=len({r.label for r in listed.train}),
        test=images(listed.test, plain),
        val=images(listed.val, plain),
        query=images(listed.query, plain),
        gallery=images(listed.gallery, plain),
        train_eval=ImageDataset(listed.train, plain),
        skipped_images=list(listed.skipped),
        categories=listed.categories,
    )
    if cfg.train.cache_features and cfg.model.train_blocks:
        _to_activations(data, cfg, backbone, plain, device)
    elif cfg.train.cache_features:
        _to_features(data, cfg, backbone, plain, device)
    return data


def _to_features(
    data: RunData, cfg: Config, backbone: Backbone, transform, device: torch.device
) -> None:
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
            device=device,
        )
        return LabelledTensors(feats, labels)

    data.train_eval = features(data.train_eval)
    data.train = data.train_eval
    data.val = features(data.val)
    data.test = features(data.test)
    data.query = features(data.query)
    data.gallery = features(data.gallery)
    data.features = True


def activation_cache(
    cfg: Config,
    backbone: Backbone,
    dataset: ImageDataset,
    views: int,
    device: torch.device | None = None,
) -> CachedActivations:
    """The frozen trunk's activations of ``views`` views of every image of ``dataset`` (cached).

    The key covers the data (records, transform), the backbone and its trunk's weights, the
    split point, the dtype and ``views``.
    """
    split = split_backbone(backbone, cfg.model.train_blocks)
    key = {
        "dataset": cfg.data.dataset,
        "root": str(Path(cfg.data.root or "").resolve()),
        "records": _records_fingerprint(dataset.records),
        "transform": describe_transform(dataset.transform),
        "backbone": backbone.name,
        "pretrained": str(cfg.model.pretrained),
        "weights": weights_digest(split.trunk),
        "point": split.point,
        "dtype": cfg.train.cache_dtype,
        "views": str(views),
    }
    return cached_activations(
        split.trunk,
        dataset,
        views=views,
        cache_dir=default_cache_dir(cfg) / "activations",
        key=key,
        dtype=cfg.train.cache_dtype,
        batch_size=cfg.train.eval_batch_size,
        num_workers=cfg.data.num_workers,
        device=device or device_for(cfg.train.accelerator),
    )


def _to_activations(
    data: RunData, cfg: Config, backbone: Backbone, plain, device: torch.device
) -> None:
    """Replace every image dataset by the frozen trunk's activations of it (cached on disk).

    The training set gets ``data.cached_views`` augmented views per image, every other split
    (and the non-augmented training set, for PCA and data initialisation) one centre view.
    """

    def activations(dataset: Dataset | None, views: int = 1) -> CachedActivations | None:
        if dataset is None:
            return None
        assert isinstance(dataset, ImageDataset)
        return activation_cache(cfg, backbone, dataset, views, device)

    assert isinstance(data.train, ImageDataset)
    eval_set = ImageDataset(data.train.records, plain)
    data.train = activations(data.train, cfg.data.cached_views)  # type: ignore[assignment]
    data.train_eval = activations(eval_set)
    data.val = activations(data.val)
    data.test = activations(data.test)
    data.query = activations(data.query)
    data.gallery = activations(data.gallery)
    data.activations = True


def _in_memory_data(built: BuiltDatasets) -> RunData:
    return RunData(
        train=built.train,
        num_train_classes=built.num_train_classes,
        test=built.test,
        val=built.val,
        train_eval=built.train_eval,
        families=built.families,
    )


def prepare_data(
    cfg: Config,
    backbone: Backbone,
    listed: ListedImages | None = None,
    device: torch.device | None = None,
) -> RunData:
    """Build the run's datasets from ``cfg``: image files (or their cached features), or a
    registered in-memory build (the glyph renderings). ``listed``: the images already listed
    by :func:`list_images` (listed now when not given); ``device``: where the caches are
    computed (the run's choice when not given)."""
    entry = dataset_entry(cfg.data.dataset)
    if entry.build is not None:
        return _in_memory_data(entry.build(cfg, default_cache_dir(cfg)))
    if listed is None:
        listed = list_images(cfg)
        assert listed is not None
    return _image_data(listed, cfg, backbone, device or device_for(cfg.train.accelerator))


# ---------------------------------------------------------------------------- checks
def _alone(labels: torch.Tensor, gallery: torch.Tensor | None = None) -> int:
    """Queries with nothing to find: alone in their class, or (with a gallery) absent from it."""
    if gallery is None:
        return count_unmatchable_queries(labels)
    return int((~torch.isin(labels, gallery)).sum())


def retrieval_exclusions(data: RunData, cfg: Config) -> int:
    """Check the evaluation splits before training; return the test queries left out of recall.

    A test image alone in its class cannot be a query (nothing to retrieve): it is excluded
    from recall, with a warning. A split where no query is left is an error, raised now
    rather than after training.
    """
    where = f"data.dataset={cfg.data.dataset!r}" + (f" at {cfg.data.root}" if cfg.data.root else "")
    if data.val is not None and _alone(dataset_labels(data.val)) == len(data.val):
        raise DaalmlError(
            f"{where}: every class of the validation split (train.val_classes="
            f"{cfg.train.val_classes}) has a single image; none can be a query"
        )
    if data.test is not None:
        labels = dataset_labels(data.test)
        excluded, total, split = _alone(labels), len(labels), "test split"
    elif data.query is not None and data.gallery is not None:
        labels = dataset_labels(data.query)
        excluded = _alone(labels, dataset_labels(data.gallery))
        total, split = len(labels), "query split"
    else:
        return 0
    if excluded == total:
        raise DaalmlError(
            f"{where}: no image of the {split} has another image of its class to retrieve; "
            "recall cannot be measured"
        )
    if excluded:
        warnings.warn(
            f"{where}: {excluded} of {total} images of the {split} are alone in their class and "
            "cannot be queries; they are excluded from recall (excluded_queries in metrics.json)",
            stacklevel=2,
        )
    return excluded
