"""Time daalml.metrics against pytorch-metric-learning's AccuracyCalculator, side by side.

Both evaluate the same random clustered, L2-normalised embeddings in one process
(PML's L2 kNN on unit vectors ranks exactly like our cosine kNN). Two comparisons per N:
the full evaluation (retrieval_metrics vs AccuracyCalculator with k="max_bin_count" and
precision_at_1, r_precision, mean_average_precision_at_r, NMI) and the kNN search alone
(daalml.metrics.knn vs PML's FaissKNN). Prints a markdown table; asserts nothing.

    python benchmarks/bench_metrics.py [--sizes 5000,20000,60000] [--dim 512] [--per-class 50]
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import FaissKNN

from daalml.metrics import knn, retrieval_metrics

T = TypeVar("T")


def clustered(n: int, dim: int, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around n // per_class random centres, noisy enough for recall@1 < 1."""
    rng = np.random.default_rng(seed)
    n_classes = max(1, n // per_class)
    labels = rng.integers(0, n_classes, size=n)
    centres = rng.standard_normal((n_classes, dim)).astype(np.float32)
    x = centres[labels] + rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench(n: int, dim: int, per_class: int, seed: int) -> list[str]:
    """Two markdown rows (full evaluation, kNN only) for one dataset size."""
    x, y = clustered(n, dim, per_class, seed)
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r", "NMI"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )
    ours, t_ours = timed(lambda: retrieval_metrics(x, y))
    pml, t_pml = timed(lambda: calc.get_accuracy(x, y))
    diff = max(
        abs(ours["recall@1"] - pml["precision_at_1"]),
        abs(ours["r_precision"] - pml["r_precision"]),
        abs(ours["map@r"] - pml["mean_average_precision_at_r"]),
    )
    k = int(np.bincount(y).max()) - 1
    xt = torch.from_numpy(x)
    (_, idx_ours), t_knn_ours = timed(lambda: knn(xt, xt, k, exclude_self=True))
    (_, idx_pml), t_knn_pml = timed(lambda: FaissKNN()(xt, k, xt, True))
    same = float((idx_ours == idx_pml).float().mean())
    n_classes = len(np.unique(y))
    head = f"| {n} | {n_classes} |"
    return [
        f"{head} full | {t_ours:.2f} | {t_pml:.2f} | {t_pml / t_ours:.2f}x |"
        f" max diff {diff:.1e}; NMI {ours['nmi']:.4f} vs {pml['NMI']:.4f} |",
        f"{head} kNN k={k} | {t_knn_ours:.2f} | {t_knn_pml:.2f} | {t_knn_pml / t_knn_ours:.2f}x |"
        f" same neighbour {same:.4%} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5000,20000,60000", help="comma-separated N values")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--per-class", type=int, default=50, help="mean samples per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    logging.getLogger("PML").setLevel(logging.WARNING)

    print(f"d={args.dim}, ~{args.per_class} samples/class, torch threads {torch.get_num_threads()}")
    print("PML: FaissKNN (IndexFlatL2), FaissKMeans(niter=20, random seeding);")
    print("daalml: chunked torch matmul + topk, faiss k-means++ seeding, <= 100 iterations.\n")
    print("| N | classes | what | daalml s | PML s | PML / daalml | check |")
    print("|---:|---:|---|---:|---:|---:|---|")
    for n in sizes:
        for row in bench(n, args.dim, args.per_class, args.seed):
            print(row, flush=True)


if __name__ == "__main__":
    main()
