"""`evaluate(checkpoint)`: a trained checkpoint re-scored on its config's test split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daalml.engine.checkpoint import load_module
from daalml.engine.data import prepare_data, retrieval_exclusions
from daalml.engine.inference import model_metrics
from daalml.engine.run_record import write_json
from daalml.workflows.train import METRICS_FILE


def evaluate(
    checkpoint_path: str | Path,
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Re-evaluate a checkpoint on its config's test split; write metrics.json when asked."""
    module, cfg = load_module(checkpoint_path, overrides)
    data = prepare_data(cfg, module.model.backbone)
    module.features = data.features  # cached features of the same frozen backbone, when enabled
    excluded = retrieval_exclusions(data, cfg)
    results: dict[str, Any] = dict(model_metrics(module, data, cfg))
    results["skipped_images"] = len(data.skipped_images)
    results["excluded_queries"] = excluded
    if output_dir is not None:
        output = Path(output_dir)
        output.mkdir(parents=True, exist_ok=True)
        write_json(output / METRICS_FILE, results)
    return results
