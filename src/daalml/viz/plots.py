"""The pictures, as pure functions of arrays: 2-D maps, DAAL segments and margins, retrieval
grids, curves.

Each returns a matplotlib ``Figure`` of a fixed size (no tight bounding box), so a saved PNG is
exactly ``figsize * dpi`` pixels. Figures are made without pyplot: no display or backend
switch is needed, and nothing is left open in pyplot's figure manager.

One cohesive thing over 400 lines: the drawing of every kind of picture, in one style.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.colors import hsv_to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageOps

from daalml.errors import DaalmlError

__all__ = [
    "METHODS",
    "GridRow",
    "class_colours",
    "embedding_map",
    "margins_view",
    "project_2d",
    "read_epoch_log",
    "retrieval_grid",
    "save_figure",
    "segments_view",
    "training_curves",
]

METHODS = ("tsne", "umap", "pca")
DPI = 100
MAP_SIZE = (10.0, 8.0)  # inches: the plot on the left, the legend on the right
SEGMENTS_SIZE = (10.0, 8.0)
CURVES_SIZE = (12.0, 4.5)
MARGINS_SIZE = (12.0, 5.0)
GRID_CELL = 1.4  # inches per thumbnail
THUMBNAIL = 96  # pixels
MAX_LEGEND = 30
CORRECT, WRONG, QUERY = "#2ca02c", "#d62728", "#1f4e9c"
SEEN, UNSEEN = "#1f77b4", "#999999"
ArrayLike = torch.Tensor | np.ndarray


def _numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def save_figure(figure: Figure, path: str | Path, *, dpi: int = DPI) -> Path:
    """Write ``figure`` as PNG, its exact size: figsize * dpi pixels."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png")
    return path


def _figure(size: tuple[float, float]) -> Figure:
    return Figure(figsize=size, dpi=DPI)


# ---------------------------------------------------------------------------- 2-D projection
def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    from openTSNE import TSNE

    n = x.shape[0]
    tsne = TSNE(
        n_components=2,
        perplexity=min(30.0, (n - 1) / 3.0),
        initialization="pca",
        negative_gradient_method="bh" if n < 10_000 else "fft",
        random_state=seed,
        n_jobs=1 if n < 5_000 else -1,
        verbose=False,
    )
    return np.asarray(tsne.fit(x))


def _umap(x: np.ndarray, seed: int) -> np.ndarray:
    try:
        import umap
    except ImportError as err:
        raise DaalmlError(
            "--method umap needs umap-learn, which is not installed: pip install umap-learn"
        ) from err
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, x.shape[0] - 1), random_state=seed)
    return np.asarray(reducer.fit_transform(x))


