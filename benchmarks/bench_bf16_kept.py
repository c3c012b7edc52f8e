"""Time the tiled search with bf16 products at several numbers of kept candidates per row,
beside fp32 products, in turns in one process: the rows left to redo and the seconds.

    python benchmarks/bench_bf16_kept.py --n 20000 --kept 92,104,115
    python benchmarks/bench_bf16_kept.py --n 60000 --k 75 --kept 100,112,125 --rounds 1

Each kept value is one ``knn_heaps.iter_blocks(products="bf16", kept=...)`` run on the
benchmark data (``bench_data.clustered``, or ``--random`` unit vectors); the last column is
what ``bf16_candidates.bf16_plan`` chose for that data. Medians over the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench_data import clustered
from daalml.evaluation import bf16_candidates, knn_heaps


def search(x: torch.Tensor, k: int, kept: int | None) -> None:
    """One leave-one-out search; ``kept`` None: fp32 products."""
    products = "fp32" if kept is None else "bf16"
    list(knn_heaps.iter_blocks(x, x, k, exclude_self=True, products=products, kept=kept))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=69)
    parser.add_argument("--kept", default="92,104,115", help="comma-separated counts")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--random", action="store_true", help="unit vectors without classes")
    args = parser.parse_args()
    if args.random:
        gen = torch.Generator().manual_seed(0)
        x = torch.nn.functional.normalize(torch.randn(args.n, args.dim, generator=gen), dim=1)
    else:
        x = torch.from_numpy(clustered(args.n, args.dim, 50, 0)[0])
    runs: list[int | None] = [None, *(int(v) for v in args.kept.split(","))]
    redone: dict[int | None, list[int]] = {kept: [] for kept in runs}
    wall: dict[int | None, list[float]] = {kept: [] for kept in runs}
    cpu: dict[int | None, list[float]] = {kept: [] for kept in runs}
    finish = knn_heaps._finish
    current: list[int] = []

    def counting(*a, **kw):  # the redone rows of each finished block
        out = finish(*a, **kw)
        current.append(out[2].numel())
        return out

    knn_heaps._finish = counting
    search(x, args.k, runs[-1])  # warm-up: compilation, probes
    for _ in range(args.rounds):
        for kept in runs:
            current.clear()
            start, start_cpu = time.perf_counter(), time.process_time()
            search(x, args.k, kept)
            wall[kept].append(time.perf_counter() - start)
            cpu[kept].append(time.process_time() - start_cpu)
            redone[kept].append(sum(current))
    plan = bf16_candidates.bf16_plan(x, x, args.k, True)
    print(f"N = {args.n}, d = {args.dim}, k = {args.k}, {torch.get_num_threads()} threads;"
          f" bf16_plan chose {plan}; medians of {args.rounds} rounds")
    print("| products | kept | rows redone | wall s | CPU s |")
    print("|---|---:|---:|---:|---:|")
    for kept in runs:
        name = "fp32" if kept is None else "bf16"
        print(f"| {name} | {args.k + 1 if kept is None else kept} | {max(redone[kept])} |"
              f" {statistics.median(wall[kept]):.2f} | {statistics.median(cpu[kept]):.2f} |")


if __name__ == "__main__":
    main()
