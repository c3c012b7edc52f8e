"""`daalml benchmark`: every loss on the same data, model, sampler, optimiser and budget, with seeds.

An entry of ``--losses`` is a registry name (``daal``) or a variant of one with its own loss
parameters on top of the registry preset (``daal@kappa=1.0@delta_max=0.5``, values read as YAML
scalars). Each (entry, seed) is an ordinary `daalml train` run in DIR/runs/<entry>/seed<k>;
finished runs are reused on a rerun and interrupted ones resume from their last checkpoint, if
they were started with the same config (:func:`check_same_run`; else a one-line error). The
table is written as results.csv (one row per run, plus the `pretrained` backbone's own row per
seed, as "A Metric Learning Reality Check" reports it) and results.md (mean +- std per entry),
with a bar chart.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from daalml.config import Config, _yaml_load, config_differences, config_from_dict, load_config
from daalml.errors import DaalmlError
from daalml.losses.registry import build_loss, loss_defaults, loss_names

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRIC_COLUMNS = ("recall@1", "recall@2", "recall@4", "recall@8", "nmi", "map@r", "r_precision")
TABLE_COLUMNS = ("recall@1", "recall@2", "recall@4", "recall@8", "nmi", "map@r")
PRETRAINED = "pretrained"
# the validation classes' figures at the selected epoch (metrics.json "validation"): choose a
# setting on these, never on the test columns
VALIDATION_KEYS = ("recall@1", "map@r", "nmi")
VALIDATION_COLUMNS = tuple(f"val_{key}" for key in VALIDATION_KEYS)
ENTRY_SEPARATOR = "@"
_PATH_CHARACTERS = ("/", "\\")


def parse_losses(text: str) -> list[str]:
    """`daal,proxy_anchor,daal@kappa=1.0` -> entries, each checked (`all` = every registry name)."""
    if text.strip() == "all":
        return loss_names()
    entries = [n.strip() for n in text.split(",") if n.strip()]
    if not entries:
        raise DaalmlError("--losses: name at least one loss")
    check_entries(entries)
    return entries


def parse_entry(entry: str) -> tuple[str, dict[str, Any]]:
    """`daal@kappa=1.0@segment=line` -> ("daal", {"kappa": 1.0, "segment": "line"}).

    Only the syntax is checked here; :func:`check_entries` checks names, keys and values.
    """
    name, *assignments = entry.split(ENTRY_SEPARATOR)
    params: dict[str, Any] = {}
    for assignment in assignments:
        key, equals, text = assignment.partition("=")
        key = key.strip()
        if not equals or not key:
            raise DaalmlError(
                f"--losses entry {entry!r}: {assignment!r} is not key=value "
                "(write NAME@key=value[@key=value...], e.g. daal@kappa=1.0)"
            )
        if key in params:
            raise DaalmlError(f"--losses entry {entry!r}: parameter {key!r} is given twice")
        try:
            value = _yaml_load(text)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise DaalmlError(
                f"--losses entry {entry!r}: {key}={text!r} is not a YAML value: {problem}"
            ) from None
        if not isinstance(value, (bool, int, float, str)):
            raise DaalmlError(
                f"--losses entry {entry!r}: {key}={text!r} must be a number, true/false or a "
                f"word, got {type(value).__name__}"
            )
        params[key] = value
    return name.strip(), params


def check_entries(entries: Sequence[str]) -> None:
    """Every entry names a registry loss with valid parameters (built once, tiny, to check).

    Raises a one-line :class:`DaalmlError` naming the entry (and the valid names or keys), so
    that a typo stops the benchmark before any training starts.
    """
    seen: set[str] = set()
    for entry in entries:
        if entry in seen:
            raise DaalmlError(f"--losses: entry {entry!r} is given twice")
        seen.add(entry)
        if any(bad in entry for bad in _PATH_CHARACTERS):
            raise DaalmlError(
                f"--losses entry {entry!r}: no '/' or '\\' (the entry names its run folder)"
            )
        name, params = parse_entry(entry)
        if name not in loss_names():
            where = "--losses:" if not params else f"--losses entry {entry!r}:"
            raise DaalmlError(f"{where} unknown loss {name!r}; valid: {', '.join(loss_names())}")
        try:
            build_loss(name, 2, 2, params)
        except DaalmlError as err:
            message = str(err)
            if "valid:" not in message and "fixed to" not in message:  # a value, not a key
                message += f" (valid keys: {', '.join(loss_defaults(name))})"
            raise DaalmlError(f"--losses entry {entry!r}: {message}") from None


def run_config(base: Config, loss: str, seed: int) -> Config:
    """The base config with one loss entry (registry preset plus its own params) and one seed."""
    name, params = parse_entry(loss)
    d = base.to_dict()
    d["loss"] = {"name": name, "lr_multiplier": base.loss.lr_multiplier, "params": params}
    d["train"]["seed"] = seed
    return config_from_dict(d, source=f"benchmark {loss} seed {seed}")


def run_benchmark(
    base: Config,
    losses: Sequence[str],
    seeds: int,
    output: str | Path,
    *,
    train_fn: Callable[..., dict[str, Any]] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train every (loss, seed) not already finished; write results.csv, results.md, results.png."""
    if seeds < 1:
        raise DaalmlError(f"--seeds must be at least 1, got {seeds}")
    if base.loss.params:
        warnings.warn(
            "benchmark: ignoring loss parameters of the config "
            f"({', '.join(base.loss.params)}); every loss runs at its registry defaults "
            "(give parameters per entry: --losses daal@kappa=1.0)",
            stacklevel=2,
        )
    check_entries(losses)
    if train_fn is None:
        from daalml.workflows.train import train as train_fn
    out = Path(output)
    rows: list[dict[str, Any]] = []
    pretrained_by_seed: dict[int, dict[str, float]] = {}
    for seed in range(seeds):
        for loss in losses:
            run_dir = out / "runs" / loss / f"seed{seed}"
            cfg = run_config(base, loss, seed)
            check_same_run(run_dir, cfg)
            metrics = _finished(run_dir)
            if metrics is None:  # new, or interrupted: continue from its last checkpoint
                resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
                metrics = train_fn(cfg, run_dir, resume=resume, progress=progress)
            rows.append({"loss": loss, "seed": seed, **_columns(metrics)})
            pretrained_by_seed.setdefault(seed, metrics[PRETRAINED])
    for seed, metrics in sorted(pretrained_by_seed.items()):
        rows.append({"loss": PRETRAINED, "seed": seed, **{k: metrics[k] for k in METRIC_COLUMNS}})
    write_results(rows, out)
    return rows


