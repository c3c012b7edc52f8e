"""Training the top stages on cached trunk activations vs a frozen head and a full fine-tune.

    python benchmarks/bench_top.py [--config configs/cub200_subset_lite0_top.yaml]
        [--blocks 1,2] [--epochs 3] [--full-steps 3] [--threads 2] [--json FILE]
        [--set key=value ...]

For each setting, in this one process and in this order: the frozen backbone with cached
pooled features (train_blocks 0), each ``--blocks`` N on cached activations, and the full
fine-tune on images (train_blocks -1, no cache). It prints the time ``prepare_data`` took
(the cache build when the cache was not there yet: run with ``DAALML_CACHE=$(mktemp -d)`` to
measure it; ``--train-only`` caches only the training views that an epoch reads), the size
of the caches, and the seconds of one training epoch: the median of epochs
2..``--epochs`` for the cached settings, and ``--full-steps`` timed steps (after one untimed)
times the steps per epoch for the full fine-tune. An epoch here is the engine's training
loader + forward + loss + backward + AdamW step, as in `daalml train` (no validation).
Prints a markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch


def _setting(cfg: Any, epochs: int, max_steps: int | None, train_only: bool) -> dict[str, Any]:
    """Prepare the data (timed), then time training epochs (or ``max_steps`` steps)."""
    import dataclasses

    import lightning as L

    from daalml.engine.data import activation_cache, prepare_data
    from daalml.engine.loaders import train_loader
    from daalml.engine.module import EmbeddingModule
    from daalml.losses.registry import build_loss
    from daalml.models.build import build_model
    from daalml.models.stages import split_backbone

    L.seed_everything(cfg.train.seed, verbose=False)
    model = build_model(cfg)
    start = time.perf_counter()
    if train_only and cfg.model.train_blocks > 0:
        # only the training views: what an epoch reads (the evaluation splits add one view each)
        images = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, cache_features=False)
        )
        data = prepare_data(images, model.backbone)
        data.train = activation_cache(cfg, model.backbone, data.train, cfg.data.cached_views)
        data.val = data.test = data.train_eval = data.query = data.gallery = None
        data.activations = True
    else:
        data = prepare_data(cfg, model.backbone)
    prepare_s = time.perf_counter() - start
    splits = [data.train, data.train_eval, data.val, data.test, data.query, data.gallery]
    if data.activations:
        model.backbone = split_backbone(model.backbone, cfg.model.train_blocks).top
        unique = {id(s): s for s in splits if s is not None}.values()
        cache_bytes = sum(int(s.array.nbytes) for s in unique)
    elif data.features:
        model.backbone = None
        unique = {id(s): s for s in splits if s is not None}.values()
        cache_bytes = sum(int(s.tensors[0].nbytes) for s in unique)
    else:
        cache_bytes = 0
    loss = build_loss(
        cfg.loss.name, data.num_train_classes, cfg.model.embedding_size, cfg.loss.params
    )
    module = EmbeddingModule(cfg, model, loss, features=data.features).train()
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(
        module.parameter_groups(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
    )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    epoch_times: list[float] = []
    step_times: list[float] = []
    steps_per_epoch = 0
    for epoch in range(epochs):
        loader = train_loader(data, cfg, epoch=epoch)
        steps_per_epoch = len(loader)
        began = tick = time.perf_counter()
        for step, (inputs, labels) in enumerate(loader):
            optimizer.zero_grad(set_to_none=True)
            out = loss(module(inputs).float(), labels)
            out.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.train.gradient_clip or float("inf"))
            optimizer.step()
            now = time.perf_counter()
            step_times.append(now - tick)
            tick = now
            if max_steps is not None and step + 1 >= max_steps + 1:
                break
        epoch_times.append(time.perf_counter() - began)
        if max_steps is not None:
            break
    if max_steps is not None:
        per_step = statistics.median(step_times[1:])  # the first step warms up
        epoch_s, how = per_step * steps_per_epoch, f"{max_steps} steps x {steps_per_epoch}"
    else:
        epoch_s, how = statistics.median(epoch_times[1:]), f"median of epochs 2-{epochs}"
    return {
        "prepare_s": prepare_s,
        "cache_bytes": cache_bytes,
        "steps_per_epoch": steps_per_epoch,
        "epoch_s": epoch_s,
        "how": how,
        "trainable_params": trainable,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/cub200_subset_lite0_top.yaml")
    parser.add_argument("--blocks", default="1,2", help="train_blocks values to time")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per cached setting")
    parser.add_argument("--full-steps", type=int, default=3, help="timed full fine-tune steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument(
        "--train-only", action="store_true", help="cache only the training views (N > 0)"
    )
    args = parser.parse_args(argv)

    import logging

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    from daalml.config import load_config
    from daalml.data.activations import format_bytes

    def cfg(*extra: str) -> Any:
        return load_config(args.config, [*args.overrides, *extra])

    settings: list[tuple[str, Any, int | None]] = [
        ("frozen backbone, cached features (train_blocks 0)", cfg("model.train_blocks=0"), None),
    ]
    for n in [int(b) for b in args.blocks.split(",") if b]:
        settings.append(
            (
                f"last {n} stage(s) on cached activations (train_blocks {n})",
                cfg(f"model.train_blocks={n}"),
                None,
            )
        )
    if not args.skip_full:
        settings.append(
            ("full fine-tune on images (train_blocks -1)",
             cfg("model.train_blocks=-1", "train.cache_features=false"), args.full_steps)
        )  # fmt: skip
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {args.threads} threads, load before {load[0]:.2f}")
    rows = []
    for name, setting, steps in settings:
        result = _setting(setting, args.epochs, steps, args.train_only)
        result["setting"] = name
        rows.append(result)
        print(f"  {name}: {json.dumps(result)}", flush=True)
    frozen = rows[0]["epoch_s"]
    print(f"load after {os.getloadavg()[0]:.2f}\n")
    print("| setting | prepare_data s | cache size | trainable params | steps/epoch "
          "| epoch s | vs frozen | how |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['setting']} | {row['prepare_s']:.0f} | {format_bytes(row['cache_bytes'])} "
            f"| {row['trainable_params']:,} | {row['steps_per_epoch']} | {row['epoch_s']:.2f} "
            f"| x{row['epoch_s'] / frozen:.1f} | {row['how']} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