def project_2d(embeddings: ArrayLike, method: str = "tsne", *, seed: int = 0) -> np.ndarray:
    """(N, 2) coordinates of embeddings (N, d): t-SNE (openTSNE), UMAP or PCA, seeded."""
    if method not in METHODS:
        raise DaalmlError(f"--method {method!r} is unknown: choose one of {', '.join(METHODS)}")
    x = np.ascontiguousarray(_numpy(embeddings), dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 4:
        raise DaalmlError(f"a 2-D map needs at least 4 embeddings (N, d), got {x.shape}")
    if method == "tsne":
        return _tsne(x, seed)
    if method == "umap":
        return _umap(x, seed)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(x)


# ---------------------------------------------------------------------------- colours
def class_colours(n: int) -> np.ndarray:
    """(n, 3) RGB colours, distinct for neighbouring classes: tab10/tab20, then spread hues."""
    if n <= 10:
        return np.asarray(matplotlib.colormaps["tab10"].colors)[:n, :3]
    if n <= 20:
        return np.asarray(matplotlib.colormaps["tab20"].colors)[:n, :3]
    golden = (math.sqrt(5) - 1) / 2  # successive hues as far apart as possible
    hues = (np.arange(n) * golden) % 1.0
    sat = np.where(np.arange(n) % 2 == 0, 0.85, 0.55)
    val = np.where(np.arange(n) % 3 == 0, 0.95, 0.7)
    return hsv_to_rgb(np.stack([hues, sat, val], axis=1))


def _names(labels: np.ndarray, class_names: Sequence[str] | None) -> dict[int, str]:
    out = {}
    for label in np.unique(labels).tolist():
        known = class_names is not None and 0 <= label < len(class_names)
        out[label] = class_names[label] if known else str(label)
    return out


# ---------------------------------------------------------------------------- embedding map
def embedding_map(
    points: ArrayLike,
    labels: ArrayLike,
    class_names: Sequence[str] | None = None,
    *,
    title: str = "",
    max_legend: int = MAX_LEGEND,
) -> Figure:
    """Scatter of 2-D points coloured by class.

    Up to ``max_legend`` classes get a legend; more get small class labels at their medians
    (and no legend), which stays readable with hundreds of classes.
    """
    xy, y = _numpy(points), _numpy(labels).astype(np.int64)
    if xy.ndim != 2 or xy.shape[1] != 2 or xy.shape[0] != y.shape[0]:
        raise DaalmlError(f"embedding map: points {xy.shape} and labels {y.shape} do not match")
    names = _names(y, class_names)
    classes = list(names)
    colours = class_colours(len(classes))
    figure = _figure(MAP_SIZE)
    with_legend = len(classes) <= max_legend
    axes = figure.add_axes((0.05, 0.06, 0.68, 0.88) if with_legend else (0.03, 0.03, 0.94, 0.91))
    size = float(np.clip(3000 / max(len(y), 1), 4, 40))
    for colour, label in zip(colours, classes, strict=True):
        mask = y == label
        axes.scatter(*xy[mask].T, s=size, color=colour, label=names[label], alpha=0.85, lw=0)
    if with_legend:
        axes.legend(
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            fontsize=8 if len(classes) <= 15 else 6,
            markerscale=max(1.0, 30 / size) ** 0.5,
            frameon=False,
            ncol=1 if len(classes) <= 15 else 2,
        )
    else:
        outline = [patheffects.withStroke(linewidth=2, foreground="white")]
        for colour, label in zip(colours, classes, strict=True):
            cx, cy = np.median(xy[y == label], axis=0)
            axes.annotate(
                names[label],
                (cx, cy),
                fontsize=7,
                color=colour * 0.6,
                ha="center",
                va="center",
                path_effects=outline,
            )
    axes.set_xticks([])
    axes.set_yticks([])
    heading = title or f"{len(y)} samples, {len(classes)} classes"
    axes.set_title(heading if with_legend else f"{heading} (names at class medians)")
    return figure


# ---------------------------------------------------------------------------- DAAL segments
def segments_view(
    embeddings: ArrayLike,
    labels: ArrayLike,
    vertices: ArrayLike,
    class_names: Sequence[str] | None = None,
    *,
    mode: str = "segment",
    title: str = "",
) -> Figure:
    """Samples of a few classes with their class segments [a_c, b_c], in one PCA plane.

    ``vertices`` (C, 2, d) are the loss's vertices as the loss uses them (normalised when it
    normalises); only the classes present in ``labels`` are drawn. The plane is the PCA plane
    of those samples and vertices, so a straight segment stays straight. ``mode="point"``
    draws only a_c (one proxy per class); ``"line"`` extends the segment dashed both ways.
    """
    from sklearn.decomposition import PCA

    x, y, v = _numpy(embeddings), _numpy(labels).astype(np.int64), _numpy(vertices)
    if v.ndim != 3 or v.shape[1] != 2 or v.shape[2] != x.shape[1]:
        raise DaalmlError(f"segments view: vertices {v.shape} do not fit embeddings {x.shape}")
    classes = sorted(set(y.tolist()))
    if not classes or max(classes) >= v.shape[0]:
        raise DaalmlError(f"segments view: labels {classes} outside the {v.shape[0]} classes")
    ends = v[classes].reshape(-1, x.shape[1])
    pca = PCA(n_components=2).fit(np.concatenate([x, ends]))
    xy, ends_xy = pca.transform(x), pca.transform(ends).reshape(len(classes), 2, 2)
    names = _names(y, class_names)
    figure = _figure(SEGMENTS_SIZE)
    axes = figure.add_axes((0.05, 0.06, 0.68, 0.88))
    for colour, label, (a, b) in zip(class_colours(len(classes)), classes, ends_xy, strict=True):
        axes.scatter(*xy[y == label].T, s=14, color=colour, alpha=0.55, lw=0, label=names[label])
        if mode == "line":
            far_a, far_b = a - 2.0 * (b - a), b + 2.0 * (b - a)
            axes.plot(*np.stack([far_a, far_b]).T, color=colour, lw=1, ls="--", alpha=0.7)
        if mode != "point":
            axes.plot(*np.stack([a, b]).T, color=colour * 0.7, lw=3, solid_capstyle="round")
            axes.scatter(*b, s=70, color=colour * 0.7, marker="s", edgecolor="k", lw=0.8)
        axes.scatter(*a, s=70, color=colour * 0.7, marker="o", edgecolor="k", lw=0.8)
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    figure.text(0.76, 0.06, "o  vertex a_c\n[] vertex b_c\n-- class segment", fontsize=9)
    share = pca.explained_variance_ratio_.sum()
    axes.set_title(title or f"DAAL class segments, PCA plane ({100 * share:.0f}% of variance)")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_aspect("equal", adjustable="datalim")
    return figure


# ---------------------------------------------------------------------------- DAAL margins
def _padded(values: np.ndarray) -> tuple[float, float]:
    """Axis limits around ``values`` with 8% room (a small fixed room when they are equal)."""
    low, high = float(values.min()), float(values.max())
    room = 0.08 * (high - low) if high > low else 0.05 * max(abs(high), 1e-3)
    return low - room, high + room


def margins_view(
    sigma_perp: ArrayLike,
    margins: ArrayLike,
    seen: ArrayLike,
    *,
    delta: float,
    delta_min: float,
    delta_max: float,
    title: str = "",
    thickness_label: str = "thickness sigma_perp",
) -> Figure:
    """Density awareness at a glance: each class's thickness against its margin, and the
    histogram of the margins.

    Left: one point per class ``(sigma_perp[c], margins[c])``, seen classes in blue, classes
    never seen in training grey crosses (their margin is ``delta``, their thickness 0). The
    dotted line is ``delta``, the dashed ones the clip range ``[delta_min, delta_max]``, the
    vertical one the mean thickness of the seen classes (where the margin equals ``delta``).
    Right: the margins' histogram, never-seen classes stacked in grey and counted apart.
    """
    sigma = _numpy(sigma_perp).astype(np.float64).ravel()
    margin = _numpy(margins).astype(np.float64).ravel()
    known = _numpy(seen).astype(bool).ravel()
    if not sigma.shape == margin.shape == known.shape or sigma.size == 0:
        raise DaalmlError(
            f"margins view: sigma_perp {sigma.shape}, margins {margin.shape} and seen "
            f"{known.shape} must be the same non-empty length"
        )
    n_seen, n_unseen = int(known.sum()), int((~known).sum())
    figure = _figure(MARGINS_SIZE)
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": (1.4, 1.0)})
    left.scatter(
        sigma[known],
        margin[known],
        s=22,
        color=SEEN,
        alpha=0.8,
        lw=0,
        label=f"seen in training ({n_seen})",
    )
    # never-seen classes have no thickness (0) and margin delta: drawn only when nothing else is,
    # else listed in the legend, so that they do not squash the seen classes' scale
    hidden = n_seen > 0
    left.scatter(
        [] if hidden else sigma[~known],
        [] if hidden else margin[~known],
        s=30,
        color=UNSEEN,
        marker="x",
        lw=1,
        label=f"never seen ({n_unseen}): no thickness, margin = delta"
        + (" (not drawn)" if hidden and n_unseen else ""),
    )
    left.axhline(delta, color="k", ls=":", lw=1, label=f"delta = {delta:g}")
    for bound, label in ((delta_min, f"clip [{delta_min:g}, {delta_max:g}]"), (delta_max, None)):
        left.axhline(bound, color="k", ls="--", lw=0.8, alpha=0.5, label=label)
    if n_seen:
        mean = float(sigma[known].mean())
        left.axvline(
            mean, color=SEEN, ls="-.", lw=0.8, alpha=0.6, label=f"mean thickness {mean:.4g}"
        )
        left.set_xlim(*_padded(sigma[known]))
        left.set_ylim(*_padded(np.append(margin[known], delta)))
    left.set_xlabel(thickness_label)
    left.set_ylabel("margin delta_c")
    heading = "thickness vs margin, one point per class"
    if n_seen:
        heading += (
            f"; seen: thickness {sigma[known].min():.4g}-{sigma[known].max():.4g}, "
            f"margin {margin[known].min():.4g}-{margin[known].max():.4g}"
        )
    left.set_title(heading, fontsize=10)
    left.grid(alpha=0.3)
    left.legend(fontsize=8, loc="best")

    low, high = float(margin.min()), float(margin.max())
    if high - low < 1e-9:  # every margin equal (kappa = 0): one visible bar around it
        low, high = low - 0.01, high + 0.01
    edges = np.linspace(low, high, num=min(30, max(5, sigma.size // 3)) + 1)
    right.hist(
        [margin[known], margin[~known]],
        bins=edges,
        stacked=True,
        color=[SEEN, UNSEEN],
        label=[f"seen ({n_seen})", f"never seen ({n_unseen})"],
    )
    right.xaxis.set_major_locator(MaxNLocator(5))
    right.set_xlabel("margin delta_c")
    right.set_ylabel("classes")
    right.set_title("histogram of the margins", fontsize=10)
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    figure.suptitle(title or f"DAAL margins of {sigma.size} classes")
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.11, top=0.86, wspace=0.22)
    return figure


# ---------------------------------------------------------------------------- retrieval grid
@dataclass
class GridRow:
    """One query and its ranked results: images (H, W, 3) uint8, correctness, scores."""

    query: np.ndarray
    results: list[np.ndarray]
    correct: list[bool]
    scores: list[float]
    caption: str = ""


def _thumbnail(image: np.ndarray) -> np.ndarray:
    picture = ImageOps.contain(Image.fromarray(np.asarray(image, dtype=np.uint8)), (THUMBNAIL,) * 2)
    canvas = Image.new("RGB", (THUMBNAIL, THUMBNAIL), (255, 255, 255))
    canvas.paste(picture, ((THUMBNAIL - picture.width) // 2, (THUMBNAIL - picture.height) // 2))
    return np.asarray(canvas)


def _framed(axes, image: np.ndarray, colour: str, text: str) -> None:
    axes.imshow(_thumbnail(image))
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(4)
    axes.set_xlabel(text, fontsize=7, labelpad=2)


def retrieval_grid(rows: Sequence[GridRow], *, title: str = "") -> Figure:
    """One row per query: the query (blue), then its top-k results framed green (same class)
    or red (other class), each with its cosine similarity."""
    if not rows:
        raise DaalmlError("retrieval grid: no queries to show")
    k = max(len(row.results) for row in rows)
    figure = _figure((GRID_CELL * (k + 1), GRID_CELL * len(rows) + 0.5))
    grid = figure.add_gridspec(
        len(rows), k + 1, left=0.02, right=0.98, bottom=0.04, top=1 - 0.45 / figure.get_figheight()
    )
    for r, row in enumerate(rows):
        _framed(figure.add_subplot(grid[r, 0]), row.query, QUERY, row.caption or "query")
        for c, (image, ok, score) in enumerate(
            zip(row.results, row.correct, row.scores, strict=True)
        ):
            _framed(
                figure.add_subplot(grid[r, c + 1]), image, CORRECT if ok else WRONG, f"{score:.4f}"
            )
    figure.suptitle(
        title or f"top-{k} retrieval: green = same class, red = other class", fontsize=10
    )
    return figure


# ---------------------------------------------------------------------------- training curves
def read_epoch_log(path: str | Path) -> dict[str, dict[int, float]]:
    """Lightning's CSV log (logs/metrics.csv) as ``{column: {epoch: last value}}``."""
    path = Path(path)
    if not path.is_file():
        raise DaalmlError(f"training log {path}: no such file")
    series: dict[str, dict[int, float]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "epoch" not in reader.fieldnames:
                raise DaalmlError(f"training log {path}: no 'epoch' column")
            for line, row in enumerate(reader, start=2):
                try:
                    epoch = int(float(row["epoch"]))
                except (TypeError, ValueError):
                    raise DaalmlError(
                        f"training log {path} line {line}: epoch {row['epoch']!r} is not a number"
                    ) from None
                for key, value in row.items():
                    if key in ("epoch", "step") or value in (None, ""):
                        continue
                    try:
                        series.setdefault(key, {})[epoch] = float(value)
                    except ValueError:
                        continue  # a text column: nothing to plot
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DaalmlError(f"cannot read training log {path}: {err}") from err
    if not series:
        raise DaalmlError(f"training log {path}: no logged values")
    return series


def training_curves(log: dict[str, dict[int, float]], *, title: str = "") -> Figure:
    """One panel per metric group (``train/...``, ``val/...``, ...), one line per metric, by epoch."""
    groups: dict[str, list[str]] = {}
    for key in sorted(log):
        groups.setdefault(key.split("/", 1)[0] if "/" in key else "other", []).append(key)
    figure = _figure(CURVES_SIZE)
    count = len(groups)
    for i, (group, keys) in enumerate(sorted(groups.items(), key=lambda g: g[0] != "train")):
        axes = figure.add_subplot(1, count, i + 1)
        for key in keys:
            epochs = sorted(log[key])
            axes.plot(epochs, [log[key][e] for e in epochs], marker="o", ms=3, label=key)
        axes.set_xlabel("epoch")
        axes.set_title(group)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        axes.xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle(title or "training curves")
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.12, top=0.85, wspace=0.25)
    return figure
