"""Exact fp32 k-nearest-neighbour search by cache-sized tiles, symmetric for leave-one-out.

The similarity matrix is computed one ``block x block`` tile at a time (never whole). Each
query row first gets a threshold: a score that, read off a fixed random 1/``SAMPLE_FRACTION``
sample of the gallery, about ``k x THRESHOLD_RANK_FACTOR`` items reach. A tile's entries
below its row's threshold are dropped with a cheap two-level scan (:func:`_above`); the
few kept become int64 keys that order like (score descending, column ascending)
(:func:`score_keys`), so one integer top-k per row gives the exact lexicographic top k,
ties at the k boundary by lower index. The result is exact whenever a row keeps at least k
entries (every entry dropped scores below all kept); a row that keeps fewer (the sample
overestimated its k-th score, about 1 row in 1000 by construction) or too many (massive
ties) is recomputed on the plain path: a GEMM against the whole gallery and a top-k.

For leave-one-out search (query set = gallery) only the tiles on and above the diagonal are
multiplied: tile (I, J) serves the rows of I and, transposed, the rows of J, which halves
the multiply-adds. Row block I is complete after sweep I, so blocks are yielded in order.

Scores are those of the tile GEMM. With MKL at d = 512, a tile of at least
``GEMM_MIN_ROWS`` rows and columns (smaller ones are padded) gives each pair the bits of the
same pair in the plain path's row-block product, transposed or not (checked); at other
shapes MKL may pick kernels whose last bit differs, which can only reorder items whose
fp32 scores agree to that bit.

One cohesive thing over 400 lines: the tiled search's tiles, sample thresholds, scan and
keys, which share their constants and the bit-exactness argument above (the CPU's heap
merge, :mod:`daalml.evaluation.knn_heaps`, reuses the tiles, thresholds and keys).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial

import torch

from daalml.evaluation import heap_kernels

__all__ = [
    "CPU_BLOCK",
    "CUDA_BLOCK",
    "Block",
    "block_bounds",
    "decode_keys",
    "exact_rows",
    "iter_blocks",
    "mask_self",
    "row_thresholds",
    "sample_rank",
    "score_keys",
    "tile_product",
    "usable",
    "worker_pool",
]

CPU_BLOCK = 512
"""Tile side on CPU: a 512 x 512 fp32 tile (1 MB) stays in a 1.25 MB L2 while it is scanned
twice (rows and columns). Not tuned further: 1024 and 2048 gave no clear gain on the loaded
2-core Xeon (N = 20000, d = 512), where timings moved by tens of percent between runs."""

CUDA_BLOCK = 4096
"""Tile side on a GPU, where per-tile kernel launches, not the cache, set the size."""

GEMM_MIN_ROWS = 16
"""Tiles with fewer rows or columns are padded to this many (MKL uses other kernels below)."""

SEGMENT = 32
"""Entries per maximum in the two-level candidate scan (:func:`_above`)."""

SAMPLE_FRACTION = 16
"""Thresholds come from a 1/16 gallery sample: its GEMM costs an eighth of the symmetric
search's, and each row then keeps about 3 k entries."""

SAMPLE_MIN = 256
"""Fewest sample columns; galleries under ``SAMPLE_MIN x SAMPLE_FRACTION`` use the plain path."""

REDO_PROBABILITY = 1e-3
"""The threshold's rank in the sample is the smallest whose chance of keeping fewer than k
entries (a binomial tail, as if sampled at random) is below this: those rows are redone."""

CAP_FACTOR = 16
"""A row keeping more than this many times its expected entries (ties) is redone instead."""

_INT32_MAX = 2**31 - 1
_EMPTY = torch.iinfo(torch.int64).min  # below every real key

Block = tuple[int, torch.Tensor, torch.Tensor]


