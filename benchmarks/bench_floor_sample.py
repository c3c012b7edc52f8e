"""The CPU heap merge's floor sample: search time per sample fraction, side by side.

    python benchmarks/bench_floor_sample.py [--sizes 20000,60000] [--fractions 16,32,64,128,256]
        [--dim 512] [--per-class 50] [--repeats 2]

The heaps (``daalml.evaluation.knn_heaps``) start at per-row floors read off a 1/fraction
gallery sample: a denser sample costs a larger product (N^2 d / fraction multiply-adds), a
sparser one gives lower floors, so more heap updates. For each N, in each round, the exact
leave-one-out search runs once per fraction on bench_metrics' clustered unit vectors (k as
bench_metrics: the largest class, "max_bin_count"); prints medians of wall and process CPU
seconds, the fraction used (clamped to at least SAMPLE_MIN columns), the threshold rank, and checks the neighbours agree. Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bench_metrics import clustered
from daalml.evaluation import knn_heaps
from daalml.evaluation.knn_tiles import sample_rank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,60000")
    parser.add_argument("--fractions", default="16,32,64,128,256")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    fractions = [int(f) for f in args.fractions.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; d={args.dim}")
    print("\n| N | k | fraction | sample rank | wall s | CPU s | same neighbours |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    default = knn_heaps.FLOOR_SAMPLE_FRACTION
    for n in (int(s) for s in args.sizes.split(",")):
        x, labels = clustered(n, args.dim, args.per_class, seed=0)
        k = int(np.bincount(labels).max()) - 1  # the largest class but the query itself
        emb = torch.nn.functional.normalize(torch.from_numpy(x), dim=1)
        times: dict[int, list[tuple[float, float]]] = {f: [] for f in fractions}
        same: dict[int, bool] = dict.fromkeys(fractions, True)
        used: dict[int, int] = {}
        reference: torch.Tensor | None = None
        try:
            for _ in range(args.repeats):
                for f in fractions:
                    knn_heaps.FLOOR_SAMPLE_FRACTION = f
                    used[f] = knn_heaps.floor_fraction(n)  # clamped for small galleries
                    start, cpu = time.perf_counter(), time.process_time()
                    blocks = knn_heaps.iter_blocks(emb, emb, k, exclude_self=True)
                    idx = torch.cat([b[2] for b in blocks])
                    times[f].append((time.perf_counter() - start, time.process_time() - cpu))
                    reference = idx if reference is None else reference
                    same[f] = same[f] and torch.equal(idx, reference)
        finally:
            knn_heaps.FLOOR_SAMPLE_FRACTION = default
        for f in fractions:
            wall = statistics.median(t for t, _ in times[f])
            cpu_s = statistics.median(c for _, c in times[f])
            print(
                f"| {n} | {k} | {used[f]} | {sample_rank(k + 1, used[f])} | {wall:.2f} "
                f"| {cpu_s:.2f} | {same[f]} |"
            )


if __name__ == "__main__":
    main()
