"""The pictures of one run: from a loaded :class:`~daalml.workflows.run_dir.Run` to matplotlib figures.

``visualize(run_dir, kind=...)`` is what ``daalml visualize`` calls: ``map`` (2-D map of the
test embeddings), ``segments`` (DAAL class segments), ``margins`` (DAAL: each training class's
thickness against its margin, read from the checkpoint), ``retrieval`` (query grid) or
``curves`` (training curves from logs/metrics.csv).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from daalml.errors import DaalmlError
from daalml.evaluation.search import knn
from daalml.losses.daal import DAALLoss
from daalml.viz.plots import (
    METHODS,
    GridRow,
    embedding_map,
    margins_view,
    project_2d,
    read_epoch_log,
    retrieval_grid,
    save_figure,
    segments_view,
    training_curves,
)
from daalml.workflows.run_dir import EmbeddedSet, Run, find_checkpoint, load_run

__all__ = [
    "KINDS",
    "MarginData",
    "checkpoint_margins_figure",
    "curves_figure",
    "daal_loss",
    "default_output",
    "map_figure",
    "margin_data",
    "margins_figure",
    "retrieval_figure",
    "retrieval_rows",
    "segments_figure",
    "visualize",
]

KINDS = ("map", "segments", "margins", "retrieval", "curves")
V1_THICKNESS = "rms_distance"  # the statistic of losses built before ``thickness`` existed
LOG_FILE = Path("logs") / "metrics.csv"
MAX_MAP_POINTS = 10_000


def map_figure(run: Run, method: str = "tsne", *, max_points: int = MAX_MAP_POINTS) -> Figure:
    """2-D map of the test embeddings (the gallery for query/gallery datasets) by class.

    Above ``max_points`` samples a seeded random subset is drawn (t-SNE time grows with N).
    """
    if method not in METHODS:
        raise DaalmlError(f"--method {method!r} is unknown: choose one of {', '.join(METHODS)}")
    _, shown, _ = run.retrieval_sets()
    embeddings, labels = shown.embeddings, shown.labels
    note = ""
    if len(labels) > max_points:
        generator = torch.Generator().manual_seed(run.cfg.train.seed)
        keep = torch.randperm(len(labels), generator=generator)[:max_points].sort().values
        embeddings, labels = embeddings[keep], labels[keep]
        note = f" (random {max_points} of {len(shown)})"
    points = project_2d(embeddings, method, seed=run.cfg.train.seed)
    title = (
        f"{method.upper() if method != 'tsne' else 't-SNE'} of {len(labels)} test embeddings"
        f"{note}, {len(torch.unique(labels))} unseen classes - {run.cfg.loss.name}"
    )
    return embedding_map(points, labels, shown.class_names, title=title)


def daal_loss(run: Run) -> DAALLoss | None:
    """The run's DAAL loss module, or None when it trained with another loss."""
    inner = getattr(run.module.loss, "loss", None)
    return inner if isinstance(inner, DAALLoss) else None


def segments_figure(run: Run, *, n_classes: int = 5) -> Figure:
    """The first ``n_classes`` training classes: their samples and DAAL segments."""
    loss = daal_loss(run)
    if loss is None:
        raise DaalmlError(
            f"run {run.directory}: loss {run.cfg.loss.name!r} has no class segments "
            "(the segments view is for DAAL runs)"
        )
    if n_classes < 1:
        raise DaalmlError(f"n_classes must be a positive integer, got {n_classes}")
    classes = list(range(min(n_classes, loss.num_classes)))
    train = run.embed("train", classes=classes)
    with torch.no_grad():
        vertices = loss.vertices.detach().float().cpu()
        if loss.normalize:
            vertices = torch.nn.functional.normalize(vertices, dim=-1)
    title = (
        f"DAAL segments of {len(classes)} training classes ({loss.segment} mode), "
        "in their PCA plane"
    )
    return segments_view(
        train.embeddings,
        train.labels,
        vertices,
        train.class_names,
        mode=loss.segment,
        title=title,
    )


@dataclass(frozen=True)
class MarginData:
    """What the margins view draws, per training class, as the checkpoint holds it."""

    sigma_perp: np.ndarray  # (C,) thickness statistic
    margins: np.ndarray  # (C,) delta_c from DAALLoss.margins()
    seen: np.ndarray  # (C,) bool: the class's statistics were ever updated
    thickness: str  # which statistic sigma_perp is ("spread" or "rms_distance")
    kappa: float
    delta: float
    delta_min: float
    delta_max: float


def margin_data(loss: DAALLoss) -> MarginData:
    """The loss's thickness statistics and the margins it derives from them."""
    with torch.no_grad():
        return MarginData(
            sigma_perp=loss.sigma_perp.detach().double().cpu().numpy(),
            margins=loss.margins().detach().double().cpu().numpy(),
            seen=loss.seen.detach().cpu().numpy().astype(bool),
            thickness=str(getattr(loss, "thickness", V1_THICKNESS)),
            kappa=float(loss.kappa),
            delta=float(loss.delta),
            delta_min=float(loss.delta_min),
            delta_max=float(loss.delta_max),
        )


