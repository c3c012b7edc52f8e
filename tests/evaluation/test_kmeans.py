"""Tests for daalml.evaluation.kmeans: the bounded Lloyd gives the plain loop's labels and
iteration count, bit for bit, while skipping the points its bounds prove."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import daalml.evaluation.kmeans as KM
import daalml.evaluation.kmeans_bf16 as KB
from daalml.evaluation.clustering import _kmeans_seeds


def both(x: torch.Tensor, seeds: torch.Tensor, niter: int = 20) -> list[int]:
    """Asserts the bounded Lloyd, with and without bf16 proofs, and the plain one agree;
    returns the bounded one's rows computed (without bf16 proofs)."""
    plain, plain_iters, plain_rows = KM._lloyd(x, seeds, niter, 0, bounded=False)
    fast, fast_iters, rows = KM._lloyd(x, seeds, niter, 0, bounded=True)
    assert torch.equal(fast, plain) and fast_iters == plain_iters
    assert plain_rows == [x.shape[0]] * len(rows)
    if x.dtype == torch.float32 and KB.heap_kernels.AVAILABLE:
        proved, proved_iters, _ = KM._lloyd(x, seeds, niter, 0, bounded=True, bf16=True)
        assert torch.equal(proved, plain) and proved_iters == plain_iters
    return rows


