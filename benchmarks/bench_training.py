"""Training throughput: daalml's full pipeline against the backbone alone, and cached features.

    python benchmarks/bench_training.py [--image-size 224] [--batch 32] [--steps 8]
        [--workers 2] [--image-threads 1] [--rows 3428] [--feature-batch 120] [--epochs 4]
        [--threads 1,2] [--accelerator cpu|gpu] [--skip-images] [--skip-features]

Two measurements, each in a fresh child process so that its thread settings are its own:

1. Images: EmbeddingModule training steps (EfficientNet-Lite0, DAAL, AdamW) under a Lightning
   Trainer, fed by daalml's m-per-class loader that decodes and augments generated JPEG files,
   against the same backbone's forward+backward on one of those batches already in memory; the
   two take turns step by step. The loader alone and the loss alone are timed as well, to show
   whether either limits the pipeline. OMP_NUM_THREADS=1 by default (see 2.).
2. Cached features: one epoch of head + DAAL on synthetic 1280-d features (the shape of the
   CUB-200 subset: 3428 images, 58 classes, batch 120), with OMP_NUM_THREADS=1 and =2 side by
   side: on a shared 2-core machine a second torch thread can cost more than it gains.

Prints markdown tables; asserts nothing. Timings drift by tens of percent on a shared machine:
compare the ratios measured in one run, not numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image

FEATURE_DIM = 1280  # EfficientNet-Lite0's pooled features
FEATURE_CLASSES = 58  # training classes of the CUB-200 subset


# ---------------------------------------------------------------------------- helpers
def _quiet() -> None:
    import logging

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def _config(**sections: dict[str, Any]) -> Any:
    from daalml.config import config_from_dict

    return config_from_dict(sections, source="bench_training")


def write_images(root: Path, classes: int, per_class: int, seed: int = 0) -> Path:
    """JPEG photos-to-be: smooth random colour fields with noise, 320 x 240, one folder a class."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.uniform(0, 255, size=(6, 8, 3))
        for i in range(per_class):
            coarse = np.clip(base + rng.normal(0, 40, size=base.shape), 0, 255).astype(np.uint8)
            image = Image.fromarray(coarse).resize((320, 240), Image.Resampling.BICUBIC)
            noisy = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (240, 320, 3))
            Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
                folder / f"{i:04d}.jpg", quality=90
            )
    return root


class StepClock(Callback):
    """Times training steps and epochs; runs ``between`` (untimed) after every step.

    ``between`` lets a reference measurement take turns with the pipeline's steps, so that a
    change in the machine's load hits both alike. A step's time runs from the end of the
    previous ``between`` to the end of the step: loading its batch, forward, backward, update.
    """

    def __init__(self, between: Callable[[], float] | None = None) -> None:
        self.between = between
        self.steps: list[float] = []  # seconds per training step
        self.references: list[float] = []  # what ``between`` returned
        self.epochs: list[float] = []
        self._resumed = 0.0
        self._epoch_start = 0.0

    def on_train_epoch_start(self, *args: Any) -> None:
        self._epoch_start = self._resumed = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        now = time.perf_counter()
        self.steps.append(now - self._resumed)
        if self.between is not None:
            self.references.append(self.between())
        self._resumed = time.perf_counter()

    def on_train_epoch_end(self, *args: Any) -> None:
        self.epochs.append(time.perf_counter() - self._epoch_start)


def _trainer(clock: StepClock, accelerator: str, **limits: int) -> L.Trainer:
    return L.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[clock],
        **limits,
    )


