"""The picture functions on small synthetic arrays: sizes, legends, projections, log parsing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from daalml.data.glyphs import GlyphSplit, GlyphTensorDataset
from daalml.errors import DaalmlError
from daalml.viz.plots import (
    MAX_LEGEND,
    GridRow,
    class_colours,
    embedding_map,
    margins_view,
    project_2d,
    read_epoch_log,
    retrieval_grid,
    save_figure,
    segments_view,
    training_curves,
)
from daalml.workflows.run_dir import class_names_of, images_of


def _blobs(n_classes: int, per_class: int = 5, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim)) * 5
    labels = np.repeat(np.arange(n_classes), per_class)
    return centres[labels] + rng.standard_normal((len(labels), dim)) * 0.1, labels


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


@pytest.mark.parametrize("method", ["tsne", "pca"])
def test_projection_keeps_classes_apart(method: str) -> None:
    x, y = _blobs(4)
    points = project_2d(torch.from_numpy(x), method, seed=0)
    assert points.shape == (len(y), 2)
    centres = np.stack([points[y == c].mean(0) for c in range(4)])
    spread = max(np.linalg.norm(points[y == c] - centres[c], axis=1).max() for c in range(4))
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=2)[np.triu_indices(4, 1)]
    assert gaps.min() > spread
    assert np.array_equal(points, project_2d(x, method, seed=0))  # seeded


def test_projection_errors() -> None:
    with pytest.raises(DaalmlError, match="--method 'mds' is unknown"):
        project_2d(np.zeros((5, 2)), "mds")
    with pytest.raises(DaalmlError, match="at least 4 embeddings"):
        project_2d(np.zeros((3, 2)), "pca")


@pytest.mark.skipif(importlib.util.find_spec("umap") is not None, reason="umap-learn installed")
def test_umap_missing_is_a_clear_error() -> None:
    with pytest.raises(DaalmlError, match="pip install umap-learn"):
        project_2d(np.random.default_rng(0).standard_normal((10, 3)), "umap")


def test_map_legend_for_few_classes_labels_for_many(tmp_path: Path) -> None:
    x, y = _blobs(6)
    few = embedding_map(x[:, :2], y, [f"bird {c}" for c in range(6)])
    legend = few.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [f"bird {c}" for c in range(6)]
    assert _size(save_figure(few, tmp_path / "few.png")) == (1000, 800)
    x, y = _blobs(120, per_class=2)
    many = embedding_map(x[:, :2], y)
    axes = many.axes[0]
    assert axes.get_legend() is None
    assert len(axes.texts) == 120  # one label per class at its median
    assert len(class_colours(120)) == 120
    assert len({tuple(c) for c in np.round(class_colours(MAX_LEGEND), 3)}) == MAX_LEGEND
    assert _size(save_figure(many, tmp_path / "many.png")) == (1000, 800)
    with pytest.raises(DaalmlError, match="do not match"):
        embedding_map(x[:5, :2], y)


def test_segments_view_draws_each_segment(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vertices = rng.standard_normal((4, 2, 6))
    labels = np.array([0, 0, 1, 1, 2, 2])
    embeddings = vertices[labels, 0] + 0.05 * rng.standard_normal((6, 6))
    figure = segments_view(embeddings, labels, vertices, ["a", "b", "c", "d"])
    axes = figure.axes[0]
    segment_lines = [line for line in axes.lines if line.get_linewidth() == 3]
    assert len(segment_lines) == 3  # classes 0-2 only: class 3 has no samples
    assert _size(save_figure(figure, tmp_path / "s.png")) == (1000, 800)
    point = segments_view(embeddings, labels, vertices, mode="point")
    assert not point.axes[0].lines
    with pytest.raises(DaalmlError, match="do not fit embeddings"):
        segments_view(embeddings, labels, vertices[:, :, :3])


def test_retrieval_grid_size_and_frames(tmp_path: Path) -> None:
    image = np.full((20, 30, 3), 200, dtype=np.uint8)
    rows = [
        GridRow(image, [image] * 3, [True, False, True], [0.9, 0.8, 0.7], "query: x"),
        GridRow(image, [image] * 3, [False, False, False], [0.5, 0.4, 0.3]),
    ]
    figure = retrieval_grid(rows)
    frames = [ax.spines["top"].get_edgecolor() for ax in figure.axes]
    reds = sum(1 for c in frames if c[0] > 0.8 and c[1] < 0.3)
    greens = sum(1 for c in frames if c[1] > 0.5 and c[0] < 0.3)
    assert (len(figure.axes), greens, reds) == (8, 2, 4)
    assert _size(save_figure(figure, tmp_path / "g.png")) == (560, 330)
    with pytest.raises(DaalmlError, match="no queries"):
        retrieval_grid([])


def test_epoch_log_takes_the_last_value_per_epoch(tmp_path: Path) -> None:
    log = tmp_path / "metrics.csv"
    log.write_text(
        "epoch,step,train/loss,val/recall@1,val/nmi\n"
        "0,1,,0.5,0.4\n0,1,3.0,,\n1,3,,0.75,0.6\n1,3,2.0,,\n1,3,1.5,,\n"
    )
    series = read_epoch_log(log)
    assert series == {
        "train/loss": {0: 3.0, 1: 1.5},
        "val/recall@1": {0: 0.5, 1: 0.75},
        "val/nmi": {0: 0.4, 1: 0.6},
    }
    figure = training_curves(series)
    assert [ax.get_title() for ax in figure.axes] == ["train", "val"]
    assert len(figure.axes[1].lines) == 2
    assert _size(save_figure(figure, tmp_path / "c.png")) == (1200, 450)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), ("step,loss\n1,2\n", "no 'epoch' column"), ("epoch,x\n", "no logged")],
)
def test_epoch_log_errors(tmp_path: Path, content: str | None, message: str) -> None:
    log = tmp_path / "metrics.csv"
    if content is not None:
        log.write_text(content)
    with pytest.raises(DaalmlError, match=message) as err:
        read_epoch_log(log)
    assert str(log) in str(err.value)


def test_glyph_datasets_give_images_and_names() -> None:
    images = torch.zeros(3, 1, 8, 8)
    images[1, 0, 2:6, 2:6] = 1.0
    split = GlyphSplit(images, torch.tensor([0, 1, 1]), ["f"] * 3, ["sans"] * 3, ["A", "B"])
    dataset = GlyphTensorDataset(split)
    image = images_of(dataset)(1)
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8
    assert image[3, 3].tolist() == [255, 255, 255] and image[0, 0].tolist() == [0, 0, 0]
    assert class_names_of(dataset) == ["A", "B"]
    subset = torch.utils.data.Subset(dataset, [2, 1])
    assert np.array_equal(images_of(subset)(1), image)


def test_margins_view_draws_never_seen_classes_apart() -> None:
    """Seen classes are the points and the blue bars; never-seen ones grey, counted apart."""
    from daalml.losses.daal import DAALLoss
    from daalml.workflows.visualize import margins_figure

    loss = DAALLoss(6, 4, kappa=1.0, delta=0.1, delta_max=0.5)
    loss.sigma_perp.copy_(torch.tensor([0.1, 0.2, 0.4, 0.8, 0.0, 0.0]))
    loss.seen.copy_(torch.tensor([True, True, True, True, False, False]))
    figure = margins_figure(loss)
    scatter, histogram = figure.axes
    seen_points, unseen_points = (c.get_offsets() for c in scatter.collections[:2])
    expected = loss.margins().double().numpy()
    assert np.allclose(seen_points, np.stack([[0.1, 0.2, 0.4, 0.8], expected[:4]], axis=1))
    assert len(unseen_points) == 0  # listed in the legend, not squashing the seen ones' scale
    legend = [t.get_text() for t in scatter.get_legend().get_texts()]
    assert legend[1] == "never seen (2): no thickness, margin = delta (not drawn)"
    assert scatter.get_ylim()[0] > 0.0 and scatter.get_xlim()[0] > 0.0  # fits the seen ones
    assert expected[0] > expected[1] > expected[2] > expected[3]  # tight -> larger margin
    seen_bars, unseen_bars = histogram.containers
    assert sum(b.get_height() for b in seen_bars) == 4
    assert sum(b.get_height() for b in unseen_bars) == 2
    labels = [t.get_text() for t in histogram.get_legend().get_texts()]
    assert labels == ["seen (4)", "never seen (2)"]
    assert "kappa = 1" in figure._suptitle.get_text()


def test_margins_view_equal_margins_and_errors(tmp_path: Path) -> None:
    figure = margins_view(
        [0.3, 0.5], [0.1, 0.1], [True, True], delta=0.1, delta_min=0.0, delta_max=0.3
    )
    assert _size(save_figure(figure, tmp_path / "m.png")) == (1200, 500)
    low, high = figure.axes[1].get_xlim()
    assert low < 0.1 < high and high - low < 0.1  # a visible bar around the one value
    nothing_seen = margins_view(
        [0.0, 0.0], [0.1, 0.1], [False, False], delta=0.1, delta_min=0.0, delta_max=0.3
    )
    assert np.allclose(nothing_seen.axes[0].collections[1].get_offsets(), [[0, 0.1], [0, 0.1]])
    with pytest.raises(DaalmlError, match="must be the same non-empty length"):
        margins_view([0.1], [0.1, 0.2], [True], delta=0.1, delta_min=0.0, delta_max=0.3)
