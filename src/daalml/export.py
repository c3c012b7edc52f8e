"""Export a checkpoint's whole embedding model to ONNX or TorchScript, for serving without daalml.

The public names of :mod:`daalml.workflows.export_model`, where the code lives (see its docstring).
"""

from __future__ import annotations

from daalml.workflows.export_model import (
    EXPORT_FORMATS,
    ExportedEmbedder,
    ExportResult,
    export_model,
    read_metadata,
)

__all__ = [
    "EXPORT_FORMATS",
    "ExportResult",
    "ExportedEmbedder",
    "export_model",
    "read_metadata",
]
