"""Reliability: bad input gets one clear line and exit code 2, no work is lost, runs reproduce."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner, Result

from daalml.cli import app
from daalml.engine import checkpoint as checkpoint_module
from daalml.engine.checkpoint import (
    AtomicCheckpointIO,
    StampCheckpoint,
    load_checkpoint,
    remove_stale_temporaries,
    resume_point,
)
from daalml.engine.loaders import ResumableLoader, SeededBatches, SeededItems
from daalml.engine.module import PROGRESS_KEY, EmbeddingModule, NonFiniteLossError
from daalml.errors import DaalmlError
from daalml.losses.daal import DAALLoss
from daalml.losses.registry import MetricLoss
from daalml.metrics import retrieval_metrics
from tests.data.builders import make_cub, write_image
from tests.workflows.test_train import _config

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
CLI = "from daalml.cli import main; main()"  # the `daalml` script, whatever the venv's bin
STEPS_PER_EPOCH = 3  # _config: 6 train classes x 4 images, batches of 8


def _cli(*args: str) -> Result:
    return runner.invoke(app, list(args), catch_exceptions=False)


def _train(config: Path, run: Path, *args: str) -> Result:
    return _cli("train", str(config), "--output", str(run), *args)


def _error_line(result: Result) -> str:
    """The one line the CLI printed for a user error (exit code 2, no traceback)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _write_config(tmp: Path, data: dict) -> Path:
    """_config's tiny run, with ``data`` replacing its dataset section entries."""
    path = _config(tmp)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"].update(data)
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------------------- bad input
def test_missing_dataset_root(tmp_path: Path) -> None:
    config = _config(tmp_path)
    missing = tmp_path / "no" / "such" / "dataset"
    line = _error_line(_train(config, tmp_path / "r", "--set", f"data.root={missing}"))
    assert f"dataset root does not exist: {missing}" in line


def test_layout_file_missing(tmp_path: Path) -> None:
    root = make_cub(tmp_path / "cub", n_classes=4, per_class=3)
    (root / "image_class_labels.txt").unlink()
    config = _write_config(tmp_path, {"dataset": "cub200", "root": str(root)})
    line = _error_line(_train(config, tmp_path / "r"))
    assert f"CUB-200-2011 layout expected at {root}: missing image_class_labels.txt" in line


@pytest.mark.parametrize(
    ("file", "bad_line", "message"),
    [
        ("images.txt", "2 a/b.jpg extra", r"images\.txt line 2: expected 2 columns, got 3"),
        ("image_class_labels.txt", "2 two", r"image_class_labels\.txt line 2: class id 'two'"),
        ("images.txt", "x 002.Bird_2/a.jpg", r"images\.txt line 2: image id 'x' is not an int"),
        ("images.txt", "2 001.Bird_1/absent.jpg", r"images\.txt line 2: listed image not found"),
    ],
)
def test_malformed_annotation_lines(tmp_path: Path, file: str, bad_line: str, message: str) -> None:
    root = make_cub(tmp_path / "cub", n_classes=4, per_class=3)
    lines = (root / file).read_text().splitlines()
    lines[1] = bad_line
    (root / file).write_text("\n".join(lines) + "\n")
    config = _write_config(tmp_path, {"dataset": "cub200", "root": str(root)})
    line = _error_line(_train(config, tmp_path / "r"))
    assert re.search(message, line), line
    assert str(root / file) in line


