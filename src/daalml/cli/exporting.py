"""`daalml export`: a checkpoint's model as ONNX or TorchScript, for serving without daalml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daalml.cli.shell import Checkpoint, _guard


def export(
    checkpoint: Checkpoint,
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx or torchscript.")] = "onnx",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Model file (default: beside the checkpoint)."),
    ] = None,
) -> None:
    """Export backbone + head + L2 normalisation to ONNX or TorchScript (+ <output>.json)."""
    from daalml.export import export_model

    suffix = ".onnx" if fmt == "onnx" else ".pt"
    target = output if output is not None else checkpoint.with_suffix(suffix)
    result = _guard(lambda: export_model(checkpoint, target, format=fmt))
    print(result.path)
    print(
        f"input: {describe_input(result.metadata['preprocessing'])}; metadata in {result.sidecar}"
    )


def describe_input(prep: dict) -> str:
    """One line: input shape and the preprocessing an exported model expects."""
    size = prep["image_size"]
    shape = f"(batch, {len(prep['mean'])}, {size}, {size}) float32"
    if prep["resize"] is None:
        geometry = f"{prep['mode']} image resized to {size}x{size}"
    else:
        geometry = (
            f"{prep['mode']} image, short side resized to {prep['resize']}, centre crop {size}"
        )
    return f"{shape}: {geometry}, pixels / 255, then (x - {prep['mean']}) / {prep['std']}"
