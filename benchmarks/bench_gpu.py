"""The GPU check: paper-model training throughput under AMP / channels_last, and the loss ratio.

    python benchmarks/bench_gpu.py [--backbone vgg19] [--batch 64] [--image-size 224]
        [--steps 12] [--precisions 32-true,bf16-mixed,16-mixed] [--device cuda]
        [--loss-batch 128,512] [--loss-classes 100,1000,10000] [--skip-loss] [--json FILE]

1. For each precision, with and without channels_last: images/s of daalml's full training step
   (EmbeddingModule under a Lightning Trainer: backbone, paper head 1024-Swish-512, DAAL, AdamW,
   the loader handing over in-memory uint8-range batches) against the same backbone's own
   forward+backward on one batch with the same precision and memory format. The two take turns
   step by step, each timed to the end of its GPU work. Weights are random (the GPU machine has
   no internet), which does not change the arithmetic.
2. DAAL forward+backward against PML's ProxyAnchorLoss and the raw products on the device
   (bench_loss.py's table).

Prints the device name and markdown tables; asserts nothing. Runs on CPU too (slowly), which
the test suite uses with a tiny model to keep this script working.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loss import loss_table
from bench_training import StepClock, _quiet

SAMPLES_PER_CLASS = 4


class SyncedStepClock(StepClock):
    """StepClock whose step ends when the GPU has finished the step's work."""

    def on_train_batch_end(self, *args: Any) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        super().on_train_batch_end(*args)


def _autocast_dtype(precision: str) -> torch.dtype | None:
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)


def _images(count: int, size: int, classes: int, seed: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 3, size, size, generator=gen)
    labels = (torch.arange(count) // SAMPLES_PER_CLASS) % classes
    return TensorDataset(images, labels)


def measure(args: argparse.Namespace, precision: str, channels_last: bool) -> dict[str, Any]:
    """Median images/s of the pipeline and of the backbone alone, for one setting."""
    from daalml.config import config_from_dict
    from daalml.engine.module import EmbeddingModule
    from daalml.losses.registry import build_loss
    from daalml.models.build import build_model

    device = torch.device(args.device)
    cfg = config_from_dict(
        {
            "data": {"dataset": "folder", "root": ".", "image_size": args.image_size},
            "model": {
                "backbone": args.backbone,
                "pretrained": False,
                "head": "paper",
                "embedding_size": 512,
                "channels_last": channels_last,
            },
            "train": {
                "batch_size": args.batch,
                "samples_per_class": SAMPLES_PER_CLASS,
                "precision": precision,
                "scheduler": "none",
            },
        },
        source="bench_gpu",
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    classes = max(1, args.batch // SAMPLES_PER_CLASS)
    module = EmbeddingModule(cfg, model, build_loss("daal", classes, 512))
    warmup = 3
    data = _images(args.batch * (warmup + args.steps), args.image_size, classes, seed=0)
    loader = DataLoader(data, batch_size=args.batch, pin_memory=device.type == "cuda")

    backbone = model.backbone
    images = data.tensors[0][: args.batch].to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    dtype = _autocast_dtype(precision)

    def backbone_step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        backbone.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            features = backbone(images)
        features.float().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    clock = SyncedStepClock(between=backbone_step)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        max_steps=warmup + args.steps,
        max_epochs=-1,
        callbacks=[clock],
    )
    trainer.fit(module, train_dataloaders=loader)
    pipeline_s = statistics.median(clock.steps[warmup:])
    backbone_s = statistics.median(clock.references[warmup:])
    return {
        "precision": precision,
        "channels_last": channels_last,
        "pipeline_images_per_s": args.batch / pipeline_s,
        "backbone_images_per_s": args.batch / backbone_s,
        "pipeline_over_backbone": backbone_s / pipeline_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vgg19")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--precisions", default="32-true,bf16-mixed,16-mixed")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--loss-batch", default="128,512")
    parser.add_argument("--loss-classes", default="100,1000,10000")
    parser.add_argument("--loss-repeats", type=int, default=15)
    parser.add_argument("--skip-loss", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    _quiet()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}")
    print(f"{args.backbone} + paper head + DAAL, batch {args.batch}, {args.image_size} px\n")
    print("| precision | channels_last | pipeline img/s | backbone alone img/s | ratio |")
    print("|---|---|---:|---:|---:|")
    results = []
    for precision in args.precisions.split(","):
        for channels_last in (False, True):
            row = measure(args, precision, channels_last)
            results.append(row)
            print(
                f"| {precision} | {channels_last} | {row['pipeline_images_per_s']:.1f} "
                f"| {row['backbone_images_per_s']:.1f} | {row['pipeline_over_backbone']:.2f} |",
                flush=True,
            )
    loss_rows: list[str] = []
    if not args.skip_loss:
        print("\nDAAL vs Proxy-Anchor, forward+backward, d=512\n")
        batches = [int(b) for b in args.loss_batch.split(",")]
        classes = [int(c) for c in args.loss_classes.split(",")]
        loss_rows = loss_table(batches, classes, 512, args.loss_repeats, device)
        print("\n".join(loss_rows))
    if args.json:
        payload = {"device": name, "torch": torch.__version__, "training": results}
        args.json.write_text(json.dumps(payload | {"loss_table": loss_rows}, indent=2))


if __name__ == "__main__":
    main()