def score_keys(scores: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """int64 keys, larger = better: higher fp32 score, then lower column (``cols`` < 2^31).

    The float's bits, as int32, order like the value for positive floats and in reverse for
    negative ones; flipping the 31 value bits of the negative ones makes the order total.
    -0.0 is first turned into +0.0 so that they tie, as in a float comparison.
    """
    bits = (scores + 0.0).view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ _INT32_MAX, bits).to(torch.int64)
    return (ordered << 32) | (_INT32_MAX - cols)


def decode_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 scores and int64 columns back from :func:`score_keys` keys."""
    ordered = (keys >> 32).to(torch.int32)
    bits = torch.where(ordered < 0, ordered ^ _INT32_MAX, ordered)
    return bits.view(torch.float32), _INT32_MAX - (keys & 0xFFFFFFFF)


class _Candidates:
    """Kept entries (rows local to their block, keys) per row block, and their counts."""

    def __init__(self, thr: torch.Tensor, bounds: list[int], cap: int) -> None:
        self.thr, self.bounds, self.cap = thr, bounds, cap
        self.chunks: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in bounds[:-1]]
        self.count = torch.zeros(thr.shape[0], dtype=torch.int64, device=thr.device)

    def rows(self, block: int) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Views of the thresholds and counts of ``block``, and its chunk list."""
        lo, hi = self.bounds[block], self.bounds[block + 1]
        return self.thr[lo:hi], self.count[lo:hi], self.chunks[block]

    def top(self, block: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Best k keys per row of ``block`` and which rows must be redone."""
        lo, hi = self.bounds[block], self.bounds[block + 1]
        chunks, self.chunks[block] = self.chunks[block], []
        count = self.count[lo:hi]
        device = count.device
        dense = torch.full(
            (hi - lo, max(k, int(count.max()))), _EMPTY, dtype=torch.int64, device=device
        )
        if chunks:
            rows, order = torch.sort(torch.cat([r for r, _ in chunks]), stable=True)
            keys = torch.cat([c for _, c in chunks]).index_select(0, order)
            slot = torch.arange(rows.numel(), device=device) - (count.cumsum(0) - count)[rows]
            dense[rows, slot] = keys
        return torch.topk(dense, k, dim=1, sorted=True).values, (count < k) | (count > self.cap)


def _collect(
    sim: torch.Tensor,
    col0: int,
    transposed: bool,
    thr: torch.Tensor,
    count: torch.Tensor,
    chunks: list,
    cap: int,
) -> None:
    """Keep the entries of ``sim`` (rows x columns ``col0`` on; with ``transposed``, columns
    x rows: a tile above the diagonal, read down) that reach their row's threshold ``thr``.
    A row past ``cap`` entries stops collecting (threshold +inf) and will be redone."""
    rows, cols, vals = _above(sim, thr, transposed)
    if rows.numel() == 0:
        return
    chunks.append((rows, score_keys(vals, cols + col0)))
    count += torch.bincount(rows, minlength=count.shape[0])
    thr.masked_fill_(count > cap, float("inf"))


def block_bounds(n: int, block: int) -> list[int]:
    """Block starts and the end: ``block`` rows each (a multiple of SEGMENT when ``block``
    is), the last one between GEMM_MIN_ROWS and ``block + GEMM_MIN_ROWS`` if n allows."""
    starts = list(range(0, n, block))
    if len(starts) > 1 and n - starts[-1] < GEMM_MIN_ROWS:
        starts.pop()
    return [*starts, n]


def tile_product(
    a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``a @ b.T`` with both padded to at least GEMM_MIN_ROWS rows (see the module docstring).

    ``out`` (contiguous, ``a``'s dtype, shape ``(len(a), len(b))``), where given, receives
    the product of tiles that need no padding: the same GEMM call, without allocating a
    fresh 1 MB result per tile (1-5% of the evaluation's CPU at N = 20,000,
    performance.md, eleventh session)."""
    n_a, n_b = a.shape[0], b.shape[0]
    if n_a >= GEMM_MIN_ROWS and n_b >= GEMM_MIN_ROWS:
        return a @ b.T if out is None else torch.mm(a, b.T, out=out)
    if n_a < GEMM_MIN_ROWS:
        a = torch.cat([a, a[-1:].expand(GEMM_MIN_ROWS - n_a, -1)])
    if n_b < GEMM_MIN_ROWS:
        b = torch.cat([b, b[-1:].expand(GEMM_MIN_ROWS - n_b, -1)])
    return (a @ b.T)[:n_a, :n_b]


def _above(
    sim: torch.Tensor, thr: torch.Tensor, transposed: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entries of ``sim`` at least a threshold per row (or, ``transposed``, per column).

    Returns (row, column, value), rows and columns those of ``sim`` or, ``transposed``, of
    ``sim.T``; sorted by row. Two levels: the maxima of ``SEGMENT`` consecutive entries
    (a reduction, a fifth of the cost of a comparison that writes a mask) select the
    segments worth scanning; after the first few tiles most segments hold no candidate.
    """
    n_rows, n_cols = sim.shape
    pad_r, pad_c = -n_rows % SEGMENT, -n_cols % SEGMENT
    if pad_r or pad_c:  # only tiles of the last block: pad with -inf, which never passes
        # (thresholds are finite or +inf)
        sim = torch.nn.functional.pad(sim, (0, pad_c, 0, pad_r), value=float("-inf"))
    if transposed:  # segments run down the columns
        thr = torch.nn.functional.pad(thr, (0, pad_c), value=float("inf"))
        seg = sim.view(-1, SEGMENT, sim.shape[1])
        hit_row, hit_seg = torch.nonzero(seg.amax(dim=1).T >= thr[:, None], as_tuple=True)
        values = seg[hit_seg, :, hit_row]
    else:
        thr = torch.nn.functional.pad(thr, (0, pad_r), value=float("inf"))
        n_seg = sim.shape[1] // SEGMENT
        hits = torch.nonzero((sim.view(-1, n_seg, SEGMENT).amax(dim=2) >= thr[:, None]).view(-1))
        hits = hits.squeeze(1)
        hit_row, hit_seg = hits // n_seg, hits % n_seg
        values = sim.view(-1, SEGMENT).index_select(0, hits)
    keep = values >= thr.index_select(0, hit_row)[:, None]
    flat = torch.nonzero(keep.view(-1)).squeeze(1)
    h = flat // SEGMENT
    rows = hit_row.index_select(0, h)
    cols = hit_seg.index_select(0, h) * SEGMENT + flat % SEGMENT
    return rows, cols, values.view(-1).index_select(0, flat)


def sample_rank(k: int, fraction: int) -> int:
    """Rank r in the sample so that P(Binomial(k - 1, 1/fraction) >= r) <= REDO_PROBABILITY.

    A row keeps fewer than k entries only if r sample items lie among its k - 1 best.
    """
    p, n = 1.0 / fraction, k - 1
    tail, r = 1.0, 0
    while tail > REDO_PROBABILITY and r <= n:
        tail -= math.comb(n, r) * p**r * (1 - p) ** (n - r)
        r += 1
    return max(r, 1)


def usable(n_gallery: int, k: int) -> bool:
    """Whether the tiled search applies: a gallery large enough to sample, k small next to it."""
    n_sample = n_gallery // SAMPLE_FRACTION
    return n_sample >= SAMPLE_MIN and sample_rank(k, SAMPLE_FRACTION) * 4 <= n_sample


def _sample(
    gallery: torch.Tensor, k: int, fraction: int = SAMPLE_FRACTION
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A fixed random 1/``fraction`` of the gallery (sorted indices, rows) and the rank of
    the thresholds in it."""
    n_g = gallery.shape[0]
    n_sample = max(1, n_g // fraction)
    gen = torch.Generator().manual_seed(0)
    sample = torch.randperm(n_g, generator=gen)[:n_sample].sort().values.to(gallery.device)
    rank = min(sample_rank(k, fraction), n_sample)  # small galleries: a weak bound
    return sample, gallery[sample], rank


def _thresholds(
    q: torch.Tensor,
    start: int,
    sample: tuple[torch.Tensor, torch.Tensor, int],
    exclude_self: bool,
) -> torch.Tensor:
    """Per query (rows ``start`` on), its ``rank``-th best score in the gallery sample
    (its own column left out)."""
    index, rows_of_sample, rank = sample
    sim = tile_product(q, rows_of_sample)
    if exclude_self:
        rows = torch.arange(start, start + q.shape[0], device=q.device)
        pos = torch.searchsorted(index, rows).clamp(max=index.shape[0] - 1)
        own = index[pos] == rows
        sim[torch.nonzero(own).squeeze(1), pos[own]] = float("-inf")
    if sim.device.type == "cpu" and heap_kernels.AVAILABLE:
        kth = heap_kernels.kth_largest(sim.float().contiguous().numpy(), rank)  # bf16: exact
        return torch.from_numpy(kth).to(sim.dtype)
    return torch.topk(sim, rank, dim=1).values[:, -1]


def row_thresholds(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    exclude_self: bool,
    block: int,
    pool: ThreadPoolExecutor,
    fraction: int = SAMPLE_FRACTION,
) -> torch.Tensor:
    """Every query's threshold: its ``sample_rank(k, fraction)``-th best score in the fixed
    1/``fraction`` gallery sample, so that fewer than k gallery items reach it with
    probability at most REDO_PROBABILITY (the query blocks shared among ``pool``'s workers)."""
    sample = _sample(gallery, k, fraction)
    starts = range(0, query.shape[0], block)
    parts = pool.map(lambda s: _thresholds(query[s : s + block], s, sample, exclude_self), starts)
    return torch.cat(list(parts))


def iter_blocks(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    *,
    exclude_self: bool,
    block: int | None = None,
    workers: int | None = None,
) -> Iterator[Block]:
    """Yield ``(start, scores, indices)`` per block of queries, best first, exactly.

    Inputs are L2-normalised fp32 on one device; ``k`` <= the available gallery size and
    :func:`usable`. With ``exclude_self`` query row i is gallery row i; if both hold the
    same values, only tiles on and above the diagonal are multiplied. On CPU the tiles of a
    sweep are shared among ``workers`` Python threads (default: torch's thread count) that
    run torch single-threaded meanwhile: a tile's many small operations then never wait at
    a thread-pool barrier (with 2 torch threads on a loaded 2-core machine, the sequential
    loop was several times slower than with one).
    """
    if block is None:
        block = CUDA_BLOCK if query.device.type == "cuda" else CPU_BLOCK
    with worker_pool(query.device, workers) as (pool, n_workers):
        yield from _search(query, gallery, k, exclude_self, block, n_workers, pool)


@contextmanager
def worker_pool(
    device: torch.device, workers: int | None = None
) -> Iterator[tuple[ThreadPoolExecutor, int]]:
    """A pool of ``workers`` Python threads (default: torch's thread count on CPU, 1 on a
    GPU) with torch single-threaded while it is open, restored after."""
    if workers is None:
        workers = torch.get_num_threads() if device.type == "cpu" else 1
    workers = max(1, workers)
    threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            yield pool, workers
    finally:
        torch.set_num_threads(threads)


def _search(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    exclude_self: bool,
    block: int,
    workers: int,
    pool: ThreadPoolExecutor,
) -> Iterator[Block]:
    """The sweeps of :func:`iter_blocks`; sweep i's tiles (i, j) are dealt out in turn from
    its first (j = i for leave-one-out, else 0): worker w takes every workers-th from the w-th.

    Within a sweep each worker collects its own entries for the sweep's rows (merged after)
    and is the only one to touch the rows of its blocks j; sweeps are separated by a join.
    """
    symmetric = exclude_self and (query is gallery or torch.equal(query, gallery))
    q_bounds = block_bounds(query.shape[0], block)
    g_bounds = q_bounds if symmetric else block_bounds(gallery.shape[0], block)
    thr = row_thresholds(query, gallery, k, exclude_self, block, pool)
    cap = CAP_FACTOR * SAMPLE_FRACTION * sample_rank(k, SAMPLE_FRACTION) + k
    kept = _Candidates(thr, q_bounds, cap)
    n_blocks = len(q_bounds) - 1

    def start_sweep(i: int) -> list[Future]:
        i0 = q_bounds[i]
        x_i = query[i0 : q_bounds[i + 1]]
        tiles = list(range(i if symmetric else 0, len(g_bounds) - 1))
        thr_i = kept.rows(i)[0]
        sweep = partial(
            _sweep_part, gallery, g_bounds, kept, x_i, i, i0, thr_i, exclude_self, symmetric
        )
        return [pool.submit(sweep, tiles[w::workers]) for w in range(workers)]

    running = start_sweep(0)
    for i in range(n_blocks):
        i0 = q_bounds[i]
        x_i = query[i0 : q_bounds[i + 1]]
        _, count_i, chunks_i = kept.rows(i)
        for part in running:
            own_count, own_chunks = part.result()
            count_i += own_count
            chunks_i.extend(own_chunks)
        # Sweep i + 1 touches no row of block i: it runs while block i is finished here
        # (and used by the caller), so the workers do not wait for the main thread.
        running = start_sweep(i + 1) if i + 1 < n_blocks else []
        keys, redo = kept.top(i, k)
        scores, indices = decode_keys(keys)
        rows = torch.nonzero(redo).squeeze(1)
        if rows.numel():
            self_idx = rows + i0 if exclude_self else None
            scores[rows], indices[rows] = exact_rows(x_i[rows], gallery, k, self_idx)
        yield i0, scores, indices


def _sweep_part(
    gallery: torch.Tensor,
    g_bounds: list[int],
    kept: _Candidates,
    x_i: torch.Tensor,
    i: int,
    i0: int,
    thr_i: torch.Tensor,
    exclude_self: bool,
    symmetric: bool,
    tiles: list[int],
) -> tuple[torch.Tensor, list]:
    """One worker's tiles (i, j) of sweep i: its own entries and counts for the rows of i."""
    i1 = i0 + x_i.shape[0]
    own_thr = thr_i.clone()
    own_count = torch.zeros(x_i.shape[0], dtype=torch.int64, device=x_i.device)
    own_chunks: list = []
    for j in tiles:
        j0, j1 = g_bounds[j], g_bounds[j + 1]
        sim = tile_product(x_i, gallery[j0:j1])
        if exclude_self and j0 < i1 and i0 < j1:
            mask_self(sim, i0, j0)
        _collect(sim, j0, False, own_thr, own_count, own_chunks, kept.cap)
        if symmetric and j > i:
            _collect(sim, i0, True, *kept.rows(j), kept.cap)
    return own_count, own_chunks


def exact_rows(
    q: torch.Tensor, gallery: torch.Tensor, k: int, self_idx: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain fp32 top k of a few queries against the whole gallery (keys break ties)."""
    sim = tile_product(q, gallery)
    if self_idx is not None:
        sim[torch.arange(q.shape[0], device=q.device), self_idx] = float("-inf")
    cols = torch.arange(gallery.shape[0], device=q.device)
    return decode_keys(torch.topk(score_keys(sim, cols.expand_as(sim)), k, dim=1).values)


def mask_self(sim: torch.Tensor, i0: int, j0: int) -> None:
    """Set the entries of pairs (i, i) inside the tile at (i0, j0) to -inf."""
    n_rows, n_cols = sim.shape
    lo, hi = max(i0, j0), min(i0 + n_rows, j0 + n_cols)
    if lo < hi:
        idx = torch.arange(lo, hi, device=sim.device)
        sim[idx - i0, idx - j0] = float("-inf")