def _truncate(path: Path) -> Path:
    """Replace ``path`` by the first half of a noisy JPEG: it decodes as truncated."""
    from PIL import Image

    Image.effect_noise((40, 40), 60).convert("RGB").save(path, format="JPEG", quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_unreadable_image_skipped_and_counted(tmp_path: Path) -> None:
    config = _config(tmp_path)
    broken = [
        _truncate(tmp_path / "ds" / "class_00" / "img_001.png"),  # train
        _truncate(tmp_path / "ds" / "class_09" / "img_002.jpg"),  # test
    ]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = _train(config, tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert _metrics(tmp_path / "r")["skipped_images"] == 2
    texts = [str(w.message) for w in record]
    for path in broken:
        assert any(text.startswith(f"skipping unreadable image {path}: ") for text in texts)
    summary = [text for text in texts if "2 unreadable images were skipped" in text]
    assert len(summary) == 1 and "data.strict: true" in summary[0]


def test_unreadable_image_is_an_error_when_strict(tmp_path: Path) -> None:
    config = _config(tmp_path)
    broken = _truncate(tmp_path / "ds" / "class_00" / "img_001.png")
    line = _error_line(_train(config, tmp_path / "r", "--set", "data.strict=true"))
    assert f"cannot read image {broken}" in line
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_single_image_test_class_is_excluded_and_counted(tmp_path: Path) -> None:
    config = _config(tmp_path)
    for name in ("img_001.png", "img_002.jpg", "img_003.png"):
        (tmp_path / "ds" / "class_11" / name).unlink()  # a test class left with one image
    with pytest.warns(UserWarning, match=r"1 of 21 images of the test split are alone"):
        result = _train(config, tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert _metrics(tmp_path / "r")["excluded_queries"] == 1


def test_test_split_without_any_query_is_an_error_before_training(tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    for c in range(4):
        for j in range(4 if c < 2 else 1):  # two train classes, two single-image test classes
            write_image(root / f"class_{c}" / f"img_{j}.png", 40, c * 10 + j)
    config = _write_config(tmp_path, {"root": str(root)})
    line = _error_line(_train(config, tmp_path / "r", "--set", "train.batch_size=4"))
    assert f"at {root}: no image of the test split has another image of its class" in line
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_unknown_config_key_lists_valid_keys(tmp_path: Path) -> None:
    config = _config(tmp_path)
    text = config.read_text().replace("epochs: 1", "epochz: 1")
    config.write_text(text)
    line = _error_line(_train(config, tmp_path / "r"))
    assert f"{config}: unknown key 'train.epochz' (did you mean 'train.epochs'?)" in line
    assert "valid keys in 'train': " in line and "batch_size" in line


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=ten", "train.epochs: expected int, got 'ten'"),
        ("data.strict=maybe", "data.strict: expected bool, got 'maybe'"),
        ("eval.ks=3", "eval.ks: expected list of int, got 3"),
    ],
)
def test_wrong_value_type_names_expected_type(tmp_path: Path, override: str, message: str) -> None:
    line = _error_line(_train(_config(tmp_path), tmp_path / "r", "--set", override))
    assert message in line


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished 1-epoch run, shared by the checkpoint tests (read-only)."""
    tmp = tmp_path_factory.mktemp("trained")
    result = _train(_config(tmp), tmp / "run")
    assert result.exit_code == 0, result.output
    return tmp / "run"


def test_foreign_truncated_and_future_checkpoints(tmp_path: Path, trained: Path) -> None:
    last = trained / "checkpoints" / "last.ckpt"
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "epoch": 3}, foreign)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[:2000])
    future = tmp_path / "future.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    state["daalml"]["format"] = 99
    torch.save(state, future)
    expected = {
        foreign: f"checkpoint {foreign}: not a daalml checkpoint",
        truncated: f"checkpoint {truncated}: not a readable PyTorch checkpoint",
        future: f"checkpoint {future}: format 99 (written by daalml",
        tmp_path / "absent.ckpt": f"checkpoint {tmp_path / 'absent.ckpt'}: no such file",
    }
    for path, message in expected.items():
        assert message in _error_line(_cli("evaluate", str(path)))


def test_resume_refuses_a_bad_or_mismatched_checkpoint(tmp_path: Path, trained: Path) -> None:
    config = _config(tmp_path)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(b"\x00" * 64)
    line = _error_line(_train(config, run, "--resume"))
    assert f"checkpoint {last}: not a readable PyTorch checkpoint" in line
    last.write_bytes((trained / "checkpoints" / "last.ckpt").read_bytes())
    line = _error_line(_train(config, run, "--resume", "--set", "model.embedding_size=32"))
    assert f"cannot resume from {last}: model.embedding_size is 32 here but 16 in it" in line
    assert not (run / "config.yaml").exists()  # nothing of the run was overwritten
    for image in (tmp_path / "ds" / "class_05").iterdir():  # a training class less
        image.unlink()
    (tmp_path / "ds" / "class_05").rmdir()
    line = _error_line(_train(config, run, "--resume"))
    assert f"checkpoint {last} does not fit the model of this config: " in line
    assert re.search(r"it has loss\.loss\.\w+ of shape \(6,.*\), the model \(5,", line), line


def test_python_api_checks_sizes_and_labels() -> None:
    loss = DAALLoss(num_classes=4, embedding_size=8)
    with pytest.raises(ValueError, match=r"labels must have shape \(6,\) to match 6 .*got \(5,\)"):
        loss(torch.randn(6, 8), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"label 7 is outside \[0, 4\) .* 4 classes"):
        loss(torch.randn(2, 8), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="5 labels for 6 embeddings"):
        retrieval_metrics(torch.randn(6, 8), torch.tensor([0, 0, 1, 1, 2]))
    assert issubclass(DaalmlError, ValueError)


# ---------------------------------------------------------------------------- no lost work
def test_failed_save_leaves_previous_checkpoint_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.arange(4.0)}, path)

    def crash(obj: object, handle) -> None:
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(4)}, path)
    monkeypatch.undo()
    kept = torch.load(path, weights_only=False)
    assert kept["step"] == 1 and torch.equal(kept["w"], torch.arange(4.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    # a save killed before its rename leaves a temporary file: the next run removes it
    stale = path.parent / ".last.ckpt.tmp-12345"
    stale.write_bytes(b"partial")
    assert remove_stale_temporaries(path.parent) == [stale]
    assert path.is_file()


def _nan_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Make the loss NaN at training step ``step`` (0-based, counted over the whole run)."""
    original = MetricLoss.forward
    calls: list[int] = []

    def forward(self: MetricLoss, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = original(self, embeddings, labels)
        calls.append(1)
        return loss * float("nan") if len(calls) == step + 1 else loss

    monkeypatch.setattr(MetricLoss, "forward", forward)


def test_nan_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path)
    run = tmp_path / "run"
    bad_step = STEPS_PER_EPOCH + 1  # the second step of epoch 1
    _nan_at(monkeypatch, bad_step)
    line = _error_line(_train(config, run, "--set", "train.epochs=3"))
    last = run / "checkpoints" / "last.ckpt"
    assert f"the loss became nan at epoch 1, step {bad_step}" in line
    assert f"the last good checkpoint is kept: {last}" in line
    assert "train.lr=0.001" in line and "lambda_daal" in line
    kept = load_checkpoint(last)
    assert kept["epoch"] == 0 and kept["global_step"] == STEPS_PER_EPOCH
    assert all(
        torch.isfinite(t).all() for t in kept["state_dict"].values() if t.is_floating_point()
    )
    # the run goes on from there once the cause is gone
    monkeypatch.undo()
    assert _train(config, run, "--set", "train.epochs=2", "--resume").exit_code == 0


def test_huge_learning_rate_is_a_clear_error(tmp_path: Path) -> None:
    line = _error_line(_train(_config(tmp_path), tmp_path / "r", "--set", "train.lr=1e30"))
    assert re.search(r"training stopped: the (loss|weights) became .* at epoch 0, step \d", line)
    assert "no checkpoint had been written yet" in line
    assert "train.lr=1e+30" in line


def test_non_finite_weights_are_never_checkpointed() -> None:
    class Trainer:
        current_epoch, global_step = 2, 17

    stamp = StampCheckpoint({"config": {}})
    checkpoint = {"state_dict": {"model.head.weight": torch.tensor([1.0, float("inf")])}}
    with pytest.raises(NonFiniteLossError, match=r"model\.head\.weight\) by epoch 2, step 17"):
        stamp.on_save_checkpoint(Trainer(), None, checkpoint)  # type: ignore[arg-type]
    assert "daalml" not in checkpoint
    good = {"state_dict": {"w": torch.ones(2)}}
    stamp.on_save_checkpoint(Trainer(), None, good)  # type: ignore[arg-type]
    assert good["daalml"]["format"] == checkpoint_module.CHECKPOINT_FORMAT


def _textured_folder(root: Path, n_classes: int, per_class: int, size: int) -> Path:
    """Class-per-folder images of class colour plus fixed noise: crops and flips change them."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(n_classes):
        colour = rng.integers(0, 256, size=3)
        for j in range(per_class):
            noise = rng.integers(-60, 60, size=(size, size, 3))
            pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
            path = root / f"class_{c:02d}" / f"img_{j:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
    return root


def _textured_config(
    tmp: Path, n_classes: int = 12, per_class: int = 4, size: int = 40, **train: object
) -> Path:
    """_config's run on :func:`_textured_folder` images (centre crops of ``size - 4``)."""
    path = _config(tmp, train=dict(train))
    cfg = yaml.safe_load(path.read_text())
    root = _textured_folder(tmp / "textured", n_classes, per_class, size)
    cfg["data"].update(root=str(root), image_size=size - 8, resize=size - 4)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, step: int, presses: int = 1) -> None:
    """Send ourselves SIGINT (Ctrl-C) ``presses`` times during training step ``step``."""
    original = EmbeddingModule.training_step

    def step_with_ctrl_c(self: EmbeddingModule, batch, batch_idx: int):
        if self.global_step == step:
            for _ in range(presses):
                os.kill(os.getpid(), signal.SIGINT)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(EmbeddingModule, "training_step", step_with_ctrl_c)


def test_ctrl_c_saves_mid_epoch_and_resume_matches_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _textured_config(tmp_path, epochs=3)
    run, straight = tmp_path / "run", tmp_path / "straight"
    handler = signal.getsignal(signal.SIGINT)
    _interrupt_at(monkeypatch, STEPS_PER_EPOCH + 1)
    result = _train(config, run)
    assert result.exit_code == 130, result.output
    assert "last.ckpt was saved; rerun with --resume" in result.output
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C behaves as before again
    saved = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == STEPS_PER_EPOCH + 2  # the step in progress was finished
    assert resume_point(saved) == (1, 2)  # inside epoch 1, after its first two batches
    monkeypatch.undo()
    line = _error_line(_train(config, run, "--resume", "--set", "train.batch_size=4"))
    assert "train.batch_size is 4 here but 8 in it" in line  # the epoch's batches must stay
    assert _train(config, run, "--resume").exit_code == 0
    assert _train(config, straight).exit_code == 0
    assert _metrics(run) == _metrics(straight)
    assert _same_weights(run / "checkpoints" / "last.ckpt", straight / "checkpoints" / "last.ckpt")
    epochs = [row["epoch"] for row in _csv_rows(run) if row.get("train/loss")]
    assert epochs == ["0", "1", "2"]  # the log keeps epoch 0 and has each epoch once
    resumes = json.loads((run / "run.json").read_text())["resumes"]
    assert [(r["epoch"], r["batches_done"]) for r in resumes] == [(1, 2)]


def test_mid_epoch_checkpoint_from_before_the_loader_state_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints once kept the epoch's progress only under PROGRESS_KEY, not in Lightning's
    loop state (the loader's state_dict): such a one still resumes where it stopped."""
    config = _config(tmp_path, train={"epochs": 3})
    run, straight = tmp_path / "run", tmp_path / "straight"
    _interrupt_at(monkeypatch, STEPS_PER_EPOCH + 1)
    assert _train(config, run).exit_code == 130
    monkeypatch.undo()
    last = run / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=False)
    fit_loop = saved["loops"]["fit_loop"]["state_dict"]
    assert fit_loop.pop("combined_loader") == [
        {"epoch": 1, "batches": 2, "length": STEPS_PER_EPOCH}
    ]
    assert PROGRESS_KEY not in saved  # written no more
    saved[PROGRESS_KEY] = {"epoch": 1, "batches": 2, "steps_per_epoch": STEPS_PER_EPOCH}
    torch.save(saved, last)
    assert resume_point(load_checkpoint(last)) == (1, 2)
    assert _train(config, run, "--resume").exit_code == 0
    assert _train(config, straight).exit_code == 0
    assert _metrics(run) == _metrics(straight)
    assert _same_weights(last, straight / "checkpoints" / "last.ckpt")


def test_second_ctrl_c_stops_at_once_keeping_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, train={"epochs": 3})
    run = tmp_path / "run"
    _interrupt_at(monkeypatch, STEPS_PER_EPOCH + 1, presses=2)
    result = _train(config, run)
    assert result.exit_code == 130, result.output
    kept = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert kept["epoch"] == 0 and kept["global_step"] == STEPS_PER_EPOCH  # the epoch-end one


