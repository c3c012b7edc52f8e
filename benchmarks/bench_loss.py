"""DAAL forward+backward against PML's ProxyAnchorLoss and the raw products, side by side.

    python benchmarks/bench_loss.py [--batch 128,256,512] [--classes 100,1000,10000] [--dim 512]
        [--repeats 7] [--threads 1] [--device cpu|cuda] [--baseline-src /work/main/src]

Prints a markdown table of median milliseconds and the DAAL / Proxy-Anchor ratio, all measured in
this one process (timings drift about +-30% between runs on a shared machine). The raw products
of each loss (DAAL: two vertices per class, Proxy-Anchor: one proxy) are timed too, so that each
loss's own overhead (total minus its products) can be compared. ``--baseline-src`` also times
the DAALLoss of another source tree (e.g. the code before a change) in the same turns, and adds
its time and the ratio of this tree's DAAL to it: a change measured without the between-run
drift.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from collections.abc import Callable

import torch
from pytorch_metric_learning.losses import ProxyAnchorLoss

from daalml import DAALLoss


def interleaved_median_ms(
    steps: dict[str, Callable[[], None]], repeats: int, device: torch.device | None = None
) -> dict[str, float]:
    """Median wall time of each step, the steps taking turns so that machine load hits all alike.

    On a GPU each step is timed up to the end of its queued work (synchronised before and after).
    """

    def sync() -> None:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    for step in steps.values():
        step()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def loss_step(loss_fn: torch.nn.Module, embeddings: torch.Tensor, labels: torch.Tensor):
    def step() -> None:
        x = embeddings.detach().requires_grad_()
        loss_fn.zero_grad(set_to_none=True)
        loss_fn(x, labels).backward()

    return step


def products_step(embeddings: torch.Tensor, weights: torch.Tensor):
    """The unavoidable work: (B x d) @ (d x K) forward and its backward (K = 2C for DAAL's
    two vertices per class, C for Proxy-Anchor's one proxy)."""

    def step() -> None:
        x = embeddings.detach().requires_grad_()
        w = weights.detach().requires_grad_()
        (x @ w.T).sum().backward()

    return step


def baseline_daal(src: str) -> type[torch.nn.Module]:
    """DAALLoss of the daalml package under ``src``, imported next to this tree's one."""

    def ours() -> dict[str, object]:
        return {k: m for k, m in sys.modules.items() if k == "daalml" or k.startswith("daalml.")}

    current = ours()
    for key in current:
        del sys.modules[key]
    sys.path.insert(0, src)
    try:
        loaded = importlib.import_module("daalml.losses.daal")
        if not loaded.__file__.startswith(src):
            raise SystemExit(f"--baseline-src {src}: no daalml package there")
        return loaded.DAALLoss
    finally:
        sys.path.remove(src)
        for key in ours():
            del sys.modules[key]
        sys.modules.update(current)


def loss_table(
    batches: list[int],
    classes: list[int],
    dim: int,
    repeats: int,
    device: torch.device,
    baseline: type[torch.nn.Module] | None = None,
) -> list[str]:
    """Markdown rows: Proxy-Anchor, DAAL and the raw products, side by side, per (B, C)."""
    rows = [
        "| B | C | ProxyAnchor ms | DAAL ms | DAAL / PA | 2 products fwd+bwd ms "
        "| 1 product fwd+bwd ms | DAAL - 2 products ms | PA - 1 product ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    if baseline is not None:
        rows[0] += " baseline DAAL ms | DAAL / baseline |"
        rows[1] += "---|---|"
    for batch in batches:
        for num_classes in classes:
            embeddings = torch.randn(batch, dim, device=device)
            labels = torch.randint(0, num_classes, (batch,), device=device)
            daal = DAALLoss(num_classes, dim).to(device)
            proxy_anchor = ProxyAnchorLoss(num_classes, dim, margin=0.1, alpha=32).to(device)
            weights = torch.randn(2 * num_classes, dim, device=device)
            steps = {
                "pa": loss_step(proxy_anchor, embeddings, labels),
                "daal": loss_step(daal, embeddings, labels),
                "raw": products_step(embeddings, weights),
                "raw1": products_step(embeddings, weights[:num_classes]),
            }
            if baseline is not None:
                old = baseline(num_classes, dim).to(device)
                old.load_state_dict(daal.state_dict(), strict=False)  # the same vertices
                steps["old"] = loss_step(old, embeddings, labels)
            ms = interleaved_median_ms(
                steps, max(3, repeats if num_classes <= 1000 else repeats // 2), device
            )
            rows.append(
                f"| {batch} | {num_classes} | {ms['pa']:.2f} | {ms['daal']:.2f} "
                f"| {ms['daal'] / ms['pa']:.2f} | {ms['raw']:.2f} | {ms['raw1']:.2f} "
                f"| {ms['daal'] - ms['raw']:.2f} | {ms['pa'] - ms['raw1']:.2f} |"
            )
            if baseline is not None:
                rows[-1] += f" {ms['old']:.2f} | {ms['daal'] / ms['old']:.2f} |"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="128,256,512")
    parser.add_argument("--classes", default="100,1000,10000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--baseline-src", default=None, help="another tree's src/ to compare")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {where}, {torch.get_num_threads()} threads, d={args.dim}\n")
    batches = [int(b) for b in args.batch.split(",")]
    classes = [int(c) for c in args.classes.split(",")]
    baseline = baseline_daal(args.baseline_src) if args.baseline_src else None
    print("\n".join(loss_table(batches, classes, args.dim, args.repeats, device, baseline)))


if __name__ == "__main__":
    main()
