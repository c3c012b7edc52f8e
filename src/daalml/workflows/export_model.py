"""Export a checkpoint's whole embedding model to ONNX or TorchScript, for serving without daalml.

The exported graph is backbone -> head -> L2 normalisation: input ``images`` (B, C, S, S)
float32, already preprocessed; output ``embeddings`` (B, d), unit length. The batch size is
free, the image size fixed to S. The preprocessing (:class:`daalml.data.preprocessing.Preprocessing`:
resize, centre crop, [0, 1] scaling, mean/std) is stored with the model: in the ONNX
``metadata_props`` (key ``daalml``, JSON), in the TorchScript archive (extra file
``daalml.json``) and in a sidecar ``<output>.json`` for both.

ONNX uses torch's TorchScript-based exporter (``dynamo=False``), which needs only the ``onnx``
package (``pip install 'daalml[export]'``), not onnxscript.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from daalml.data.preprocessing import Preprocessing
from daalml.engine.checkpoint import load_module
from daalml.engine.inference import preprocessing
from daalml.errors import DaalmlError

EXPORT_FORMATS = ("onnx", "torchscript")
METADATA_KEY = "daalml"
TORCHSCRIPT_EXTRA = "daalml.json"
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
DEFAULT_OPSET = 17


class ExportedEmbedder(nn.Module):
    """Images (B, C, S, S) -> unit-length embeddings (B, d): the traceable core of a model."""

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.body(images).flatten(1)), p=2.0, dim=1)


@dataclass
class ExportResult:
    """Where the model and its sidecar JSON went, and the metadata stored with them."""

    path: Path
    sidecar: Path
    metadata: dict[str, Any]


def _version() -> str:
    try:
        return metadata.version("daalml")
    except metadata.PackageNotFoundError:
        return "unknown"


def _embedder(module: nn.Module) -> ExportedEmbedder:
    """A CPU copy of the module's backbone body and head in eval mode, contiguous weights."""
    model = copy.deepcopy(module.model).cpu().eval()
    backbone = model.backbone
    if backbone is None:
        raise DaalmlError("the module has no backbone: cannot export an image model")
    backbone.set_channels_last(False)
    return ExportedEmbedder(backbone.body, model.head).eval()


def _metadata(
    fmt: str, checkpoint: Path, prep: Preprocessing, module: nn.Module, dim: int
) -> dict[str, Any]:
    return {
        "format": fmt,
        "daalml_version": _version(),
        "checkpoint": str(checkpoint.resolve()),
        "backbone": module.cfg.model.backbone,
        "loss": module.cfg.loss.name,
        "embedding_size": dim,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "output": "L2-normalised embeddings; cosine similarity = dot product",
        "preprocessing": prep.to_dict(),
    }


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, meta: dict, opset: int):
    try:
        import onnx
    except ImportError as err:
        raise DaalmlError(
            f"export to {path}: ONNX export needs onnx (pip install 'daalml[export]')"
        ) from err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice, tracer notes
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
        )
    proto = onnx.load(str(path))
    prep = meta["preprocessing"]
    props = {
        METADATA_KEY: json.dumps(meta),
        "image_size": str(prep["image_size"]),
        "resize": str(prep["resize"]),
        "mean": json.dumps(prep["mean"]),
        "std": json.dumps(prep["std"]),
        "mode": prep["mode"],
        "embedding_size": str(meta["embedding_size"]),
    }
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: Path, meta: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_EXTRA: json.dumps(meta)})


def export_model(
    checkpoint: str | Path,
    output: str | Path,
    *,
    format: str = "onnx",
    opset: int = DEFAULT_OPSET,
    overrides: Sequence[str] = (),
) -> ExportResult:
    """Export the model of ``checkpoint`` to ``output`` as ``onnx`` or ``torchscript``.

    A checkpoint trained on cached features gets its backbone rebuilt from the config
    (pretrained weights), as ``load_module`` does. Also writes ``<output>.json``.
    """
    if format not in EXPORT_FORMATS:
        raise DaalmlError(
            f"export format {format!r} is unknown: choose one of {', '.join(EXPORT_FORMATS)}"
        )
    checkpoint = Path(checkpoint)
    module, _ = load_module(checkpoint, overrides)
    prep = preprocessing(module)
    model = _embedder(module)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, prep.channels, prep.image_size, prep.image_size, generator=generator)
    with torch.no_grad():
        dim = int(model(example).shape[1])
    meta = _metadata(format, checkpoint, prep, module, dim)
    path = Path(output)
    if path.is_dir():
        raise DaalmlError(f"export output {path}: is a directory; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "onnx":
        _export_onnx(model, example, path, meta, opset)
    else:
        _export_torchscript(model, example, path, meta)
    sidecar = path.with_name(path.name + ".json")
    sidecar.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return ExportResult(path=path, sidecar=sidecar, metadata=meta)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata stored inside an exported model (ONNX or TorchScript)."""
    path = Path(path)
    if not path.is_file():
        raise DaalmlError(f"exported model {path}: no such file")
    if path.suffix.lower() == ".onnx":
        try:
            import onnx
        except ImportError as err:
            raise DaalmlError(f"{path}: reading ONNX needs onnx (pip install onnx)") from err
        props = {
            p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
        }
        if METADATA_KEY not in props:
            raise DaalmlError(
                f"exported model {path}: no '{METADATA_KEY}' metadata (not from daalml)"
            )
        return json.loads(props[METADATA_KEY])
    extra = {TORCHSCRIPT_EXTRA: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as err:
        raise DaalmlError(f"exported model {path}: not a TorchScript archive ({err})") from err
    if not extra[TORCHSCRIPT_EXTRA]:
        raise DaalmlError(f"exported model {path}: no {TORCHSCRIPT_EXTRA} (not from daalml)")
    return json.loads(extra[TORCHSCRIPT_EXTRA])
