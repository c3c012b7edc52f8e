"""Exact fp32 k-nearest-neighbour search on CPU by tiles merged into faiss's C++ heaps.

The tiles are those of :mod:`daalml.evaluation.knn_tiles` (same shapes, so each pair gets
the bits of the plain path's product; for leave-one-out only the tiles on and above the
diagonal, each serving its rows and, transposed, its columns). Instead of a threshold scan
in many small torch operations, each tile goes in one call into per-row min-heaps of
``k + 1`` entries kept by faiss (``float_minheap_array_t.addn``: one comparison per entry
in C++, a heap update for the few that enter), which is why this path runs on CPU tensors
only; on a GPU the scan of :mod:`knn_tiles` runs.

The heaps start full of placeholders at a per-row floor read off a gallery sample (the
scan path's thresholds, for k + 1, from a sparser sample: ``FLOOR_SAMPLE_FRACTION``), so that only entries above it ever enter: from an empty
start most entries of the first tiles would, each a heap update. A row whose top k still
holds a placeholder (fewer than k items reached its floor, about 1 row in 1000) is redone.

Which heap a tile feeds, so that each heap row has one writer at a time and no lock is
needed, with memory that does not grow with the worker threads (:func:`heap_bytes`):

- Sweep i's tiles (i, j) go to worker ``j % workers`` (shares differ by at most a tile).
- Their transposed offers (the rows of block j > i, leave-one-out only) go to one heap set
  shared by all rows. In sweep i only tile (i, j) offers rows of block j, and sweeps are
  joined one after the other, so these rows have a single writer, always the same worker
  (block j's owner, ``j % workers``). No sweep after i touches block i's shared rows.
- Their direct offers (the rows of block i) go, for block i's owner, to those shared rows
  (no other writes them in sweep i), and for the other workers to their own heaps for one
  block of rows, reset at the start of the sweep. There are two such sets per worker, for
  even and odd sweeps: sweep i + 1 runs while block i is finished from sweep i's set,
  and sweep i + 2, which reuses it, starts only once block i has been handed out.

So the heaps take ``n_rows x (k + 1) x 12`` bytes for the shared set (leave-one-out only)
plus ``2 x workers x block x (k + 1) x 12`` for the workers' sets, where one set per worker
for all rows took ``workers x n_rows x (k + 1) x 12`` (1.5 GB at 100,000 rows and k = 79
on 16 threads); a row's candidates are the union of its shared heap and those of the
workers that had tiles in its sweep, at most ``workers`` heaps as before.

faiss's heaps keep an entry only if it beats the smallest kept one, so at an exact tie they
may keep a higher index than ours. The result is still exact: every entry a heap left out
scores at most that heap's smallest kept value, so whenever the k-th best of the union
scores above the largest of those minima, the union holds the true top k, ordered here by
keys that sort like (score descending, index ascending). A row where it does not (a tie at
the k boundary) is recomputed on the plain path.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import faiss
import numpy as np
import torch

from daalml.evaluation import knn_tiles as tiles

__all__ = [
    "FLOOR_SAMPLE_FRACTION",
    "HEAP_BYTES_MAX",
    "fits",
    "floor_fraction",
    "heap_bytes",
    "iter_blocks",
]

HEAP_BYTES_MAX = 2**30
"""Most bytes the heaps may take (:func:`heap_bytes`); a larger search runs the threshold
scan instead."""


FLOOR_SAMPLE_FRACTION = 64
"""The heaps' floors come from a 1/64 gallery sample (the threshold scan's is 1/16): a lower
floor only lets a few more entries into the heaps, while the sample's product grows as
N^2 / fraction. ``benchmarks/bench_floor_sample.py`` times the fractions side by side
(docs/performance.md: level at N = 20,000, 1/64 about 10% less CPU than 1/16 at 60,000)."""


def floor_fraction(n_gallery: int) -> int:
    """The fraction of the gallery the floors are read from: FLOOR_SAMPLE_FRACTION, but no
    sparser than ``tiles.SAMPLE_MIN`` columns and no denser than the scan's sample."""
    return max(tiles.SAMPLE_FRACTION, min(FLOOR_SAMPLE_FRACTION, n_gallery // tiles.SAMPLE_MIN))


def heap_bytes(
    n_queries: int, k: int, workers: int, *, block: int = tiles.CPU_BLOCK, symmetric: bool = True
) -> int:
    """Bytes of the heaps a search of ``n_queries`` rows for ``k`` neighbours allocates on
    ``workers`` threads: the shared set for all rows (leave-one-out only) and two sets of
    one block's rows per worker (k + 1 float32 scores and int64 indices a row)."""
    widest = max((b - a for a, b in itertools.pairwise(tiles.block_bounds(n_queries, block))),
                 default=0)
    rows = (n_queries if symmetric else 0) + 2 * max(1, workers) * widest
    return rows * (k + 1) * 12


def fits(n_queries: int, k: int, workers: int) -> bool:
    """Whether the heaps of a search of ``n_queries`` rows for ``k`` neighbours on
    ``workers`` threads stay within ``HEAP_BYTES_MAX`` (counting the shared set, which only
    a leave-one-out search allocates)."""
    return heap_bytes(n_queries, k, workers) <= HEAP_BYTES_MAX


class _Heaps:
    """The best ``size`` (score, column) of ``n_rows`` rows, in faiss's C++ min-heaps."""

    def __init__(self, n_rows: int, size: int) -> None:
        """Room for the heaps; :meth:`reset` fills them before use."""
        self.val = np.empty((n_rows, size), dtype=np.float32)
        self.ids = np.empty((n_rows, size), dtype=np.int64)
        self.heap = faiss.float_minheap_array_t()
        self.heap.nh, self.heap.k = n_rows, size
        self.heap.val, self.heap.ids = faiss.swig_ptr(self.val), faiss.swig_ptr(self.ids)

    def reset(self, floor: np.ndarray) -> None:
        """Fill the first ``len(floor)`` rows with placeholders: index -1 at the row's
        ``floor`` score, which only a higher score replaces (equal values are a valid heap)."""
        n_rows = floor.shape[0]
        self.val[:n_rows] = floor[:, None]
        self.ids[:n_rows] = -1

    def add(self, scores: torch.Tensor, row0: int, col0: int) -> None:
        """Offer ``scores`` (rows ``row0`` on, columns ``col0`` on; C-contiguous fp32)."""
        array = scores.numpy()
        self.heap.addn(array.shape[1], faiss.swig_ptr(array), col0, row0, array.shape[0])


def iter_blocks(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    *,
    exclude_self: bool,
    block: int = tiles.CPU_BLOCK,
    workers: int | None = None,
) -> Iterator[tiles.Block]:
    """Yield ``(start, scores, indices)`` per block of queries, best first, exactly.

    Inputs are fp32 CPU tensors (L2-normalised for cosine; the operands of
    :func:`daalml.evaluation.knn_backends.euclidean_operands` for Euclidean) and ``k`` <=
    the available gallery size. With
    ``exclude_self`` query row i is gallery row i; if both hold the same values, only tiles
    on and above the diagonal are multiplied. The tiles of a sweep are shared among
    ``workers`` Python threads (default: torch's thread count) that run torch and faiss
    single-threaded.
    """
    if query.device.type != "cpu":
        raise ValueError("knn_heaps runs on CPU tensors; knn_tiles serves other devices")
    with tiles.worker_pool(query.device, workers) as (pool, n_workers):
        yield from _search(query, gallery, k, exclude_self, block, n_workers, pool)


def _search(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    exclude_self: bool,
    block: int,
    workers: int,
    pool: ThreadPoolExecutor,
) -> Iterator[tiles.Block]:
    """The sweeps of :func:`iter_blocks`; sweep i + 1 runs while block i is finished."""
    symmetric = exclude_self and (query is gallery or torch.equal(query, gallery))
    q_bounds = tiles.block_bounds(query.shape[0], block)
    g_bounds = q_bounds if symmetric else tiles.block_bounds(gallery.shape[0], block)
    # Starting at a threshold that k + 1 items reach (but for about 1 row in 1000) spares
    # the heaps most of the replacements an empty start costs.
    fraction = floor_fraction(gallery.shape[0])
    floor = tiles.row_thresholds(query, gallery, k + 1, exclude_self, block, pool, fraction)
    floor = floor.numpy().astype(np.float32, copy=False)
    shared = None
    if symmetric:
        shared = _Heaps(query.shape[0], k + 1)
        shared.reset(floor)
    widest = max(b - a for a, b in itertools.pairwise(q_bounds))
    # per worker, one set for the even sweeps and one for the odd ones
    own = [[_Heaps(widest, k + 1) for _ in range(workers)] for _ in range(2)]
    n_blocks = len(q_bounds) - 1

    def start_sweep(i: int) -> tuple[list[Future], list[_Heaps]]:
        """Submit sweep i's parts; the per-worker heaps block i will be read from."""
        futures, used = [], []
        todo = range(i if symmetric else 0, len(g_bounds) - 1)
        for w in range(workers):
            part = [j for j in todo if j % workers == w]
            if not part:
                continue
            owner = shared is not None and w == i % workers
            direct = shared if owner else own[i % 2][w]
            row0 = q_bounds[i] if owner else 0
            if not owner:
                used.append(direct)
            futures.append(pool.submit(
                _sweep_part, query, gallery, q_bounds, g_bounds, i, part, direct, row0,
                shared, floor, exclude_self,
            ))
        return futures, used

    running, used = start_sweep(0)
    for i in range(n_blocks):
        for part in running:
            part.result()
        lo, hi = q_bounds[i], q_bounds[i + 1]
        heaps = [(h.val[: hi - lo], h.ids[: hi - lo]) for h in used]
        if shared is not None:
            heaps.append((shared.val[lo:hi], shared.ids[lo:hi]))
        running, used = start_sweep(i + 1) if i + 1 < n_blocks else ([], [])
        yield lo, *_finish(query[lo:hi], gallery, k, lo, heaps, exclude_self)


def _sweep_part(
    query: torch.Tensor,
    gallery: torch.Tensor,
    q_bounds: list[int],
    g_bounds: list[int],
    i: int,
    todo: list[int],
    direct: _Heaps,
    row0: int,
    shared: _Heaps | None,
    floor: np.ndarray,
    exclude_self: bool,
) -> None:
    """One worker's tiles (i, j) of sweep i: the rows of block i offered to ``direct`` from
    its row ``row0`` on (the worker's own heaps, reset first, or block i's shared rows),
    those of block j > i (transposed, leave-one-out) to the shared heaps."""
    faiss.omp_set_num_threads(1)  # this thread's OpenMP setting only: addn stays serial
    i0, i1 = q_bounds[i], q_bounds[i + 1]
    if direct is not shared:
        direct.reset(floor[i0:i1])
    x_i = query[i0:i1]
    widest = max(b - a for a, b in itertools.pairwise(g_bounds))
    buffer = torch.empty(widest * (i1 - i0))  # the transposed tile, reused
    for j in todo:
        j0, j1 = g_bounds[j], g_bounds[j + 1]
        sim = tiles.tile_product(x_i, gallery[j0:j1]).contiguous()
        if exclude_self and j0 < i1 and i0 < j1:
            tiles.mask_self(sim, i0, j0)
        direct.add(sim, row0, j0)
        if shared is not None and j > i:
            columns = buffer[: sim.numel()].view(sim.shape[1], sim.shape[0])
            columns.copy_(sim.T)
            shared.add(columns, j0, i0)


def _finish(
    x_i: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    start: int,
    heaps: list[tuple[np.ndarray, np.ndarray]],
    exclude_self: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact top k of the rows ``start`` on from the union of their heaps (each given
    as its (scores, indices) for these rows)."""
    values = torch.cat([torch.from_numpy(val) for val, _ in heaps], dim=1)
    columns = torch.cat([torch.from_numpy(ids) for _, ids in heaps], dim=1)
    # Each heap's root is its smallest kept value: all it left out score at most that.
    left_out_max = torch.stack([torch.from_numpy(val[:, 0]) for val, _ in heaps]).amax(0)
    keys = torch.topk(tiles.score_keys(values, columns), k, dim=1, sorted=True).values
    scores, indices = tiles.decode_keys(keys)
    # a placeholder among the top k (fewer reached the floor): implied by the root test, as a
    # placeholder scores its heap's floor <= root, but said outright
    short = (indices < 0).any(dim=1)
    rows = torch.nonzero(short | (scores[:, k - 1] <= left_out_max)).squeeze(1)
    if rows.numel():
        self_idx = rows + start if exclude_self else None
        scores[rows], indices[rows] = tiles.exact_rows(x_i[rows], gallery, k, self_idx)
    return scores, indices
