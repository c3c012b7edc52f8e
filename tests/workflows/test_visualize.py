"""`daalml visualize` and `daalml report` on the session's tiny trained run."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daalml.workflows.run_dir import Run, load_run
from daalml.workflows.visualize import retrieval_rows
from tests.cli import invoke_fails, invoke_ok
from tests.workflows.conftest import PALETTE, PER_CLASS, train_run

TEST_CLASSES = len(PALETTE) // 2


def _chromium() -> str | None:
    found = shutil.which("chromium")
    return found or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
        return image.size


@pytest.fixture
def run_copy(tmp_path: Path, daal_run: Path) -> Path:
    """A private copy of the trained run, for commands that write into RUN_DIR."""
    return Path(shutil.copytree(daal_run, tmp_path / "run"))


@pytest.fixture(scope="module")
def loaded(daal_run: Path) -> Run:
    return load_run(daal_run)


@pytest.mark.parametrize(
    ("args", "size"),
    [
        (["--method", "tsne"], (1000, 800)),
        (["--method", "pca"], (1000, 800)),
        (["--kind", "segments"], (1000, 800)),
        (["--kind", "margins"], (1200, 500)),
        # 6 test classes -> 6 query rows of 1 + 5 thumbnails, 1.4 in each (+0.5 in title)
        (["--kind", "retrieval"], (840, 890)),
        (["--kind", "curves"], (1200, 450)),
    ],
)
def test_visualize_writes_pictures(
    tmp_path: Path, daal_run: Path, args: list[str], size: tuple[int, int]
) -> None:
    out = tmp_path / "picture.png"
    printed = invoke_ok("visualize", str(daal_run), *args, "--output", str(out))
    assert printed.strip().splitlines()[-1] == str(out)  # after the engine's progress bars
    assert _size(out) == size


def test_visualize_default_output_and_checkpoint_choice(run_copy: Path) -> None:
    invoke_ok("visualize", str(run_copy), "--method", "pca")
    assert _size(run_copy / "pca.png") == (1000, 800)
    (run_copy / "checkpoints" / "best.ckpt").unlink()  # falls back to last.ckpt
    invoke_ok("visualize", str(run_copy), "--kind", "segments")
    assert (run_copy / "segments.png").is_file()
    (run_copy / "checkpoints" / "last.ckpt").unlink()
    assert "no checkpoints/best.ckpt or checkpoints/last.ckpt" in invoke_fails(
        "visualize", str(run_copy)
    )


def test_map_covers_the_unseen_test_classes(loaded: Run) -> None:
    from daalml.workflows.visualize import map_figure

    legend = map_figure(loaded, "pca").axes[0].get_legend()
    names = [t.get_text() for t in legend.get_texts()]
    assert names == [f"class_{c:02d}" for c in range(TEST_CLASSES, len(PALETTE))]


def test_retrieval_rows_mark_correct_results(loaded: Run) -> None:
    rows = retrieval_rows(loaded, n_queries=4, k=PER_CLASS + 1)
    assert len(rows) == 4
    for row in rows:
        # leave-one-out: the other 3 images of the class first, then other classes
        assert row.correct == [True] * (PER_CLASS - 1) + [False] * 2
        assert row.scores == sorted(row.scores, reverse=True)
        assert row.query.shape == (40, 40, 3)
        assert row.caption.startswith("query: class_")


def test_visualize_errors(tmp_path: Path, daal_run: Path) -> None:
    assert "no such directory" in invoke_fails("visualize", str(tmp_path / "nowhere"))
    assert "--kind 'tsne' is unknown" in invoke_fails("visualize", str(daal_run), "--kind", "tsne")
    assert "--method 'mds' is unknown" in invoke_fails(
        "visualize", str(daal_run), "--method", "mds"
    )
    out = tmp_path / "c.png"
    assert "logs/metrics.csv: no such file" in invoke_fails(
        "visualize", str(tmp_path), "--kind", "curves", "--output", str(out)
    )


def _embedded_pngs(page: str) -> list[tuple[int, int]]:
    sizes = []
    for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page):
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            sizes.append(image.size)
    return sizes


def test_report_is_one_self_contained_page(run_copy: Path) -> None:
    printed = invoke_ok("report", str(run_copy), "--method", "pca")
    path = run_copy / "report.html"
    assert printed.strip().splitlines()[-1] == str(path)
    page = path.read_text(encoding="utf-8")
    assert page.count("<img ") == 5  # map, segments, margins, retrieval grid, curves
    sizes = [(1000, 800), (1000, 800), (1200, 500), (840, 890), (1200, 450)]
    assert _embedded_pngs(page) == sizes
    assert "DAAL margins and class thickness" in page
    assert "<td>pretrained</td>" in page and "<td>trained</td>" in page
    assert "recall@1" in page and "selected_epoch" in page
    assert "backbone: small_cnn" in page  # the config, as YAML
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from elsewhere


@pytest.mark.filterwarnings("ignore:Total length of .list. across ranks is zero")
def test_report_of_a_non_daal_run(tmp_path: Path, colour_data: Path) -> None:
    run = train_run(
        tmp_path, colour_data, loss={"name": "proxy_anchor"}, train={"epochs": 1, "val_classes": 0}
    )
    assert "has no class segments" in invoke_fails("visualize", str(run), "--kind", "segments")
    message = invoke_fails("visualize", str(run), "--kind", "margins")
    assert "loss 'proxy_anchor' is not DAAL, it has no class thickness" in message
    assert len(message.strip().splitlines()) == 1
    (run / "logs" / "metrics.csv").unlink()
    invoke_ok("report", str(run), "--method", "pca")
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "loss &#x27;proxy_anchor&#x27; has no segments" in page
    assert "no logs/metrics.csv in this run" in page
    assert "loss &#x27;proxy_anchor&#x27; is not DAAL: it has no class thickness" in page
    assert page.count("<img ") == 2


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(tmp_path: Path, run_copy: Path) -> None:
    invoke_ok("report", str(run_copy))
    shot = tmp_path / "shot.png"
    command = [
        str(_chromium()),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,3000",
        (run_copy / "report.html").resolve().as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    with Image.open(shot) as image:
        assert image.size == (1200, 3000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text and pictures, not a blank page


def test_margins_figure_shows_the_checkpointed_statistics(daal_run: Path) -> None:
    """The plotted points are the checkpoint's sigma_perp and the loss's margins(), per class."""
    from daalml.engine.checkpoint import load_checkpoint, load_module
    from daalml.workflows.visualize import checkpoint_margins_figure, margin_data

    path = daal_run / "checkpoints" / "best.ckpt"
    state = load_checkpoint(path)["state_dict"]
    loss = load_module(path)[0].loss.loss
    data = margin_data(loss)
    assert np.array_equal(data.sigma_perp, state["loss.loss.sigma_perp"].double().numpy())
    assert np.array_equal(data.seen, state["loss.loss.seen"].numpy())
    assert np.array_equal(data.margins, loss.margins().double().numpy())
    assert data.seen.all() and (data.sigma_perp > 0).all()  # every class trained: all drawn
    assert len(set(data.margins.round(12).tolist())) > 1  # kappa=0.5: margins differ

    figure = checkpoint_margins_figure(daal_run)
    scatter, histogram = figure.axes
    points = scatter.collections[0].get_offsets()
    assert np.allclose(points[:, 0], data.sigma_perp) and np.allclose(points[:, 1], data.margins)
    seen_bars, unseen_bars = histogram.containers
    assert sum(bar.get_height() for bar in seen_bars) == len(data.margins)
    assert sum(bar.get_height() for bar in unseen_bars) == 0
    title = figure._suptitle.get_text()
    assert f"thickness statistic '{data.thickness}'" in title and "kappa = 0.5" in title
    assert scatter.get_xlabel().startswith("thickness sigma_perp")
    assert scatter.get_ylabel() == histogram.get_xlabel() == "margin delta_c"
    assert histogram.get_ylabel() == "classes"