def _median_ms(step: Any, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


# ---------------------------------------------------------------------------- images
def measure_images(args: argparse.Namespace) -> dict[str, Any]:
    """Pipeline, backbone-alone, loader-alone and loss-alone throughput (in this process)."""
    from daalml.engine.data import prepare_data
    from daalml.engine.loaders import train_loader
    from daalml.engine.module import EmbeddingModule
    from daalml.losses.registry import build_loss
    from daalml.models.build import build_model

    _quiet()
    warmup = 2
    classes_per_batch = args.batch // 4
    per_class = 16
    classes = max(classes_per_batch, -(-args.batch * (warmup + args.steps + 1) // per_class))
    with tempfile.TemporaryDirectory() as tmp:
        # two more classes than train_classes: the folder layout needs a test split
        root = write_images(Path(tmp) / "images", classes + 2, per_class)
        cfg = _config(
            data={
                "dataset": "folder",
                "root": str(root),
                "train_classes": classes,
                "image_size": args.image_size,
                "resize": round(args.image_size * 256 / 224),
                "num_workers": args.workers,
            },
            model={
                "backbone": "efficientnet_lite0",
                "pretrained": not args.no_pretrained,
                "embedding_size": 512,
                "head": "linear",
            },
            train={
                "batch_size": args.batch,
                "samples_per_class": 4,
                "accelerator": args.accelerator,
                "cache_dir": str(Path(tmp) / "cache"),
                "scheduler": "none",
            },
        )
        model = build_model(cfg)
        data = prepare_data(cfg, model.backbone)
        loss = build_loss("daal", data.num_train_classes, 512)
        module = EmbeddingModule(cfg, model, loss)
        device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")

        # the backbone alone: forward + backward on a batch already in memory (its frozen
        # batch-norm layers stay frozen, as in the pipeline)
        backbone = model.backbone
        images = next(iter(train_loader(data, cfg, epoch=2)))[0].to(device)

        def backbone_step() -> float:
            start = time.perf_counter()
            backbone.zero_grad(set_to_none=True)
            backbone(images).sum().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - start

        # the full pipeline: loader -> EmbeddingModule.training_step -> AdamW, under Lightning,
        # each step followed by one backbone-alone step (the two take turns)
        clock = StepClock(between=backbone_step)
        trainer = _trainer(clock, args.accelerator, max_steps=warmup + args.steps, max_epochs=-1)
        trainer.fit(module, train_dataloaders=train_loader(data, cfg))
        pipeline_s = statistics.median(clock.steps[warmup:])
        backbone_s = statistics.median(clock.references[warmup:])
        module.zero_grad(set_to_none=True)

        # the loader alone (decode + augment in its workers), and the loss alone
        loader = train_loader(data, cfg, epoch=1)
        batches = iter(loader)
        next(batches)
        start = time.perf_counter()
        count = sum(1 for _, _ in zip(range(args.steps), batches, strict=False))
        loader_s = (time.perf_counter() - start) / max(count, 1)
        del batches
        embeddings = torch.randn(args.batch, 512, device=device)
        labels = torch.arange(args.batch, device=device) // 4 % data.num_train_classes
        loss = loss.to(device)

        def loss_step() -> None:
            x = embeddings.detach().requires_grad_()
            loss(x, labels).backward()

        loss_ms = _median_ms(loss_step, args.steps)
    return {
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "image_size": args.image_size,
        "steps": len(clock.steps) - warmup,
        "backbone_img_s": args.batch / backbone_s,
        "pipeline_img_s": args.batch / pipeline_s,
        "loader_img_s": args.batch / loader_s,
        "loss_ms": loss_ms,
        "pipeline_ms": 1000 * pipeline_s,
    }


# ---------------------------------------------------------------------------- features
def measure_features(args: argparse.Namespace) -> dict[str, Any]:
    """Cached-feature epochs (linear head + DAAL) under a Lightning Trainer, in this process."""
    from daalml.engine.data import LabelledTensors, RunData
    from daalml.engine.loaders import train_loader
    from daalml.engine.module import EmbeddingModule
    from daalml.losses.registry import build_loss
    from daalml.models.embedder import EmbeddingModel
    from daalml.models.heads import build_head

    _quiet()
    torch.manual_seed(0)
    labels = torch.arange(args.rows) % FEATURE_CLASSES
    centres = torch.randn(FEATURE_CLASSES, FEATURE_DIM)
    features = centres[labels] + 0.5 * torch.randn(args.rows, FEATURE_DIM)
    dataset = LabelledTensors(features, labels)
    data = RunData(train=dataset, num_train_classes=FEATURE_CLASSES, test=None, features=True)
    cfg = _config(
        model={"backbone": "efficientnet_lite0", "embedding_size": 512, "head": "linear"},
        train={
            "batch_size": args.feature_batch,
            "samples_per_class": 4,
            "cache_features": True,
            "accelerator": args.accelerator,
            "epochs": args.epochs,
        },
    )
    model = EmbeddingModel(None, build_head("linear", FEATURE_DIM, 512))
    loss = build_loss("daal", FEATURE_CLASSES, 512)
    module = EmbeddingModule(cfg, model, loss, features=True)
    clock = StepClock()
    trainer = _trainer(clock, args.accelerator, max_epochs=args.epochs)
    trainer.fit(module, train_dataloaders=train_loader(data, cfg))
    epochs = clock.epochs
    steps = len(clock.steps) // args.epochs
    epoch_s = statistics.median(epochs[1:] if len(epochs) > 1 else epochs)
    return {
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "steps": steps,
        "epoch_s": epoch_s,
        "it_s": steps / epoch_s,
        "first_epoch_s": epochs[0],
    }


# ---------------------------------------------------------------------------- parent
def _child(kind: str, threads: int | None) -> dict[str, Any]:
    env = dict(os.environ)
    command = [sys.executable, __file__, "--child", kind, *sys.argv[1:]]
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
        command += ["--torch-threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        sys.exit(f"{kind} measurement failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(args: argparse.Namespace) -> None:
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, accelerator {args.accelerator}\n")
    if not args.skip_images:
        r = _child("images", args.image_threads or None)
        print(
            f"## Images: EfficientNet-Lite0 at {r['image_size']} px, batch {r['batch']}, "
            f"{r['threads']} torch threads, {args.workers} loader workers\n"
        )
        print("| measured | images/s | ms/batch | pipeline / this |")
        print("|---|---|---|---|")
        rows = [
            ("backbone forward+backward alone", r["backbone_img_s"]),
            ("daalml training step (loader + model + DAAL + AdamW)", r["pipeline_img_s"]),
            ("loader alone (decode + augment)", r["loader_img_s"]),
        ]
        for name, rate in rows:
            ms = 1000 * r["batch"] / rate
            print(f"| {name} | {rate:.1f} | {ms:.0f} | {r['pipeline_img_s'] / rate:.2f} |")
        print(
            f"\nMedians over {r['steps']} steps, the pipeline's and the backbone's taking turns. "
            f"DAAL forward+backward alone: {r['loss_ms']:.1f} ms/batch "
            f"({100 * r['loss_ms'] / r['pipeline_ms']:.2f}% of a pipeline step).\n"
        )
    if args.skip_features:
        return
    threads = [int(t) for t in args.threads.split(",")]
    results = [_child("features", n) for n in threads]
    print(
        f"## Cached features: {args.rows} x {FEATURE_DIM}, batch {args.feature_batch}, "
        f"linear head + DAAL, median of epochs 2-{args.epochs}\n"
    )
    print("| OMP_NUM_THREADS | steps/epoch | epoch s | it/s | vs first row |")
    print("|---|---|---|---|---|")
    for n, r in zip(threads, results, strict=True):
        speed = r["it_s"] / results[0]["it_s"]
        print(f"| {n} | {r['steps']} | {r['epoch_s']:.2f} | {r['it_s']:.1f} | x{speed:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32, help="images per step (multiple of 4)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--rows", type=int, default=3428, help="cached feature rows")
    parser.add_argument("--feature-batch", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=4, help="cached-feature epochs")
    parser.add_argument("--threads", default="1,2", help="OMP_NUM_THREADS values to compare")
    parser.add_argument(
        "--image-threads", type=int, default=1, help="OMP_NUM_THREADS of the image part (0: unset)"
    )
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--no-pretrained", action="store_true", help="random Lite0 weights")
    parser.add_argument("--skip-images", action="store_true", help="cached features only")
    parser.add_argument("--skip-features", action="store_true", help="images only")
    parser.add_argument("--child", choices=("images", "features"), help=argparse.SUPPRESS)
    parser.add_argument("--torch-threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.child == "images":
        print(json.dumps(measure_images(args)))
    elif args.child == "features":
        print(json.dumps(measure_features(args)))
    else:
        report(args)


if __name__ == "__main__":
    main()
