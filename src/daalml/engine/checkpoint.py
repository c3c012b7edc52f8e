"""Checkpoints: written atomically, stamped with what is needed to rebuild the model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from daalml.errors import DaalmlError

CHECKPOINT_FORMAT = 1
META_KEY = "daalml"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save to a temporary file in the same folder, then rename: a crash never leaves half a file."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a daalml checkpoint; a clear error when it is missing, foreign or incompatible."""
    path = Path(path)
    if not path.is_file():
        raise DaalmlError(f"checkpoint {path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or non-torch file: torch raises many kinds
        raise DaalmlError(f"checkpoint {path}: not a readable PyTorch checkpoint ({err})") from err
    if not isinstance(checkpoint, dict) or META_KEY not in checkpoint:
        raise DaalmlError(f"checkpoint {path}: not a daalml checkpoint (no '{META_KEY}' section)")
    meta = checkpoint[META_KEY]
    version = meta.get("format") if isinstance(meta, dict) else None
    if version != CHECKPOINT_FORMAT:
        raise DaalmlError(
            f"checkpoint {path}: format {version!r} is not supported by this daalml "
            f"(expects format {CHECKPOINT_FORMAT}); re-train or use the daalml version that wrote it"
        )
    return checkpoint
