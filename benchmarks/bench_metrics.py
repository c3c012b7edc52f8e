"""Time daalml.metrics against pytorch-metric-learning's AccuracyCalculator, side by side.

Both evaluate the same random clustered, L2-normalised embeddings in one process
(PML's L2 kNN on unit vectors ranks exactly like our cosine kNN). Two comparisons per N:
the full evaluation (retrieval_metrics vs AccuracyCalculator with k="max_bin_count" and
precision_at_1, r_precision, mean_average_precision_at_r, NMI) and the kNN search alone
(daalml.metrics.knn vs PML's FaissKNN). Each library is called once on a small set first,
untimed (thread pools, faiss and oneDNN setup, our once-per-process bf16 probe); then each
timing is the best of ``--repeats`` runs, ours and PML's alternating. The check
column compares the metrics with PML's, the neighbours with PML's, and our bf16 and exact
backends with each other (untimed). Prints a markdown table; asserts nothing.

    python benchmarks/bench_metrics.py [--sizes 5000,20000,60000] [--dim 512] [--per-class 50]
        [--repeats 3]
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

from daalml._knn import resolve_backend
from daalml.metrics import knn, retrieval_metrics

T = TypeVar("T")
U = TypeVar("U")


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


def best_of(
    repeats: int, ours: Callable[[], T], theirs: Callable[[], U]
) -> tuple[T, float, U, float]:
    """Both results and the best time of each over ``repeats`` alternating runs."""
    t_ours = t_theirs = float("inf")
    for _ in range(repeats):
        out_ours, t = timed(ours)
        t_ours = min(t_ours, t)
        out_theirs, t = timed(theirs)
        t_theirs = min(t_theirs, t)
    return out_ours, t_ours, out_theirs, t_theirs


def pml_calculator() -> AccuracyCalculator:
    return AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r", "NMI"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )


def warm_up(dim: int, per_class: int, seed: int) -> None:
    """One untimed call of each library on 2048 points."""
    x, y = clustered(2048, dim, per_class, seed + 1)
    retrieval_metrics(x, y)
    pml_calculator().get_accuracy(x, y)
    xt = torch.from_numpy(x)
    knn(xt, xt, 10, exclude_self=True)
    FaissKNN()(xt, 10, xt, True)


def bench(n: int, dim: int, per_class: int, seed: int, repeats: int) -> list[str]:
    """Two markdown rows (full evaluation, kNN only) for one dataset size."""
    x, y = clustered(n, dim, per_class, seed)
    calc = pml_calculator()
    ours, t_ours, pml, t_pml = best_of(
        repeats, lambda: retrieval_metrics(x, y), lambda: calc.get_accuracy(x, y)
    )
    diff = max(
        abs(ours["recall@1"] - pml["precision_at_1"]),
        abs(ours["r_precision"] - pml["r_precision"]),
        abs(ours["map@r"] - pml["mean_average_precision_at_r"]),
    )
    k = int(np.bincount(y).max()) - 1
    xt = torch.from_numpy(x)
    (_, idx_ours), t_knn_ours, (_, idx_pml), t_knn_pml = best_of(
        repeats, lambda: knn(xt, xt, k, exclude_self=True), lambda: FaissKNN()(xt, k, xt, True)
    )
    same = float((idx_ours == idx_pml).float().mean())
    kwargs = {"exclude_self": True, "chunk_size": 1024}
    exact = knn(xt, xt, k, backend="exact", **kwargs)
    bf16 = knn(xt, xt, k, backend="bf16", **kwargs)
    backends_equal = torch.equal(exact[1], bf16[1]) and torch.equal(exact[0], bf16[0])
    n_classes = len(np.unique(y))
    head = f"| {n} | {n_classes} |"
    return [
        f"{head} full | {t_ours:.2f} | {t_pml:.2f} | {t_pml / t_ours:.2f}x |"
        f" max diff {diff:.1e}; NMI {ours['nmi']:.4f} vs {pml['NMI']:.4f} |",
        f"{head} kNN k={k} | {t_knn_ours:.2f} | {t_knn_pml:.2f} | {t_knn_pml / t_knn_ours:.2f}x |"
        f" same neighbour as PML {same:.4%}; bf16 = exact: {backends_equal} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5000,20000,60000", help="comma-separated N values")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--per-class", type=int, default=50, help="mean samples per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side; best kept")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    logging.getLogger("PML").setLevel(logging.WARNING)

    print(
        f"d={args.dim}, ~{args.per_class} samples/class, torch threads {torch.get_num_threads()},"
        f" best of {args.repeats} runs"
    )
    warm_up(args.dim, args.per_class, args.seed)
    backends = {n: resolve_backend("auto", torch.device("cpu"), n * n) for n in sizes}
    print("PML: FaissKNN (IndexFlatL2), FaissKMeans(niter=20, random seeding);")
    print(
        f"daalml: exact chunked kNN, backend 'auto' -> {backends}; faiss k-means,"
        " k-means++ seeding on a subsample, <= 20 iterations.\n"
    )
    print("| N | classes | what | daalml s | PML s | PML / daalml | check |")
    print("|---:|---:|---|---:|---:|---:|---|")
    for n in sizes:
        for row in bench(n, args.dim, args.per_class, args.seed, args.repeats):
            print(row, flush=True)


if __name__ == "__main__":
    main()