RESULT_NEUTRAL_KEYS = ("data.root", "data.num_workers", "data.strict", "train.cache_dir")
"""Config keys a run already in DIR/runs may differ in and still be reused or resumed: where
the data and the caches lie and how they are read, not what is trained."""


def check_same_run(run_dir: Path, cfg: Config) -> None:
    """Raise unless the run in ``run_dir`` (if any) was started with ``cfg``, so that a table
    never mixes runs of two protocols (say, an older ``--set train.epochs``)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    try:
        saved = load_config(path).to_dict()
    except DaalmlError as exc:
        raise DaalmlError(f"benchmark: {path} cannot be read back: {exc}") from None
    differ = [
        f"{key} is {then!r} there, {now!r} now"
        for key, then, now in config_differences(saved, cfg.to_dict())
        if key not in RESULT_NEUTRAL_KEYS
    ]
    if differ:
        more = f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""
        raise DaalmlError(
            f"benchmark: {run_dir} was started with another config: {differ[0]}{more}; "
            f"give another --output, or delete {run_dir} to train it again"
        )


def _columns(metrics: dict[str, Any]) -> dict[str, Any]:
    """A run's test metrics, and its validation figures where it had a validation split."""
    validation = metrics.get("validation") or {}
    row = {key: metrics[key] for key in METRIC_COLUMNS}
    for key, column in zip(VALIDATION_KEYS, VALIDATION_COLUMNS, strict=True):
        row[column] = validation.get(key, "")
    return row


