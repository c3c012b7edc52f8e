"""Run folders written before DAAL v2 (no ``thickness_version``) keep loading: evaluate, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from daalml.cli import app
from tests.data.builders import make_folder
from tests.runs import tiny_run_config

runner = CliRunner()


def _as_before_v2(path: Path) -> None:
    """Rewrite a checkpoint as daalml wrote it before DAAL v2: no thickness marker."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint["state_dict"]
    assert state.pop("loss.loss.thickness_version") == 2
    torch.save(checkpoint, path)


def test_old_run_folder_evaluates_and_resumes(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", n_classes=12, per_class=4, size=40)
    config = tmp_path / "config.yaml"
    run_config = tiny_run_config(root, tmp_path / "cache", train={"scheduler": "none"})
    config.write_text(yaml.safe_dump(run_config))
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(config), "--output", str(run)])
    assert result.exit_code == 0, result.output
    last = run / "checkpoints" / "last.ckpt"
    _as_before_v2(last)

    with pytest.warns(UserWarning, match=r"written before DAAL v2.*v1 sigma_perp.*reset"):
        result = runner.invoke(app, ["evaluate", str(last), "--output", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    trained = json.loads((run / "metrics.json").read_text())
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert again["recall@1"] == pytest.approx(trained["recall@1"], abs=1e-6)

    with pytest.warns(UserWarning, match="written before DAAL v2"):
        result = runner.invoke(
            app, ["train", str(config), "--output", str(run), "--set", "train.epochs=2", "--resume"]
        )
    assert result.exit_code == 0, result.output
    resumed = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    assert int(resumed["loss.loss.thickness_version"]) == 2
    assert bool(resumed["loss.loss.seen"].any())  # re-measured by the resumed epoch
