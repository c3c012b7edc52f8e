"""Checkpoints: written atomically, stamped with what rebuilds the model, loaded back."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from daalml.config import Config, apply_overrides, config_differences, config_from_dict
from daalml.data.preprocessing import Preprocessing
from daalml.engine.loaders import saved_loader_state
from daalml.engine.module import EmbeddingModule, NonFiniteLossError
from daalml.errors import DaalmlError
from daalml.losses.registry import build_loss
from daalml.models.build import build_model

CHECKPOINT_FORMAT = 1
META_KEY = "daalml"
PREPROCESSING_KEY = "preprocessing"  # in META_KEY: the model's input (Preprocessing.to_dict)
_TMP_MARK = ".tmp-"


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save to a temporary file in the same folder, then rename: a crash never leaves half a file.

    The file is flushed to disk before the rename, so even a power cut leaves either the old or
    the new checkpoint under the final name.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary(path)
        try:
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        finally:
            tmp.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary files a killed save left in ``folder``; return what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f".*.ckpt{_TMP_MARK}*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a daalml checkpoint; a clear error when it is missing, foreign or incompatible."""
    path = Path(path)
    if not path.is_file():
        raise DaalmlError(f"checkpoint {path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or non-torch file: torch raises many kinds
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DaalmlError(
            f"checkpoint {path}: not a readable PyTorch checkpoint ({reason})"
        ) from err
    if not isinstance(checkpoint, dict) or META_KEY not in checkpoint:
        raise DaalmlError(f"checkpoint {path}: not a daalml checkpoint (no '{META_KEY}' section)")
    meta = checkpoint[META_KEY]
    version = meta.get("format") if isinstance(meta, dict) else None
    if version != CHECKPOINT_FORMAT:
        written_by = meta.get("version", "unknown") if isinstance(meta, dict) else "unknown"
        raise DaalmlError(
            f"checkpoint {path}: format {version!r} (written by daalml {written_by}) is not "
            f"supported by this daalml (expects format {CHECKPOINT_FORMAT}); re-train or use "
            "the daalml version that wrote it"
        )
    for key in ("config", "num_train_classes"):
        if key not in meta:
            raise DaalmlError(f"checkpoint {path}: the '{META_KEY}' section lacks '{key}'")
    if "state_dict" not in checkpoint:
        raise DaalmlError(f"checkpoint {path}: no 'state_dict' (model weights) in it")
    return checkpoint


# ---------------------------------------------------------------------------- callbacks
class StampCheckpoint(Callback):
    """Stamp every checkpoint with what rebuilds the model; refuse to save non-finite weights.

    The refusal keeps the previous (good) checkpoint on disk when a step made the weights NaN
    or Inf without the loss showing it yet.
    """

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = {"format": CHECKPOINT_FORMAT, **meta}

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        for name, tensor in checkpoint.get("state_dict", {}).items():
            if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
                raise NonFiniteLossError(
                    f"the weights became non-finite ({name}) by epoch {trainer.current_epoch}, "
                    f"step {trainer.global_step}",
                    getattr(pl_module, "usual_causes", lambda: "")(),
                )
        checkpoint[META_KEY] = dict(self.meta)


class SaveOnInterrupt(Callback):
    """Ctrl-C: finish the current training step, write ``path``, then stop.

    The first SIGINT only sets a flag, so the checkpoint is never taken half-way through an
    optimiser step; at the end of the step the state (with where it stands in the epoch) is
    saved and ``KeyboardInterrupt`` raised. A second Ctrl-C stops at once, keeping the last
    saved checkpoint. At the last step of an epoch the save waits for the next step, because
    the epoch's end (validation, scheduler, its own checkpoint) must run first.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.requested = False
        self.saved = False
        self._previous: Any = None
        self._installed = False  # our handler is in place now
        self._deferred = False  # Ctrl-C was ours to handle during this fit

    def _request(self, signum: int, frame: Any) -> None:
        if self.requested:
            self.restore()
            raise KeyboardInterrupt
        self.requested = True
        sys.stderr.write(
            "\nCtrl-C: stopping after this step and saving a checkpoint for --resume "
            "(press Ctrl-C again to stop at once)\n"
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous is signal.SIG_IGN:  # started with Ctrl-C ignored (nohup, background jobs)
            return
        self._previous = previous
        signal.signal(signal.SIGINT, self._request)
        self._installed = self._deferred = True

    def restore(self) -> None:
        """Put back the SIGINT handler that was there before training."""
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        stop = self.requested
        if trainer.world_size > 1:  # all ranks save and stop at the same step
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop or idx + 1 >= trainer.num_training_batches:
            return
        trainer.save_checkpoint(self.path)
        self.saved = True
        raise KeyboardInterrupt

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.restore()
        if isinstance(exception, KeyboardInterrupt) and not self.saved and not self._deferred:
            # no handler could be installed (not the main thread): save where we are
            trainer.save_checkpoint(self.path)
            self.saved = True

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.restore()


# ---------------------------------------------------------------------------- resuming
# config keys that fix the shapes of the saved weights: a resumed run must keep them
_RESUME_FIXED = (
    "model",
    "loss",
    "data.dataset",
    "data.train_classes",
    "train.cache_features",
    "data.cached_views",  # the activation cache a run's epochs read their views from
    "train.cache_dtype",
)
# and those that fix an epoch's batches, when it resumes inside one
_RESUME_MID_EPOCH = (
    "train.batch_size",
    "train.samples_per_class",
    "train.seed",
    "train.devices",
    "train.num_nodes",
    "train.val_classes",
)


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the keys added since it was written at their defaults."""
    try:
        return config_from_dict(saved, source="checkpoint").to_dict()
    except DaalmlError:  # not valid any more: compare it as it is, the error names the key
        return saved


def check_resumable(checkpoint: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    """Raise unless ``config`` builds the model and loss the checkpoint at ``path`` holds."""
    saved = _with_defaults(checkpoint[META_KEY]["config"])
    problems = []
    mid_epoch = resume_point(checkpoint)[1] > 0
    for key in _RESUME_FIXED + (_RESUME_MID_EPOCH if mid_epoch else ()):
        differ = config_differences(_lookup(saved, key), _lookup(config, key), key)
        problems += [f"{dotted} is {now!r} here but {then!r} in it" for dotted, then, now in differ]
    if problems:
        raise DaalmlError(
            f"cannot resume from {path}: {problems[0]}"
            f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; "
            "resume with the config the run was started with"
        )


# entries added after a checkpoint may have been written; loading fills them in itself
_FILLED_ON_LOAD = (".thickness_version",)  # DAAL v2 (losses/daal.py: absent means v1)


def check_weights_fit(checkpoint: dict[str, Any], module: torch.nn.Module, path: Path) -> None:
    """Raise naming the first weight of ``path`` whose name or shape ``module`` does not have."""
    saved: dict[str, torch.Tensor] = checkpoint["state_dict"]
    own = module.state_dict()
    for name in sorted(set(saved) | set(own)):
        if name not in own:
            problem = f"has {name}, which the model lacks"
        elif name not in saved:
            if name.endswith(_FILLED_ON_LOAD):
                continue
            problem = f"lacks {name}"
        elif tuple(saved[name].shape) != tuple(own[name].shape):
            problem = (
                f"has {name} of shape {tuple(saved[name].shape)}, the model "
                f"{tuple(own[name].shape)}"
            )
        else:
            continue
        raise DaalmlError(f"checkpoint {path} does not fit the model of this config: it {problem}")


def resume_point(checkpoint: dict[str, Any]) -> tuple[int, int]:
    """(epoch, batches already trained in it) where a run resumed from ``checkpoint`` goes on.

    Checkpoints written at an epoch's end resume at the next epoch's start; one written by
    Ctrl-C resumes inside its epoch, after the batches it had trained on.
    """
    state = saved_loader_state(checkpoint)
    if state is None:  # from before any record of the epoch's progress: an epoch-end one
        return int(checkpoint.get("epoch", 0)) + 1, 0
    epoch, done, total = state["epoch"], state["batches"], state["length"]
    if total and done < total:
        return epoch, done
    return epoch + 1, 0


def load_module(
    checkpoint_path: str | Path, overrides: Sequence[str] = ()
) -> tuple[EmbeddingModule, Config]:
    """Rebuild the trained module from a checkpoint (its own config, plus ``overrides``)."""
    checkpoint = load_checkpoint(checkpoint_path)
    meta = checkpoint[META_KEY]
    cfg = config_from_dict(
        apply_overrides(meta["config"], overrides), source=f"{checkpoint_path} + --set"
    )
    if cfg.model.train_blocks and cfg.train.cache_features:
        # trained on cached trunk activations: the whole backbone now runs on images, its top
        # stages from the checkpoint, its trunk from the same pretrained weights
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, cache_features=False))
    # the weights a checkpoint lacks (a frozen backbone or trunk) come from the backbone's own
    # initialisation: seeded as train() seeds it, so that even pretrained: false rebuilds them
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    model = build_model(cfg)
    loss = build_loss(
        cfg.loss.name, meta["num_train_classes"], cfg.model.embedding_size, cfg.loss.params
    )
    module = EmbeddingModule(cfg, model, loss, features=False)
    missing, unexpected = module.load_state_dict(checkpoint["state_dict"], strict=False)
    bad = [k for k in missing if not k.startswith("model.backbone.")] + list(unexpected)
    if bad:
        raise DaalmlError(
            f"checkpoint {checkpoint_path}: weights do not fit the model its config describes "
            f"({', '.join(bad[:5])}{'...' if len(bad) > 5 else ''})"
        )
    saved = meta.get(PREPROCESSING_KEY)
    if isinstance(saved, dict) and not overrides:  # older checkpoints: rebuilt from the config
        module.input_preprocessing = Preprocessing.from_dict(saved)
    return module, cfg