def test_ctrl_c_at_an_epochs_last_step_saves_after_the_epoch_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupt_at(monkeypatch, STEPS_PER_EPOCH - 1)
    run = tmp_path / "run"
    assert _train(_config(tmp_path, train={"epochs": 3}), run).exit_code == 130
    saved = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == STEPS_PER_EPOCH + 1
    assert resume_point(saved) == (1, 1)


def test_non_finite_validation_embeddings_name_the_cause() -> None:
    from daalml.config import config_from_dict
    from daalml.losses.registry import build_loss
    from daalml.models.build import build_model

    model = {"backbone": "small_cnn", "pretrained": False, "embedding_size": 4, "head": "linear"}
    cfg = config_from_dict({"model": model, "train": {"lr": 0.5}})
    module = EmbeddingModule(cfg, build_model(cfg), build_loss("daal", 3, 4))
    module._val_embeddings.append(torch.full((4, 4), float("nan")))
    module._val_labels.append(torch.tensor([0, 0, 1, 1]))
    with pytest.raises(
        NonFiniteLossError, match=r"validation embeddings became non-finite.*lr=0\.5"
    ):
        module.on_validation_epoch_end()


def _csv_rows(run: Path) -> list[dict[str, str]]:
    with (run / "logs" / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _kill_config(tmp: Path) -> Path:
    """A run whose epochs last a second or two on a CPU: room to kill it in the middle of one.

    Two data-loader workers: the loader's processes must not change what is trained.
    """
    path = _textured_config(tmp, n_classes=16, per_class=16, size=56, epochs=2, batch_size=16)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["num_workers"] = 2
    path.write_text(yaml.safe_dump(cfg))
    return path


def _child_env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def _signal_mid_epoch(
    config: Path, run: Path, signum: int, *args: str, command: tuple[str, ...] = ("-c", CLI)
) -> subprocess.CompletedProcess:
    """Run `daalml train` (plus ``args``) in a new process group; send ``signum`` to the group
    inside epoch 1. ``command``: how Python starts daalml (DDP relaunches it: ``-m daalml``).

    The group, like a terminal's Ctrl-C, reaches the data-loader workers too.
    """
    env = _child_env()
    output = run.with_name(f"{run.name}-output.txt")
    with output.open("w") as log:
        child = subprocess.Popen(
            [sys.executable, *command, "train", str(config), "--output", str(run), *args],
            stdout=log,  # the progress bar
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            progress = re.compile(r"Epoch 1:\s+\d+%\S*\s*\|[^|]*\|\s*([1-9]\d*)/(\d+)")
            while not progress.search(output.read_text(errors="replace")):
                assert child.poll() is None, output.read_text()
                assert time.monotonic() < deadline, "the run never reached epoch 1"
                time.sleep(0.02)
            os.killpg(child.pid, signum)
            child.wait(timeout=60)
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    return subprocess.CompletedProcess(child.args, child.returncode, output.read_text(), "")


def test_interrupt_message_names_only_a_checkpoint_written_by_this_run(tmp_path: Path) -> None:
    from daalml.cli import interrupted_run

    last = tmp_path / "checkpoints" / "last.ckpt"
    assert "nothing to resume" in interrupted_run(tmp_path, since=0.0)
    last.parent.mkdir()
    last.write_bytes(b"an older run's checkpoint")
    os.utime(last, (1000.0, 1000.0))
    assert "nothing to resume" in interrupted_run(tmp_path, since=2000.0)
    assert f"{last} was saved" in interrupted_run(tmp_path, since=500.0)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    config = _kill_config(tmp_path)
    run, straight = tmp_path / "run", tmp_path / "straight"
    assert _signal_mid_epoch(config, run, signal.SIGKILL).returncode == -signal.SIGKILL
    killed = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert killed["epoch"] == 0  # killed inside epoch 1: the checkpoint is epoch 0's
    assert not (run / "metrics.json").exists()
    assert _train(config, run, "--resume").exit_code == 0
    assert _train(config, straight).exit_code == 0
    assert _metrics(run) == _metrics(straight)
    assert _same_weights(run / "checkpoints" / "last.ckpt", straight / "checkpoints" / "last.ckpt")


@pytest.mark.slow
def test_terminal_ctrl_c_with_data_workers_saves_and_resumes_exactly(tmp_path: Path) -> None:
    config = _kill_config(tmp_path)
    run, straight = tmp_path / "run", tmp_path / "straight"
    stopped = _signal_mid_epoch(config, run, signal.SIGINT)
    assert stopped.returncode == 130, stopped.stdout[-3000:]
    assert "last.ckpt was saved; rerun with --resume" in stopped.stdout
    saved = load_checkpoint(run / "checkpoints" / "last.ckpt")
    epoch, done = resume_point(saved)
    assert epoch == 1 and done >= 1  # saved inside epoch 1
    assert _train(config, run, "--resume").exit_code == 0
    assert _train(config, straight).exit_code == 0
    assert _metrics(run) == _metrics(straight)
    assert _same_weights(run / "checkpoints" / "last.ckpt", straight / "checkpoints" / "last.ckpt")


@pytest.mark.slow
def test_two_process_ctrl_c_saves_mid_epoch_and_resumes_exactly(tmp_path: Path) -> None:
    """DDP on the CPU: every rank's loader restores the state rank 0 saved (they hand out the
    same number of batches), so two processes resume where they stopped too."""
    config = _kill_config(tmp_path)
    run, straight = tmp_path / "run", tmp_path / "straight"
    ddp = ("--set", "train.devices=2", "--set", "train.accelerator=cpu")
    daalml = ("-m", "daalml")
    stopped = _signal_mid_epoch(config, run, signal.SIGINT, *ddp, command=daalml)
    assert stopped.returncode == 130, stopped.stdout[-3000:]
    epoch, done = resume_point(load_checkpoint(run / "checkpoints" / "last.ckpt"))
    assert epoch == 1 and done >= 1  # saved inside epoch 1
    for output, extra in ((run, ("--resume",)), (straight, ())):
        finished = subprocess.run(
            [sys.executable, *daalml, "train", str(config), "--output", str(output), *ddp, *extra],
            capture_output=True,
            text=True,
            env=_child_env(),
            timeout=300,
            check=False,
        )
        assert finished.returncode == 0, finished.stderr[-3000:]
    assert _metrics(run) == _metrics(straight)
    assert _same_weights(run / "checkpoints" / "last.ckpt", straight / "checkpoints" / "last.ckpt")


# ---------------------------------------------------------------------------- reproducible
def test_same_seed_same_run_other_seed_other_run(tmp_path: Path) -> None:
    config = _config(tmp_path, train={"epochs": 2})
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert _train(config, tmp_path / name, "--set", f"train.seed={seed}").exit_code == 0
    a, b, c = (tmp_path / name for name in "abc")
    assert _metrics(a) == _metrics(b)
    assert _same_weights(a / "checkpoints" / "last.ckpt", b / "checkpoints" / "last.ckpt")
    assert _csv_rows(a) == _csv_rows(b)
    assert not _same_weights(a / "checkpoints" / "last.ckpt", c / "checkpoints" / "last.ckpt")


def test_epochs_see_different_batches_and_resume_skips_done_ones() -> None:
    from daalml.data.sampling import MPerClassBatchSampler

    labels = torch.arange(6).repeat_interleave(4)

    def batches(epoch: int, skip: int = 0) -> list[list[tuple[int, int]]]:
        sampler = MPerClassBatchSampler(labels, batch_size=8, samples_per_class=2, seed=3)
        sampler.set_epoch(epoch)
        return list(SeededBatches(sampler, seed=3, skip=skip))

    assert len(batches(0)) == STEPS_PER_EPOCH
    assert batches(0) == batches(0)
    assert batches(0) != batches(1)
    assert batches(1, skip=2) == batches(1)[2:]
    seeds = [seed for batch in batches(0) + batches(1) for _, seed in batch]
    assert len(set(seeds)) == len(seeds)

    class Noise(torch.utils.data.Dataset):
        def __getitem__(self, index: int) -> torch.Tensor:
            return torch.rand(2)

    items = SeededItems(Noise())
    assert torch.equal(items[(0, 5)], items[(3, 5)])
    assert not torch.equal(items[(0, 5)], items[(0, 6)])


def test_loader_state_counts_batches_handed_out_not_those_its_workers_prefetched() -> None:
    from daalml.data.sampling import MPerClassBatchSampler

    labels = torch.arange(6).repeat_interleave(4)

    class Keys(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
            return torch.tensor(key)

    def loader(epoch: int) -> ResumableLoader:
        sampler = MPerClassBatchSampler(labels, batch_size=4, samples_per_class=2, seed=3)
        sampler.set_epoch(epoch)
        return ResumableLoader(Keys(), SeededBatches(sampler, seed=3), num_workers=2)

    whole = [batch.tolist() for batch in loader(1)]
    stopped = loader(1)
    batches = iter(stopped)
    assert [next(batches).tolist() for _ in range(2)] == whole[:2]
    state = stopped.state_dict()  # two workers hold batches 3 to 6 ready by now
    assert state == {"epoch": 1, "batches": 2, "length": len(whole)}
    del batches
    resumed = loader(1)
    resumed.load_state_dict(state)
    assert [batch.tolist() for batch in resumed] == whole[2:]
    assert [batch.tolist() for batch in resumed] == whole  # only the first iteration skips
    finished = loader(1)
    finished.load_state_dict({**state, "batches": len(whole)})
    finished.batch_sampler.sampler.set_epoch(2)  # Lightning starts the next epoch
    assert [batch.tolist() for batch in finished] == [batch.tolist() for batch in loader(2)]
    # a checkpoint saved after the state came back but before the first batch keeps it
    waiting = loader(0)
    waiting.load_state_dict(state)
    assert waiting.state_dict() == state
    waiting.batch_sampler.sampler.set_epoch(1)
    batches = iter(waiting)
    assert waiting.state_dict() == state and next(batches).tolist() == whole[2]
    assert waiting.state_dict() == {**state, "batches": 3}
    # inside an epoch that now has another number of batches (another device count: the
    # same config key "auto"), the exact place cannot be found again
    with pytest.raises(DaalmlError, match="cannot resume inside epoch 1: it had 7 batches"):
        loader(1).load_state_dict({**state, "length": 7})


def test_run_json_records_config_versions_commit_and_seed(trained: Path) -> None:
    from importlib import metadata

    info = json.loads((trained / "run.json").read_text())
    assert info["seed"] == 0
    assert info["config"] == yaml.safe_load((trained / "config.yaml").read_text())
    for package in ("torch", "lightning", "pytorch-metric-learning"):
        assert info["versions"][package] == metadata.version(package)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    expected = head.stdout.strip() if head.returncode == 0 else None
    assert info["git_commit"] == expected
    assert isinstance(info["git_dirty"], bool) == (expected is not None)
    assert info["python"] and info["platform"] and info["started"]
