"""DAAL forward+backward against PML's ProxyAnchorLoss and the raw products, side by side.

    python benchmarks/bench_loss.py [--batch 128,256,512] [--classes 100,1000,10000] [--dim 512]

Prints a markdown table of median milliseconds and the DAAL / Proxy-Anchor ratio, all measured in
this one process (timings drift about +-30% between runs on a shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from pytorch_metric_learning.losses import ProxyAnchorLoss

from daalml import DAALLoss


def interleaved_median_ms(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median wall time of each step, the steps taking turns so that machine load hits all alike."""
    for step in steps.values():
        step()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def loss_step(loss_fn: torch.nn.Module, embeddings: torch.Tensor, labels: torch.Tensor):
    def step() -> None:
        x = embeddings.detach().requires_grad_()
        loss_fn.zero_grad(set_to_none=True)
        loss_fn(x, labels).backward()

    return step


def products_step(embeddings: torch.Tensor, weights: torch.Tensor):
    """The unavoidable work: (B x d) @ (d x 2C) forward and its backward."""

    def step() -> None:
        x = embeddings.detach().requires_grad_()
        w = weights.detach().requires_grad_()
        (x @ w.T).sum().backward()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="128,256,512")
    parser.add_argument("--classes", default="100,1000,10000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, d={args.dim}\n")
    print("| B | C | ProxyAnchor ms | DAAL ms | DAAL / PA | 2 products fwd+bwd ms |")
    print("|---|---|---|---|---|---|")
    for batch in map(int, args.batch.split(",")):
        for classes in map(int, args.classes.split(",")):
            embeddings = torch.randn(batch, args.dim)
            labels = torch.randint(0, classes, (batch,))
            daal = DAALLoss(classes, args.dim)
            proxy_anchor = ProxyAnchorLoss(classes, args.dim, margin=0.1, alpha=32)
            repeats = max(3, args.repeats if classes <= 1000 else args.repeats // 2)
            ms = interleaved_median_ms(
                {
                    "pa": loss_step(proxy_anchor, embeddings, labels),
                    "daal": loss_step(daal, embeddings, labels),
                    "raw": products_step(embeddings, torch.randn(2 * classes, args.dim)),
                },
                repeats,
            )
            pa_ms, daal_ms, raw_ms = ms["pa"], ms["daal"], ms["raw"]
            print(
                f"| {batch} | {classes} | {pa_ms:.1f} | {daal_ms:.1f} | {daal_ms / pa_ms:.2f} "
                f"| {raw_ms:.1f} |"
            )


if __name__ == "__main__":
    main()
