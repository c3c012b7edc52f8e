"""`daalml export`: ONNX and TorchScript give PyTorch's embeddings on real images, with metadata."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from daalml.cli import app
from daalml.data.images import load_rgb
from daalml.engine.checkpoint import load_module
from daalml.errors import DaalmlError
from daalml.export import export_model, read_metadata
from daalml.retrieval import list_images, preprocessing
from tests.workflows.conftest import train_run

runner = CliRunner()
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference(checkpoint: Path, colour_data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Seven real preprocessed images (not the traced batch size) and PyTorch's embeddings."""
    module, _ = load_module(checkpoint)
    transform = preprocessing(module).transform()
    paths = list_images(colour_data).paths[::7]
    inputs = torch.stack([transform(load_rgb(p)) for p in paths])
    with torch.no_grad():
        return inputs, module.eval()(inputs)


def _export(checkpoint: Path, fmt: str, output: Path) -> str:
    args = ["export", str(checkpoint), "--format", fmt, "--output", str(output)]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def _check_metadata(meta: dict, checkpoint: Path, fmt: str) -> None:
    assert meta["format"] == fmt
    assert meta["checkpoint"] == str(checkpoint.resolve())
    assert meta["embedding_size"] == 16
    prep = meta["preprocessing"]
    assert prep["image_size"] == 32 and prep["resize"] == 36 and prep["mode"] == "RGB"
    assert prep["mean"] == [0.5, 0.5, 0.5] and prep["std"] == [0.5, 0.5, 0.5]
    assert prep["input_shape"] == ["batch", 3, 32, 32]


def test_onnx_matches_pytorch(tmp_path: Path, checkpoint: Path, reference) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = tmp_path / "model.onnx"
    printed = _export(checkpoint, "onnx", path)
    assert str(path) in printed and "short side resized to 36, centre crop 32" in printed
    inputs, expected = reference
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    (out,) = session.run(None, {"images": inputs.numpy()})
    assert out.shape == tuple(expected.shape)
    assert np.abs(out - expected.numpy()).max() < TOLERANCE
    meta = read_metadata(path)
    _check_metadata(meta, checkpoint, "onnx")
    assert json.loads((tmp_path / "model.onnx.json").read_text()) == meta
    props = session.get_modelmeta().custom_metadata_map
    assert props["image_size"] == "32" and json.loads(props["mean"]) == [0.5, 0.5, 0.5]


def test_torchscript_matches_pytorch(tmp_path: Path, checkpoint: Path, reference) -> None:
    path = tmp_path / "model.pt"
    _export(checkpoint, "torchscript", path)
    inputs, expected = reference
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(path))
    with torch.no_grad():
        out = scripted(inputs)
    assert (out - expected).abs().max().item() < TOLERANCE
    assert torch.allclose(out.norm(dim=1), torch.ones(len(out)), atol=1e-5)
    _check_metadata(read_metadata(path), checkpoint, "torchscript")
    assert (tmp_path / "model.pt.json").is_file()


def test_default_output_is_beside_the_checkpoint(tmp_path: Path, checkpoint: Path) -> None:
    local = tmp_path / "best.ckpt"
    local.write_bytes(checkpoint.read_bytes())
    result = runner.invoke(app, ["export", str(local), "--format", "torchscript"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "best.pt.json").is_file()


def test_export_errors(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(DaalmlError, match="export format 'tflite' is unknown"):
        export_model(checkpoint, tmp_path / "m.tflite", format="tflite")
    result = runner.invoke(app, ["export", str(checkpoint), "--format", "tflite"])
    assert result.exit_code == 2 and "export format 'tflite' is unknown" in result.output
    result = runner.invoke(app, ["export", str(tmp_path / "none.ckpt"), "-o", str(tmp_path / "m")])
    assert result.exit_code == 2 and "none.ckpt: no such file" in result.output
    with pytest.raises(DaalmlError, match="is a directory"):
        export_model(checkpoint, tmp_path, format="torchscript")
    foreign = tmp_path / "foreign.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        torch.jit.save(torch.jit.script(torch.nn.Identity()), str(foreign))
    with pytest.raises(DaalmlError, match=r"no daalml\.json"):
        read_metadata(foreign)


@pytest.mark.slow
def test_cached_feature_run_exports_the_whole_model(tmp_path: Path, colour_data: Path) -> None:
    """A head trained on cached features: the backbone comes back from its pretrained weights."""
    ort = pytest.importorskip("onnxruntime")
    run = train_run(
        tmp_path,
        colour_data,
        model={"backbone": "efficientnet_lite0", "pretrained": True, "embedding_size": 8},
        train={"cache_features": True, "epochs": 1, "val_classes": 0},
        data={"image_size": 64, "resize": 72},
    )
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert not any(
        k.startswith("model.backbone.")
        for k in torch.load(checkpoint, weights_only=False)["state_dict"]
    )
    module, _ = load_module(checkpoint)
    transform = preprocessing(module).transform()
    inputs = torch.stack([transform(load_rgb(p)) for p in list_images(colour_data).paths[::9]])
    with torch.no_grad():
        expected = module.eval()(inputs).numpy()
    result = export_model(checkpoint, tmp_path / "lite0.onnx")
    assert result.metadata["preprocessing"]["mean"] == list(module.model.backbone.mean)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"images": inputs.numpy()})
    assert np.abs(out - expected).max() < TOLERANCE
    # the pictures read the image files behind the cached features
    grid = runner.invoke(app, ["visualize", str(run), "--kind", "retrieval"])
    assert grid.exit_code == 0, grid.output
    assert (run / "retrieval.png").is_file()
