"""Time daalml.metrics against pytorch-metric-learning's AccuracyCalculator, side by side.

Both evaluate the same random clustered, L2-normalised embeddings in one process
(PML's L2 kNN on unit vectors ranks exactly like our cosine kNN). Per N, taking turns in
each of ``--repeats`` rounds (medians reported, with the spread; each ratio to PML or
to the floor also with the range of the rounds' own ratios): our full evaluation
(retrieval_metrics), PML's (AccuracyCalculator, k="max_bin_count", precision_at_1,
r_precision, mean_average_precision_at_r, NMI), the machine's GEMM floor (the one
N x N x d fp32 product, 1024 rows at a time, results discarded) and our k-means alone
(its share of the full time). Then the kNN search alone (daalml.metrics.knn vs PML's
FaissKNN; on CPU also the tiled path's previous threshold-scan merge, side by side with
the heap merge that now runs there). The check column compares the metrics with PML's, the neighbours with PML's,
and the backend that ran with the plain exact one (untimed). Prints the CPU features
found, torch's kernel level and the instruction-set caps set in the environment
(``ISA_CAPS``: with them this CPU stands in for an older one), the backend chosen, peak RSS;
a markdown table; asserts nothing.

A second table says where our time goes, each stage timed on its own in the same rounds:
the search, and for the tiled path its tile products alone (the tiles it multiplies,
shared among its workers as in the search) and, on a GPU, its sample thresholds, the rest
of the search (on CPU the faiss-heap merge, on a GPU the threshold scan; top-k, redone
rows) being the difference; k-means
seeding and Lloyd iterations (given the search's neighbour lists, as the evaluation runs
them; a line below the table times them without); the metrics from precomputed neighbours.
The k-means share is that of the evaluation's k-means (seeding and Lloyd with the lists).
Process CPU
seconds next to the wall time of the full evaluation and of the floor give a ratio that
other processes on a shared machine disturb less.

    python benchmarks/bench_metrics.py [--sizes 20000,60000] [--dim 512] [--per-class 50]
        [--repeats 3] [--skip-pml] [--skip-check] [--skip-floor] [--skip-knn-row]
        [--skip-stages] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import FaissKNN

from bench_data import clustered
from daalml.evaluation import gemm_dots as _gemm_dots
from daalml.evaluation import heap_kernels as _heap_kernels
from daalml.evaluation import kmeans as _kmeans
from daalml.evaluation import kmeans_neighbours as _kmeans_neighbours
from daalml.evaluation import knn_backends as _knn
from daalml.evaluation import knn_heaps as _knn_heaps
from daalml.evaluation import knn_tiles as _knn_blocks
from daalml.evaluation.clustering import _kmeans_seeds, _seed_rows, _seed_sample, nmi_later
from daalml.evaluation.ranking import _per_query, _summary
from daalml.metrics import knn, retrieval_metrics

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_description() -> str:
    """Model name and which of CPU_FLAGS /proc/cpuinfo lists (Linux; else torch's view)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
    flags = set()
    model = "unknown CPU"
    for line in info.splitlines():
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
        if line.startswith("model name") and model == "unknown CPU":
            model = line.split(":", 1)[1].strip()
    found = [f for f in CPU_FLAGS if f in flags]
    missing = [f for f in CPU_FLAGS if f not in flags]
    return f"{model}; has {', '.join(found) or 'none'}; lacks {', '.join(missing) or 'none'}"


ISA_CAPS = (
    "ATEN_CPU_CAPABILITY",
    "MKL_ENABLE_INSTRUCTIONS",
    "ONEDNN_MAX_CPU_ISA",
    "OPENBLAS_CORETYPE",
    "NUMBA_CPU_NAME",
)
"""Environment variables that make torch, MKL, oneDNN, faiss's OpenBLAS and numba (our merge
and proof kernels) use older kernels: set, they let this CPU stand in for an older one (an
AVX2-only CPU, say: ``NUMBA_CPU_NAME=haswell``). The faiss-cpu 1.15.1 wheel picks its SIMD level
at run time with no such variable; docs/performance.md measures what that leaves PML."""


def kernel_description() -> str:
    """torch's own kernel level and the instruction-set caps set in the environment."""
    caps = [f"{name}={os.environ[name]}" for name in ISA_CAPS if os.environ.get(name)]
    capped = f"; capped by {', '.join(caps)}" if caps else ""
    return f"torch kernels {torch.backends.cpu.get_cpu_capability()}{capped}"


Timed = tuple[object, float, float]


def timer(device: torch.device) -> Callable[[Callable[[], object]], Timed]:
    """A function's result, wall seconds and this process's CPU seconds (all threads)."""

    def timed(fn: Callable[[], object]) -> Timed:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, cpu = time.perf_counter(), time.process_time()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out, time.perf_counter() - start, time.process_time() - cpu

    return timed


def in_turns(
    repeats: int, fns: dict[str, Callable[[], object]], device: torch.device
) -> tuple[dict[str, object], dict[str, list[float]], dict[str, list[float]]]:
    """Last result, all wall times and all CPU times of each function, taking turns."""
    timed = timer(device)
    out: dict[str, object] = {}
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            out[name], t, c = timed(fn)
            times[name].append(t)
            cpu[name].append(c)
    return out, times, cpu


def med(ts: list[float]) -> str:
    """Median, and the range when there is more than one run."""
    m = statistics.median(ts)
    return f"{m:.2f}" if len(ts) == 1 else f"{m:.2f} ({min(ts):.2f}-{max(ts):.2f})"


def ratio_cell(ours: list[float], theirs: list[float]) -> str:
    """Median over median and, with several rounds, the range of the rounds' own ratios
    (each round times both back to back, so a machine that drifts between rounds moves
    both: the per-round ratios spread less than the times)."""
    text = f"{statistics.median(ours) / statistics.median(theirs):.2f}"
    if len(ours) > 1:
        by_round = [a / b for a, b in zip(ours, theirs, strict=True)]
        text += f" (rounds {min(by_round):.2f}-{max(by_round):.2f})"
    return text


def gemm_floor(x: torch.Tensor) -> None:
    """The one N x N x d fp32 product, 1024 rows at a time (each block discarded)."""
    for start in range(0, x.shape[0], 1024):
        x[start : start + 1024] @ x.T


def _block(x: torch.Tensor) -> int:
    return _knn_blocks.CUDA_BLOCK if x.device.type == "cuda" else _knn_blocks.CPU_BLOCK


def tile_products(x: torch.Tensor) -> None:
    """The tiled leave-one-out search's products alone: the tiles on and above the diagonal,
    shared among its workers as the search shares them (each worker the column blocks
    ``knn_heaps.owner`` deals it, sweep after sweep, with no join between sweeps; results
    discarded). bf16 ``x`` gives the bf16 path's products (with their conversion to fp32)."""
    bounds = _knn_blocks.block_bounds(x.shape[0], _block(x))
    n_blocks = len(bounds) - 1
    with _knn_blocks.worker_pool(x.device) as (pool, workers):

        def part(w: int) -> None:
            for i in range(n_blocks):
                x_i = x[bounds[i] : bounds[i + 1]]
                for j in range(i, n_blocks):
                    if _knn_heaps.owner(j, workers) == w:
                        _knn_blocks.tile_product(x_i, x[bounds[j] : bounds[j + 1]]).float()

        list(pool.map(part, range(workers)))


def sample_thresholds(x: torch.Tensor, k: int) -> None:
    """The tiled search's first stage alone: every query's threshold from the sample."""
    sample, block = _knn_blocks._sample(x, k), _block(x)
    with _knn_blocks.worker_pool(x.device) as (pool, _):
        starts = range(0, x.shape[0], block)
        list(pool.map(lambda s: _knn_blocks._thresholds(x[s : s + block], s, sample, True), starts))


def as_in_search(device: torch.device, fn: Callable[[], object]) -> object:
    """``fn`` with torch's threads as the search sets them while the metrics of its blocks
    are computed between them (one on CPU: the search's worker pool is open)."""
    with _knn_blocks.worker_pool(device):
        return fn()


def neighbour_lists(xt: torch.Tensor, k: int) -> _kmeans_neighbours.NeighbourLists | None:
    """The search's lists, as retrieval_metrics hands them to Lloyd (None where it does not)."""
    if not _kmeans_neighbours.keeps(xt, k):
        return None
    blocks = _knn.iter_knn(xt, xt, k, exclude_self=True, chunk_size=1024, backend="auto")
    passing, lists = _kmeans_neighbours.collect(blocks, xt.shape[0], k)
    for _ in passing:
        pass
    return lists


def stage_fns(
    xt: torch.Tensor,
    yt: torch.Tensor,
    k: int,
    backend: str,
    lists: _kmeans_neighbours.NeighbourLists | None,
) -> dict[str, Callable[[], object]]:
    """Our evaluation's stages, each on its own (see the module docstring); Lloyd with the
    search's lists, as in the evaluation, and without them ("lloyd-alone")."""
    n_classes = int(torch.unique(yt).numel())
    sample, picked = _seed_sample(xt, n_classes, 0)
    seeds = _kmeans_seeds(xt, n_classes, 0)
    seed_rows = _seed_rows(seeds.cpu().numpy(), sample, picked)
    _, inverse, counts = torch.unique(yt, return_inverse=True, return_counts=True)
    r_per_query = counts[inverse] - 1
    blocks = list(_knn.iter_knn(xt, xt, k, exclude_self=True, chunk_size=1024, backend="auto"))
    fns: dict[str, Callable[[], object]] = {
        "search": lambda: knn(xt, xt, k, exclude_self=True),
        "seeding": lambda: _kmeans_seeds(xt, n_classes, 0),
        "lloyd": lambda: _kmeans.lloyd(xt, seeds, 20, 0, neighbours=lists, seed_rows=seed_rows),
        "lloyd-alone": lambda: _kmeans.lloyd(xt, seeds, 20, 0),
        "metrics": lambda: as_in_search(
            xt.device,
            lambda: _summary(
                _per_query(iter(blocks), yt, yt, r_per_query, padded=False),
                r_per_query > 0,
                [1, 2, 4, 8],
            ),
        ),
    }
    if backend == "tiled-bf16":
        unit16 = torch.nn.functional.normalize(xt, dim=1).bfloat16()
        fns["products"] = lambda: tile_products(unit16)
    if backend == "tiled":
        fns["products"] = lambda: tile_products(xt)
        if xt.device.type != "cpu":  # the heap merge on CPU needs no thresholds
            fns["thresholds"] = lambda: sample_thresholds(xt, k)
    return fns


def merge_description() -> str:
    """Which merge kernels the CPU's tiled path has: numba's version, or why the scan runs."""
    if not _heap_kernels.AVAILABLE:
        return "numba not installed: the threshold scan runs instead"
    import numba

    return f"numba {numba.__version__}"


def path_name(backend: str, device: torch.device) -> str:
    """The backend and, for the tiled ones, how their tiles are made and merged here."""
    if backend == "tiled-bf16":
        return "tiled (heaps, bf16 products)"
    if backend != "tiled":
        return backend
    heaps = device.type == "cpu" and _heap_kernels.AVAILABLE
    return "tiled (heaps)" if heaps else "tiled (scan)"


def products_description(dim: int, device: torch.device) -> str:
    """Whether the tiled path's products may be bf16 here, and the GEMM order found."""
    if device.type != "cpu":
        return "tiled products: fp32 (not a CPU)"
    if _knn.bf16_speedup() < _knn.BF16_TILES_MIN_SPEEDUP:
        return f"tiled products: fp32 (bf16 matmul under {_knn.BF16_TILES_MIN_SPEEDUP}x fp32)"
    bounds = _gemm_dots.split(dim)
    if bounds is None:
        return f"tiled products: fp32 (this GEMM's order of additions not found for d={dim})"
    return (
        f"tiled products: bf16, rescored in the fp32 GEMM's order"
        f" (d={dim} added in blocks {bounds.tolist()})"
    )


def stage_rows(
    head: str, times: dict[str, list[float]], cpu: dict[str, list[float]], lloyd_iters: int
) -> list[str]:
    """Rows of the where-the-time-goes table, wall and process CPU seconds (medians, with
    each stage's share of the full evaluation in the same clock)."""
    rows = []
    for clock, ts in (("wall", times), ("CPU", cpu)):
        m = {name: statistics.median(t) for name, t in ts.items()}
        if "products" in m:
            m["rest"] = m["search"] - m["products"] - m.get("thresholds", 0.0)
        full = m["ours"]

        def cell(name: str, m: dict[str, float] = m, full: float = full) -> str:
            return f"{m[name]:.2f} ({m[name] / full:.0%})" if name in m else "-"

        floor, ratio = "-", "-"
        if "floor" in m:
            floor, ratio = f"{m['floor']:.2f}", f"{full / m['floor']:.2f}"
        rows.append(
            f"{head} {clock} | {full:.2f} | {floor} | {ratio} | {cell('search')} |"
            f" {cell('products')} | {cell('thresholds')} | {cell('rest')} | {cell('seeding')} |"
            f" {cell('lloyd')}, {lloyd_iters} it | {cell('metrics')} |"
        )
    return rows


STAGE_HEADER = (
    "| N | path | clock | full s | GEMM floor s | full / floor | search | tile products |"
    " thresholds | scan or heaps + merge (rest) | k-means seeding | Lloyd | metrics |"
    "\n|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def pml_calculator() -> AccuracyCalculator:
    return AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r", "NMI"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )


def warm_up(dim: int, per_class: int, seed: int, device: torch.device, pml: bool) -> None:
    """One untimed call of each library on 4096 points (pools, faiss, our probe)."""
    x, y = clustered(4096, dim, per_class, seed + 1)
    xt = torch.from_numpy(x).to(device)
    retrieval_metrics(xt, torch.from_numpy(y).to(device))
    knn(xt, xt, 10, exclude_self=True)
    gemm_floor(xt)
    if pml:
        pml_calculator().get_accuracy(x, y)
        FaissKNN()(torch.from_numpy(x), 10, torch.from_numpy(x), True)


def bench(n: int, args: argparse.Namespace, device: torch.device) -> tuple[list[str], list[str]]:
    """Markdown rows (full evaluation, kNN only) and the stage row for one dataset size."""
    x, y = clustered(n, args.dim, args.per_class, args.seed)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    k = int(np.bincount(y).max()) - 1
    backend = _knn.resolve_backend(
        "auto", device, n * n, n_gallery=n, k=max(k, 8), symmetric=True, dim=args.dim
    )
    calc = pml_calculator()
    fns: dict[str, Callable[[], object]] = {"ours": lambda: retrieval_metrics(xt, yt)}
    if not args.skip_pml:
        fns["pml"] = lambda: calc.get_accuracy(x, y)
    if not args.skip_floor:
        fns["floor"] = lambda: gemm_floor(xt)
    lists = neighbour_lists(xt, k)
    fns["kmeans"] = lambda: nmi_later(xt, yt, 0, 20)(lists)
    if not args.skip_stages:
        fns.update(stage_fns(xt, yt, k, backend, lists))
    out, times, cpu = in_turns(args.repeats, fns, device)
    ours = out["ours"]
    t_ours = statistics.median(times["ours"])
    floor_cols = "- | - |"
    if not args.skip_floor:
        floor_cols = f"{med(times['floor'])} | {ratio_cell(times['ours'], times['floor'])} |"
    share = statistics.median(times["kmeans"]) / t_ours
    n_classes = len(np.unique(y))
    path = path_name(backend, device)
    head = f"| {n} | {n_classes} | {path} |"
    stages: list[str] = []
    if not args.skip_stages:
        stages = stage_rows(f"| {n} | {path} |", times, cpu, out["lloyd"][1])
        alone = statistics.median(times["lloyd-alone"])
        stages.append(
            f"| {n} | {path} | Lloyd without the search's lists (wall) | | | | | | | | |"
            f" {alone:.2f}, {out['lloyd-alone'][1]} it | |"
        )
    if args.skip_pml:
        pml_cols, check = "- | - |", f"NMI {ours['nmi']:.4f}"
    else:
        pml = out["pml"]
        diff = max(
            abs(ours["recall@1"] - pml["precision_at_1"]),
            abs(ours["r_precision"] - pml["r_precision"]),
            abs(ours["map@r"] - pml["mean_average_precision_at_r"]),
        )
        pml_cols = f"{med(times['pml'])} | {ratio_cell(times['ours'], times['pml'])} |"
        check = f"max diff {diff:.1e}; NMI {ours['nmi']:.4f} vs {pml['NMI']:.4f}"
    rows = [
        f"{head} full | {med(times['ours'])} | {pml_cols} {floor_cols} {share:.0%} | {check} |"
    ]
    if args.skip_pml or args.skip_knn_row:
        return rows, stages
    xc = torch.from_numpy(x)
    knn_fns = {
        "ours": lambda: knn(xt, xt, k, exclude_self=True),
        "pml": lambda: FaissKNN()(xc, k, xc, True),
    }
    if path == "tiled (heaps)":  # the CPU's previous merge, side by side
        unit = torch.nn.functional.normalize(xt, dim=1)
        knn_fns["scan"] = lambda: list(_knn_blocks.iter_blocks(unit, unit, k, exclude_self=True))
    if backend == "tiled-bf16":  # the fp32 products, side by side
        knn_fns["fp32"] = lambda: knn(xt, xt, k, exclude_self=True, backend="tiled")
    out, times, _ = in_turns(args.repeats, knn_fns, device)
    (_, idx_ours), (_, idx_pml) = out["ours"], out["pml"]
    same = float((idx_ours.cpu() == idx_pml).float().mean())
    check = f"same neighbour as PML {same:.4%}"
    if not args.skip_check:
        exact = knn(xt, xt, k, exclude_self=True, backend="exact")
        check += f"; {backend} = exact: {torch.equal(exact[1], idx_ours)}"
    t_ours, t_pml = statistics.median(times["ours"]), statistics.median(times["pml"])
    rows.append(
        f"{head} kNN k={k} | {med(times['ours'])} | {med(times['pml'])} |"
        f" {ratio_cell(times['ours'], times['pml'])} | | | | {check} |"
    )
    # the other merge or products, side by side: (timing, path, what the ratio compares)
    for name, other, ratio in (("fp32", "tiled (heaps)", "bf16 / fp32 products"),
                               ("scan", "tiled (scan)", "heaps / scan")):
        if name in times:
            t_other = statistics.median(times[name])
            rows.append(
                f"| {n} | {n_classes} | {other} | kNN k={k} | {med(times[name])} |"
                f" {med(times['pml'])} | {t_other / t_pml:.2f} | | | | {ratio}"
                f" {t_ours / t_other:.2f} |"
            )
    return rows, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="20000,60000", help="comma-separated N values")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--per-class", type=int, default=50, help="mean samples per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians reported")
    parser.add_argument("--skip-pml", action="store_true", help="time ours only (large N)")
    parser.add_argument("--skip-check", action="store_true", help="no exact-backend check")
    parser.add_argument("--skip-floor", action="store_true", help="no GEMM floor timing")
    parser.add_argument("--skip-knn-row", action="store_true", help="no kNN-only comparison")
    parser.add_argument("--skip-stages", action="store_true", help="no per-stage breakdown")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    device = torch.device(args.device)
    logging.getLogger("PML").setLevel(logging.WARNING)

    print(f"CPU: {cpu_description()}; {kernel_description()}")
    print(products_description(args.dim, device))
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device};"
        f" bf16/fp32 matmul speedup probe {_knn.bf16_speedup():.2f}x;"
        f" d={args.dim}, ~{args.per_class} samples/class, {args.repeats} rounds, medians"
    )
    warm_up(args.dim, args.per_class, args.seed, device, not args.skip_pml)
    print(
        "PML: FaissKNN (IndexFlatL2), FaissKMeans(niter=20, random seeding). daalml: backend"
        " 'auto' -> the path column; k-means: faiss k-means++ seeds on a subsample, <= 20"
        " Lloyd iterations with torch GEMMs. tiled (heaps): the CPU merge's compiled kernels"
        f" ({merge_description()}).\n"
    )
    print(
        "| N | classes | path | what | daalml s | PML s | daalml / PML | GEMM floor s |"
        " daalml / floor | k-means share | check |"
    )
    print("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|")
    where: list[str] = []
    for n in sizes:
        rows, stages = bench(n, args, device)
        print("\n".join(rows), flush=True)
        where.extend(stages)
    if not args.skip_stages:
        print(
            "\nWhere our time goes (medians of wall and of process CPU seconds; % of our full"
            " evaluation in the same clock; the stages are timed on their own, so they need"
            " not add up to the full time):\n"
        )
        print(STAGE_HEADER)
        print("\n".join(where))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\npeak RSS of this process: {peak:.2f} GB")


if __name__ == "__main__":
    main()