def _finished(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    needed = set(METRIC_COLUMNS) | {PRETRAINED}
    return metrics if needed <= set(metrics) else None


def summarise(
    rows: Sequence[dict[str, Any]], columns: Sequence[str] = METRIC_COLUMNS
) -> dict[str, dict[str, tuple[float, float]]]:
    """loss -> metric -> (mean, std) over seeds (std 0 for a single seed).

    Rows without a value in ``columns`` (e.g. no validation split) are left out of the summary.
    """
    by_loss: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if all(row.get(key, "") != "" for key in columns):
            by_loss.setdefault(row["loss"], []).append(row)
    summary = {}
    for loss, group in by_loss.items():
        summary[loss] = {}
        for key in columns:
            values = [float(r[key]) for r in group]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[loss][key] = (statistics.fmean(values), std)
    return summary


def markdown_table(
    summary: dict[str, dict[str, tuple[float, float]]],
    seeds: int,
    columns: Sequence[str] = TABLE_COLUMNS,
) -> str:
    """Mean +- std (in %) per loss, sorted by the first column, the best of each in bold."""
    lines = _table_rows(summary, columns)
    lines.append("")
    lines.append(
        f"Mean ± standard deviation over {seeds} seed(s), in %. `pretrained`: the backbone's"
    )
    lines.append("own features before any training.")
    return "\n".join(lines) + "\n"


def validation_table(summary: dict[str, dict[str, tuple[float, float]]], seeds: int) -> str:
    """The validation classes' figures at each run's selected epoch (where settings are chosen)."""
    lines = [
        "",
        "Validation classes (held-out training classes, at the selected epoch): choose settings",
        "on these columns, never on the test columns above.",
        "",
        *_table_rows(summary, VALIDATION_COLUMNS),
        "",
        f"Mean ± standard deviation over {seeds} seed(s), in %.",
    ]
    return "\n".join(lines) + "\n"


def _table_rows(
    summary: dict[str, dict[str, tuple[float, float]]], columns: Sequence[str]
) -> list[str]:
    order = sorted(summary, key=lambda loss: -summary[loss][columns[0]][0])
    best = {key: max(summary[loss][key][0] for loss in order) for key in columns}
    header = "| loss | " + " | ".join(columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    for loss in order:
        cells = []
        for key in columns:
            mean, std = summary[loss][key]
            cell = f"{100 * mean:.2f} ± {100 * std:.2f}"
            cells.append(f"**{cell}**" if math.isclose(mean, best[key]) else cell)
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    return lines


def write_results(rows: Sequence[dict[str, Any]], output: Path) -> None:
    """results.csv, results.md and results.png in ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    with (output / "results.csv").open("w", newline="") as handle:
        fields = ["loss", "seed", *METRIC_COLUMNS, *VALIDATION_COLUMNS]
        writer = csv.DictWriter(handle, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows)
    seeds = len({row["seed"] for row in rows})
    text = markdown_table(summary, seeds)
    validation = summarise(rows, VALIDATION_COLUMNS)
    if validation:
        text += validation_table(validation, seeds)
    (output / "results.md").write_text(text)
    _bar_chart(summary, output / "results.png")


def _bar_chart(summary: dict[str, dict[str, tuple[float, float]]], path: Path) -> None:
    figure = bar_chart(summary)
    if figure is not None:
        figure.savefig(path, dpi=90)


def bar_chart(summary: dict[str, dict[str, tuple[float, float]]]) -> Figure | None:
    """Recall@1 and MAP@R (mean, std bars) per entry, by recall@1; None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:  # the chart is optional: the viz extra brings matplotlib
        return None
    order = sorted(summary, key=lambda loss: -summary[loss]["recall@1"][0])
    fig = Figure(figsize=(max(8, 0.7 * len(order) + 4), 4.5))
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ("recall@1", "map@r"), strict=True):
        means = [100 * summary[loss][key][0] for loss in order]
        stds = [100 * summary[loss][key][1] for loss in order]
        colours = ["tab:red" if loss.startswith("daal") else "tab:grey" for loss in order]
        colours = [
            "tab:blue" if loss == PRETRAINED else c for loss, c in zip(order, colours, strict=True)
        ]
        ax.bar(range(len(order)), means, yerr=stds, capsize=3, color=colours)
        ax.set_xticks(range(len(order)), order, rotation=60, ha="right")
        ax.set_ylabel(f"{key} (%)")
        low = min(m - s for m, s in zip(means, stds, strict=True))
        ax.set_ylim(max(0, low - 5), min(100, max(means) + 5))
    fig.tight_layout()
    return fig
