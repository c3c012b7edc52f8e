"""One self-contained HTML page per run: config, metrics table and every picture (base64 PNGs).

``write_report(run_dir)`` writes RUN_DIR/report.html; it needs no network and no files beside
it, so it can be mailed or attached as is. A picture that does not apply to the run (segments
and margins of a non-DAAL loss, curves without logs/metrics.csv) is replaced by a one-line note.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from daalml.errors import DaalmlError
from daalml.workflows.run_dir import Run, load_run
from daalml.workflows.visualize import (
    LOG_FILE,
    curves_figure,
    daal_loss,
    map_figure,
    margins_figure,
    retrieval_figure,
    segments_figure,
)

__all__ = ["REPORT_FILE", "figure_png", "metrics_table_html", "write_report"]

REPORT_FILE = "report.html"
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; border: 1px solid #eee; }
.note { color: #777; font-style: italic; }
"""


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes, at its own size."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    return buffer.getvalue()


def _img(figure: Figure, alt: str) -> str:
    data = base64.b64encode(figure_png(figure)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def metrics_table_html(metrics: dict[str, Any]) -> str:
    """The metrics.json of a run as a table: one row for the trained model, one for `pretrained`,
    one column per metric (in %); other entries listed below it."""
    rows = {"trained": {k: v for k, v in metrics.items() if isinstance(v, float)}}
    if isinstance(metrics.get("pretrained"), dict):
        rows["pretrained"] = metrics["pretrained"]
    keys = list(rows["trained"]) or [k for k, v in rows.get("pretrained", {}).items()]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = ""
    for name, values in rows.items():
        cells = "".join(
            f"<td>{100 * values[k]:.2f}</td>" if isinstance(values.get(k), float) else "<td></td>"
            for k in keys
        )
        body += f"<tr><td>{html.escape(name)}</td>{cells}</tr>"
    other = {k: v for k, v in metrics.items() if k != "pretrained" and not isinstance(v, float)}
    extra = "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in other.items())
    return f"<table><tr><th>model (%)</th>{head}</tr>{body}</table>" + (
        f"<ul>{extra}</ul>" if extra else ""
    )


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise DaalmlError(f"cannot read {path}: {err}") from err


def _metrics_section(run_dir: Path) -> str:
    text = _read_text(run_dir / "metrics.json")
    if text is None:
        return _note("no metrics.json: the run did not finish its test evaluation")
    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as err:
        raise DaalmlError(f"{run_dir / 'metrics.json'}: not valid JSON ({err})") from err
    return metrics_table_html(metrics)


def _pictures(run: Run, method: str, n_queries: int, k: int) -> list[tuple[str, str]]:
    sections = [(f"Test embeddings ({method})", _img(map_figure(run, method), "embedding map"))]
    loss = daal_loss(run)
    if loss is not None:
        sections.append(("DAAL class segments", _img(segments_figure(run), "DAAL segments")))
        margins = margins_figure(loss, name=run.cfg.loss.name)
        sections.append(("DAAL margins and class thickness", _img(margins, "DAAL margins")))
    else:
        name = run.cfg.loss.name
        sections.append(("Class segments", _note(f"loss {name!r} has no segments")))
        sections.append(
            (
                "Margins and class thickness",
                _note(f"loss {name!r} is not DAAL: it has no class thickness or adaptive margins"),
            )
        )
    grid = retrieval_figure(run, n_queries=n_queries, k=k)
    sections.append(("Retrieval examples", _img(grid, "retrieval grid")))
    if (run.directory / LOG_FILE).is_file():
        sections.append(("Training curves", _img(curves_figure(run.directory), "curves")))
    else:
        sections.append(("Training curves", _note(f"no {LOG_FILE} in this run")))
    return sections


def write_report(
    run_dir: str | Path,
    *,
    method: str = "tsne",
    output: str | Path | None = None,
    n_queries: int = 6,
    k: int = 5,
) -> Path:
    """Write the run's HTML report (default RUN_DIR/report.html); returns its path."""
    root = Path(run_dir)
    run = load_run(root)
    pictures = _pictures(run, method, n_queries, k)
    config = _read_text(root / "config.yaml") or json.dumps(run.cfg.to_dict(), indent=2)
    info = _read_text(root / "run.json")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>daalml report: {html.escape(root.name)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>daalml run <code>{html.escape(root.name)}</code></h1>",
        f"<p>{html.escape(str(root.resolve()))}<br>model: "
        f"{html.escape(str(run.checkpoint.relative_to(root)))}, "
        f"loss {html.escape(run.cfg.loss.name)}, backbone {html.escape(run.cfg.model.backbone)}, "
        f"dataset {html.escape(run.cfg.data.dataset)}; written {stamp}</p>",
        "<h2>Test metrics</h2>",
        _metrics_section(root),
    ]
    for title, body in pictures:
        parts += [f"<h2>{html.escape(title)}</h2>", body]
    parts += ["<h2>Config</h2>", f"<pre>{html.escape(config)}</pre>"]
    if info is not None:
        parts += ["<h2>Run</h2>", f"<pre>{html.escape(info)}</pre>"]
    parts.append("</body></html>")
    path = Path(output) if output is not None else root / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