def clustered_with_classes(
    n: int, dim: int, per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The benchmarks' data (``benchmarks/bench_data.py``: unit vectors around random class
    centres) and their classes."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_data.py"
    spec = importlib.util.spec_from_file_location("bench_data", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.clustered(n, dim, per_class, seed)


def clustered(n: int, dim: int, per_class: int, seed: int) -> np.ndarray:
    """The benchmarks' data alone (see :func:`clustered_with_classes`)."""
    return clustered_with_classes(n, dim, per_class, seed)[0]


@pytest.mark.parametrize(("n", "dim", "seed"), [(3000, 64, 0), (2000, 512, 1), (1500, 32, 2)])
def test_bounded_lloyd_on_benchmark_data(n: int, dim: int, seed: int) -> None:
    x = F.normalize(torch.from_numpy(clustered(n, dim, 50, seed)), dim=1).contiguous()
    rows = both(x, _kmeans_seeds(x, n // 50, seed))
    assert KM._bounds_hold(x) and rows[0] == n
    assert min(rows) < n // 10  # the bounds skip most points once the clusters settle


def test_bounded_lloyd_pads_a_few_unproved_rows() -> None:
    x = F.normalize(torch.from_numpy(clustered(800, 64, 40, 3)), dim=1).contiguous()
    rows = both(x, _kmeans_seeds(x, 20, 3))
    assert any(0 < r < KM.GEMM_MIN_ROWS for r in rows)


def test_bounded_lloyd_with_duplicates_and_exact_ties() -> None:
    # Small integers: every fp32 score is exact, so equidistant points tie exactly.
    gen = torch.Generator().manual_seed(0)
    base = torch.randint(-2, 3, (60, 6), generator=gen).float()
    x = torch.cat([base, base, base[:20]]).contiguous()  # exact duplicates
    seeds = torch.zeros(4, 6)
    seeds[0, 0], seeds[1, 0], seeds[2, 1], seeds[3, 1] = 1, -1, 2, -2  # x[:, 0] = 0 ties 0, 1
    labels = KM.assign(x, seeds)
    s = x @ seeds.T - 0.5 * (seeds * seeds).sum(1)
    assert ((s == s.max(1, keepdim=True).values).sum(1) > 1).any()  # ties present
    assert torch.equal(labels, torch.from_numpy(s.numpy().argmax(1)))  # to the lower index
    both(x, seeds)


def split_case(monkeypatch: pytest.MonkeyPatch) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Five separated blobs, three seeds far from every point (their clusters empty, so
    split), and the list the spied ``reassign_centroids`` appends its split counts to."""
    splits: list[int] = []
    split = KM.reassign_centroids

    def spy(*args: object) -> int:
        splits.append(split(*args))
        return splits[-1]

    monkeypatch.setattr(KM, "reassign_centroids", spy)
    gen = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(300, 8, generator=gen) + 4 * i for i in range(5)])
    seeds = torch.cat([x[[0, 300, 600]], torch.full((3, 8), 100.0)])  # three get no point
    return x, seeds, splits


def test_bounded_lloyd_splits_empty_clusters(monkeypatch: pytest.MonkeyPatch) -> None:
    x, seeds, splits = split_case(monkeypatch)
    rows = both(x, seeds)
    assert sum(splits) >= 3 and min(rows) < x.shape[0]


def test_bounded_lloyd_on_euclidean_data_far_from_the_origin() -> None:
    # Non-unit rows of norms 0.01 to 100 around an offset of 50: large |x| |c| against small
    # score gaps, where fp32 rounding exceeds real-arithmetic differences for some points.
    gen = torch.Generator().manual_seed(2)
    centres = 3 * torch.randn(12, 16, generator=gen)
    y = torch.randint(0, 12, (2400,), generator=gen)
    scale = 10 ** (4 * torch.rand(2400, 1, generator=gen) - 2)
    x = (50 + scale * (centres[y] + torch.randn(2400, 16, generator=gen))).contiguous()
    both(x, x[torch.randperm(2400, generator=gen)[:12]])
    z = (1000 + 0.01 * torch.randn(1000, 8, generator=gen)).contiguous()  # rounding dominates
    both(z, z[:10].clone())


@pytest.mark.parametrize("n", [1, 2, 7, 15])
def test_tiny_sets_use_the_plain_loop(n: int) -> None:
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(n))
    assert not KM._bounds_hold(x)
    seeds = x[: min(n, 3)].clone()
    assert torch.equal(KM.lloyd(x, seeds, 20, 0)[0], KM._lloyd(x, seeds, 20, 0, False)[0])


def test_one_cluster_is_label_zero() -> None:
    x = torch.randn(100, 4, generator=torch.Generator().manual_seed(0))
    assert both(x, x[:1].clone()) == [0, 0]


def test_bounded_lloyd_with_two_workers() -> None:
    x = F.normalize(torch.from_numpy(clustered(2500, 64, 50, 4)), dim=1).contiguous()
    seeds = _kmeans_seeds(x, 50, 4)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # two worker threads, blocks split between them
    try:
        both(x, seeds)
    finally:
        torch.set_num_threads(threads)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(16, 400),
    dim=st.integers(1, 24),
    k=st.integers(2, 12),
    grid=st.booleans(),
    offset=st.sampled_from([0.0, 1.0, 30.0]),
    copies=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_bounded_lloyd_equals_plain(
    n: int, dim: int, k: int, grid: bool, offset: float, copies: bool, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    if grid:  # few distinct values: duplicates and ties
        x = torch.randint(-2, 3, (n, dim), generator=gen).float()
    else:
        centres = 2 * torch.randn(k, dim, generator=gen)
        x = centres[torch.randint(0, k, (n,), generator=gen)] + torch.randn(n, dim, generator=gen)
    x = (x + offset).contiguous()
    seeds = x[torch.randperm(n, generator=gen)[:k]].clone()
    if not copies:
        seeds = seeds + 0.5 * torch.randn(seeds.shape, generator=gen)
    both(x, seeds)


def test_gathered_rows_of_odd_dimensions_keep_their_bits() -> None:
    # d = 13: rows 52 bytes apart. Row 90 gathered alone into a new tensor got other bits
    # than in place (a one-ulp tie between clusters 3 and 4 went the other way), so the
    # bounded loop's labels differed from the plain loop's until the rows were aligned.
    gen = torch.Generator().manual_seed(6599)
    x = (torch.randint(-2, 3, (128, 13), generator=gen).float() + 30.0).contiguous()
    seeds = x[torch.randperm(128, generator=gen)[:6]].clone()
    both(x, seeds + 0.5 * torch.randn(seeds.shape, generator=gen))
    aligned = KM._aligned_rows(x)
    assert aligned.stride(0) % KM.ROW_ALIGNMENT == 0 and torch.equal(aligned, x)
    rows = torch.tensor([90, 3, 90])
    picked = KM._gather(aligned, rows)
    assert picked.stride(0) == aligned.stride(0) and torch.equal(picked, x[rows])
    x16 = torch.randn(40, 16)
    assert KM._aligned_rows(x16) is x16 and KM._aligned_rows(x16[1:]) is not x16


def test_reduced_precision_matmuls_use_the_plain_loop() -> None:
    x = torch.randn(100, 4)
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        assert not KM._bounds_hold(x)
    finally:
        torch.set_float32_matmul_precision(precision)
    assert (
        KM._bounds_hold(x)
        and not KM._bounds_hold(x.double())
        and not KM._bounds_hold(torch.randn(100, 100).T)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("all_move", [True, False])
def test_bounds_allow_for_the_fp32_rounding(seed: int, all_move: bool) -> None:
    # Rows far from the origin: scores ~ 3e7 (ulp 2) while centroids move by an ulp (2e-4):
    # the rounding outweighs the drift, and the margin 2 E is what keeps the labels. With
    # one centroid moving at a time, the rows are scored against the moved one.
    gen = torch.Generator().manual_seed(seed)
    x = (2000 + 1.5 * torch.randn(4000, 8, generator=gen)).contiguous()
    centroids = x[:6].clone()
    bounded = KM._Bounded(x, None)
    for step in range(12):
        labels, _ = bounded.assign(centroids)
        assert torch.equal(labels, KM.assign(x, centroids))
        moved = slice(None) if all_move else slice(step % 6, step % 6 + 1)
        towards = centroids[moved] + (-1) ** step * torch.rand(
            centroids[moved].shape, generator=gen
        )
        centroids[moved] = torch.nextafter(centroids[moved], towards)


@pytest.mark.parametrize("threads", [1, 2])
def test_gathered_rows_get_the_full_gemms_scores_bit_for_bit(threads: int) -> None:
    """What the skipping rests on: MKL gives a row the same scores whether it is multiplied
    among all rows or among a gathered few (16 or more: the padding), on 1 and 2 threads."""
    gen = torch.Generator().manual_seed(9)
    x = F.normalize(torch.randn(3000, 512, generator=gen), dim=1)
    c = F.normalize(torch.randn(400, 512, generator=gen), dim=1)
    h = KM._neg_half(c)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        full = torch.addmm(h, x, c.T)
        for n_rows in (16, 17, 100, 1000):
            rows = torch.randperm(3000, generator=gen)[:n_rows]
            assert torch.equal(torch.addmm(h, x[rows], c.T), full[rows])
    finally:
        torch.set_num_threads(before)


@settings(max_examples=60, deadline=None)
@given(
    exponent=st.integers(-60, 60),
    dim=st.integers(1, 600),
    seed=st.integers(0, 2**16),
)
def test_row_norms_bound_the_norms_from_above(exponent: int, dim: int, seed: int) -> None:
    """The fp32 norms of the bounds are upper bounds on the float64 ones, and close to them
    where the squares stay within fp32's range (at 2^-60 they fall below it)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, dim, generator=gen) * 2.0**exponent
    x[0] = 0.0
    x[1, 0] = 2.0**exponent  # a row with one nonzero entry
    up, exact = KM._row_norms(x), KM._norms(x)
    assert bool((up >= exact).all())
    if abs(exponent) <= 50:
        assert bool((up <= exact * (1 + 1e-4) + 1e-20).all())  # the zero row: 2^-149 d


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n_clusters=st.integers(1, 40),
    workers=st.sampled_from([1, 2, 3]),
    moves=st.lists(st.integers(0, 30), min_size=1, max_size=6),
    always_in_part=st.booleans(),
)
def test_cluster_sums_recomputed_in_part_equal_the_full_pass(
    seed: int, n_clusters: int, workers: int, moves: list[int], always_in_part: bool
) -> None:
    """_CpuSums redoes only the clusters whose rows changed (``always_in_part``: however
    many); each call's sums are the bits of a full pass under the same labels (fp32 sums
    depend on the order of the additions, so a wrong order or a stale cluster shows)."""
    from concurrent.futures import ThreadPoolExecutor

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(300, 24, generator=gen) * 10.0 ** torch.randint(-3, 4, (300, 1), generator=gen)
    labels = torch.randint(0, n_clusters, (300,), generator=gen)
    fraction = 1.0 if always_in_part else KM.RECOUNT_FRACTION
    with ThreadPoolExecutor(workers) as pool, pytest.MonkeyPatch.context() as patch:
        patch.setattr(KM, "RECOUNT_FRACTION", fraction)
        incremental = KM._CpuSums(x, n_clusters, pool)
        for n_moved in [0, *moves]:
            rows = torch.randperm(300, generator=gen)[:n_moved]
            labels = labels.clone()
            labels[rows] = torch.randint(0, n_clusters, (n_moved,), generator=gen)
            full = KM._sums(x, labels, n_clusters, pool)
            assert torch.equal(incremental.of(labels), full)
    if workers == 1:  # one share: the plain index_add_
        assert torch.equal(full, torch.zeros(n_clusters, 24).index_add_(0, labels, x))


def test_bf16_proofs_spare_most_rows_of_the_first_assignments() -> None:
    x = F.normalize(torch.from_numpy(clustered(3000, 512, 50, 4)), dim=1).contiguous()
    seeds = _kmeans_seeds(x, 60, 4)
    rows = KM._lloyd(x, seeds, 20, 0, bounded=True, bf16=True)[2]
    assert rows[0] < 3000 // 2  # the fp32 GEMM only for the rows bf16 scores leave open
    assert torch.equal(
        KM._lloyd(x, seeds, 20, 0, bounded=True, bf16=True)[0], KM._lloyd(x, seeds, 20, 0, False)[0]
    )


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 30), st.integers(0, 2**16), st.booleans())
def test_top2_kernel_reads_what_the_torch_reductions_read(
    m: int, n: int, seed: int, ties: bool
) -> None:
    gen = torch.Generator().manual_seed(seed)
    approx = torch.randn(m, n, generator=gen)
    if ties:  # repeated values: the first maximum's index, the tie as the second best
        approx = torch.round(approx * 2) / 2
    h = torch.randn(n, generator=gen).round()
    labels = np.empty(m, dtype=np.int64)
    best, second, widest = (np.empty(m) for _ in range(3))
    KB._kernel()(approx.numpy(), h.numpy(), labels, best, second, widest)
    s = approx + h
    top = s.max(dim=1)
    assert labels.tolist() == top.indices.tolist() and best.tolist() == top.values.tolist()
    others = s.scatter(1, top.indices[:, None], -torch.inf).amax(dim=1)
    assert second.tolist() == others.tolist()
    assert widest.tolist() == torch.maximum(approx.abs(), s.abs()).amax(dim=1).tolist()