def _not_daal(where: object, name: str) -> DaalmlError:
    return DaalmlError(
        f"run {where}: loss {name!r} is not DAAL, it has no class thickness or adaptive "
        "margins (the margins view is for DAAL runs)"
    )


def margins_figure(loss: DAALLoss, *, name: str = "daal") -> Figure:
    """Each training class's thickness ``sigma_perp`` against its margin, and their histogram."""
    data = margin_data(loss)
    title = (
        f"{name}: margins of {data.sigma_perp.size} training classes, thickness statistic "
        f"'{data.thickness}', kappa = {data.kappa:g}"
    )
    return margins_view(
        data.sigma_perp,
        data.margins,
        data.seen,
        delta=data.delta,
        delta_min=data.delta_min,
        delta_max=data.delta_max,
        title=title,
        thickness_label=f"thickness sigma_perp ({data.thickness})",
    )


def checkpoint_margins_figure(run_dir: str | Path) -> Figure:
    """:func:`margins_figure` of a run directory: the loss state from its checkpoint, no data."""
    from daalml.engine.checkpoint import load_module

    module, cfg = load_module(find_checkpoint(run_dir))
    loss = getattr(module.loss, "loss", None)
    if not isinstance(loss, DAALLoss):
        raise _not_daal(run_dir, cfg.loss.name)
    return margins_figure(loss, name=cfg.loss.name)


def _pick_queries(queries: EmbeddedSet, gallery: EmbeddedSet, count: int) -> list[int]:
    """The first item of ``count`` classes spread evenly over those the gallery can match."""
    labels = queries.labels.tolist()
    present = set(gallery.labels.tolist())
    first: dict[int, int] = {}
    for index, label in enumerate(labels):
        if label in present and label not in first:
            first[label] = index
    classes = sorted(first)
    if not classes:
        raise DaalmlError("retrieval grid: no query has a match in the gallery")
    spots = np.linspace(0, len(classes) - 1, num=min(count, len(classes))).round().astype(int)
    return [first[classes[s]] for s in spots.tolist()]


def retrieval_rows(run: Run, *, n_queries: int = 6, k: int = 5) -> list[GridRow]:
    """``n_queries`` test queries (one per class, spread over the classes) and their top k."""
    if n_queries < 1 or k < 1:
        raise DaalmlError(f"n_queries={n_queries} and k={k} must be positive integers")
    queries, gallery, same_set = run.retrieval_sets()
    chosen = _pick_queries(queries, gallery, n_queries)
    extra = 1 if same_set else 0
    scores, indices = knn(
        queries.embeddings[chosen], gallery.embeddings, k + extra, exclude_self=False
    )
    rows: list[GridRow] = []
    for query, row_scores, row_indices in zip(
        chosen, scores.tolist(), indices.tolist(), strict=True
    ):
        hits = [
            (s, i)
            for s, i in zip(row_scores, row_indices, strict=True)
            if not (same_set and i == query)
        ][:k]
        label = int(queries.labels[query])
        rows.append(
            GridRow(
                query=queries.image(query),
                results=[gallery.image(i) for _, i in hits],
                correct=[int(gallery.labels[i]) == label for _, i in hits],
                scores=[float(s) for s, _ in hits],
                caption=f"query: {queries.name(label)[:20]}",
            )
        )
    return rows


def retrieval_figure(run: Run, *, n_queries: int = 6, k: int = 5) -> Figure:
    """The retrieval grid of :func:`retrieval_rows`."""
    rows = retrieval_rows(run, n_queries=n_queries, k=k)
    return retrieval_grid(
        rows, title=f"top-{k} of {len(rows)} test queries: green = same class, red = other class"
    )


def curves_figure(run_dir: str | Path) -> Figure:
    """Training curves of a run directory from its logs/metrics.csv (no model is loaded)."""
    root = Path(run_dir)
    log = read_epoch_log(root / LOG_FILE)
    return training_curves(log, title=f"training curves of {root.name}")


def default_output(run_dir: str | Path, kind: str, method: str = "tsne") -> Path:
    """RUN_DIR/<method>.png for maps (tsne.png, ...), else RUN_DIR/<kind>.png."""
    return Path(run_dir) / f"{method if kind == 'map' else kind}.png"


def visualize(
    run_dir: str | Path,
    *,
    kind: str = "map",
    method: str = "tsne",
    output: str | Path | None = None,
) -> Path:
    """Draw one picture of a run and save it as PNG; returns the path written."""
    if kind not in KINDS:
        raise DaalmlError(f"--kind {kind!r} is unknown: choose one of {', '.join(KINDS)}")
    if method not in METHODS:
        raise DaalmlError(f"--method {method!r} is unknown: choose one of {', '.join(METHODS)}")
    path = Path(output) if output is not None else default_output(run_dir, kind, method)
    if kind == "curves":
        return save_figure(curves_figure(run_dir), path)
    if kind == "margins":
        return save_figure(checkpoint_margins_figure(run_dir), path)
    run = load_run(run_dir)
    if kind == "map":
        figure = map_figure(run, method)
    elif kind == "segments":
        figure = segments_figure(run)
    else:
        figure = retrieval_figure(run)
    return save_figure(figure, path)
