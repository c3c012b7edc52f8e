"""Exact fp32 k-nearest-neighbour search on CPU by tiles merged into per-row candidate buffers.

The tiles are those of :mod:`daalml.evaluation.knn_tiles` (same shapes, so each pair gets
the bits of the plain path's product; for leave-one-out only the tiles on and above the
diagonal, each serving its rows and its columns). Instead of a threshold scan in many small
torch operations, each tile goes in one compiled call (:mod:`daalml.evaluation.heap_kernels`,
numba) into per-row buffers that keep at least the k + 1 best entries offered to them above
a threshold that only rises; this path runs on CPU tensors where numba is installed
(:func:`usable`), elsewhere the scan of :mod:`knn_tiles` runs.

The thresholds start at a per-row floor read off a gallery sample (the scan path's
thresholds, for k + 1, from a sparser sample: ``FLOOR_SAMPLE_FRACTION``), so that only
entries above it ever enter: from an empty start most entries of the first tiles would. A
row with fewer than k entries above its floor over all its buffers (about 1 row in 1000) is
redone, as is a row whose k-th best is not above the largest of its buffers' thresholds (a
tie at the k boundary). The redone rows of successive blocks are multiplied together
(:class:`_HeldBlocks`).

Which buffer a tile feeds, so that each buffer row has one writer at a time and no lock is
needed, with memory that does not grow with the worker threads (:func:`heap_bytes`):

- Tile (i, j) goes to worker ``owner(j)`` in every sweep i (column blocks dealt out back and
  forth, so that the workers' totals stay even).
- Its column offers (the rows of block j > i, leave-one-out only) go to one buffer set
  shared by all rows: block j's rows there are only ever written by ``owner(j)``.
- Its row offers (the rows of block i) go, for block i's owner, to those shared rows, and
  for the other workers to their own buffers for one block of rows, reset at the start of
  the sweep to the thresholds the shared rows have reached by then (read while the owner
  may still raise them: any value read is one they held, and refuses only entries that
  those rows already keep k + 1 better of). There are ``OWN_SETS`` such sets per worker,
  used in turn by successive sweeps.
- Each worker runs its tiles sweep after sweep, without waiting for the others at the
  end of a sweep (a sweep's last tiles no longer leave a core idle). The main thread
  finishes block i once every worker is past sweep i, when none writes its rows again; a
  worker waits only before reusing its set of sweep i - OWN_SETS, until that block is
  finished.

So the buffers take ``n_rows x row_bytes(k)`` for the shared set (leave-one-out only) plus
``OWN_SETS x workers x block x row_bytes(k)`` for the workers' sets; a row's candidates are the
union of its shared buffer and those of the workers that had tiles in its sweep.

Exactness: every entry a buffer row left out scores at most its threshold, so whenever the
k-th best of the union scores above the largest of those thresholds, the union holds the
true top k, ordered by (score descending, index ascending); the rows where it does not are
recomputed on the plain path.

bf16 products (``products="bf16"``): the tiles are bf16 products, the buffers keep more
candidates, and each block's are rescored and certified by
:class:`daalml.evaluation.bf16_candidates.Rescorer` (the rows it cannot prove are redone).

One cohesive thing over 400 lines: the sweeps, the buffers they fill and the blocks' finish,
which share the ownership rules above (who writes which rows when, who may read them).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from daalml.evaluation import bf16_candidates
from daalml.evaluation import heap_kernels as kernels
from daalml.evaluation import knn_tiles as tiles
from daalml.evaluation.sweep_progress import SweepProgress

__all__ = [
    "FLOOR_SAMPLE_FRACTION",
    "HEAP_BYTES_MAX",
    "OWN_SETS",
    "REDO_BATCH",
    "fits",
    "floor_fraction",
    "heap_bytes",
    "iter_blocks",
    "owner",
    "row_bytes",
    "usable",
]

OWN_SETS = 4
"""Buffer sets per worker, used in turn by the sweeps: a worker runs up to this many sweeps
ahead of the main thread's finished blocks (a bf16 block's rescoring outlasts a late
sweep's few tiles: with two sets the workers waited for it)."""

REDO_BATCH = 256
"""Unproved rows redone together (see :class:`_HeldBlocks`)."""

HEAP_BYTES_MAX = 2**30
"""Most bytes the buffers may take (:func:`heap_bytes`); a larger search runs the scan."""


FLOOR_SAMPLE_FRACTION = 64
"""The floors come from a 1/64 gallery sample (the threshold scan's is 1/16): a lower floor
only lets a few more entries into the buffers, while the sample's product grows as
N^2 / fraction. ``benchmarks/bench_floor_sample.py`` times the fractions side by side."""


def floor_fraction(n_gallery: int) -> int:
    """The fraction of the gallery the floors are read from: FLOOR_SAMPLE_FRACTION, but no
    sparser than ``tiles.SAMPLE_MIN`` columns and no denser than the scan's sample."""
    return max(tiles.SAMPLE_FRACTION, min(FLOOR_SAMPLE_FRACTION, n_gallery // tiles.SAMPLE_MIN))


def row_bytes(k: int, kept: int | None = None) -> int:
    """Bytes of one buffer row of a search for ``k`` neighbours: room for
    ``heap_kernels.capacity(kept)`` int64 keys (score and column; ``kept`` = k + 1 with fp32
    products), a count and a threshold."""
    return kernels.capacity(k + 1 if kept is None else kept) * 8 + 8


def heap_bytes(
    n_queries: int,
    k: int,
    workers: int,
    *,
    block: int = tiles.CPU_BLOCK,
    symmetric: bool = True,
    kept: int | None = None,
) -> int:
    """Bytes of the buffers a search of ``n_queries`` rows for ``k`` neighbours allocates on
    ``workers`` threads: the shared set for all rows (leave-one-out only) and OWN_SETS sets of
    one block's rows per worker."""
    widest = max((b - a for a, b in itertools.pairwise(tiles.block_bounds(n_queries, block))),
                 default=0)
    rows = (n_queries if symmetric else 0) + OWN_SETS * max(1, workers) * widest
    return rows * row_bytes(k, kept)


def fits(
    n_queries: int, k: int, workers: int, kept: int | None = None, *, symmetric: bool = True
) -> bool:
    """Whether the buffers of a search of ``n_queries`` rows for ``k`` neighbours on
    ``workers`` threads, each row keeping ``kept`` (default k + 1), stay within
    ``HEAP_BYTES_MAX``; ``symmetric``: a leave-one-out search that may allocate the shared
    set (a query-to-gallery search never does)."""
    return heap_bytes(n_queries, k, workers, kept=kept, symmetric=symmetric) <= HEAP_BYTES_MAX


def usable(
    device: torch.device,
    n_queries: int,
    k: int,
    workers: int,
    kept: int | None = None,
    *,
    symmetric: bool = True,
) -> bool:
    """Whether this merge serves a tiled search: CPU tensors, the kernels compiled
    (numba installed) and the buffers within ``HEAP_BYTES_MAX`` (see :func:`fits`)."""
    return (
        device.type == "cpu"
        and kernels.AVAILABLE
        and fits(n_queries, k, workers, kept, symmetric=symmetric)
    )


class _Buffers:
    """At least the best ``size`` (score, column) offered to each of ``n_rows`` rows above
    its threshold (see :mod:`daalml.evaluation.heap_kernels`)."""

    def __init__(self, n_rows: int, size: int) -> None:
        """Room for the rows; :meth:`reset` empties them before use."""
        self.size = size
        self.keys = np.empty((n_rows, kernels.capacity(size)), dtype=np.int64)
        self.count = np.zeros(n_rows, dtype=np.int32)
        self.thr = np.empty(n_rows, dtype=np.float32)

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keys (see :func:`daalml.evaluation.knn_tiles.score_keys`), counts and thresholds,
        as the kernels take them."""
        return self.keys, self.count, self.thr

    def reset(self, floor: np.ndarray) -> None:
        """Empty the first ``len(floor)`` rows, each with its ``floor`` as threshold."""
        n_rows = floor.shape[0]
        self.count[:n_rows] = 0
        self.thr[:n_rows] = floor

    def offer(
        self,
        sim: torch.Tensor,
        row0: int,
        col0: int,
        columns_to: _Buffers | None = None,
        col_row0: int = 0,
        col_id0: int = 0,
    ) -> None:
        """Offer ``sim`` (C-contiguous fp32) row by row to rows ``row0`` on as columns
        ``col0`` on; with ``columns_to``, also column by column to its rows ``col_row0``
        on as columns ``col_id0`` on."""
        to = self if columns_to is None else columns_to
        kernels.offer_tile(
            sim.numpy(), self.arrays, row0, col0, to.arrays, col_row0, col_id0,
            columns_to is not None, self.size,
        )


def iter_blocks(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    *,
    exclude_self: bool,
    block: int = tiles.CPU_BLOCK,
    workers: int | None = None,
    products: str = "fp32",
    kept: int | None = None,
) -> Iterator[tiles.Block]:
    """Yield ``(start, scores, indices)`` per block of queries, best first, exactly.

    Inputs are fp32 CPU tensors (L2-normalised for cosine; the operands of
    :func:`daalml.evaluation.knn_backends.euclidean_operands` for Euclidean) and ``k`` <=
    the available gallery size. With ``exclude_self`` query row i is gallery row i; if both
    hold the same values, only tiles on and above the diagonal are multiplied. The tiles of
    a sweep are shared among ``workers`` Python threads (default: torch's thread count)
    that run torch single-threaded and the kernels without the GIL. ``products="bf16"``
    (cosine operands, and :func:`daalml.evaluation.gemm_dots.split` found for the
    dimension) multiplies the tiles in bf16, each row keeping ``kept`` candidates (default
    ``bf16_candidates.bf16_kept(k)``).
    """
    if products not in ("fp32", "bf16"):
        raise ValueError(f"products: {products!r} is not 'fp32' or 'bf16'")
    if query.device.type != "cpu":
        raise ValueError("knn_heaps runs on CPU tensors; knn_tiles serves other devices")
    if not kernels.AVAILABLE:
        raise RuntimeError("knn_heaps needs numba (pip install numba); knn_tiles runs without")
    if products == "fp32" or kept is None:
        kept = k + 1 if products == "fp32" else bf16_candidates.bf16_kept(k)
    with tiles.worker_pool(query.device, workers) as (pool, n_workers):
        bf16 = products == "bf16"
        yield from _search(query, gallery, k, exclude_self, block, n_workers, pool, kept, bf16)


def owner(j: int, workers: int) -> int:
    """The worker that multiplies the tiles of column block ``j`` in every sweep, and so the
    only one to write block j's shared rows. A leave-one-out column block j holds j + 1
    tiles: dealt out back and forth (0, 1, 1, 0, 0, 1 on two workers), the workers' totals
    differ by at most two column blocks' tiles (at N = 20,000, 410 and 410 tiles, where
    j % workers gave 400 and 420)."""
    turn, place = divmod(j, workers)
    return place if turn % 2 == 0 else workers - 1 - place


def _search(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    exclude_self: bool,
    block: int,
    workers: int,
    pool: ThreadPoolExecutor,
    kept: int,
    bf16: bool,
) -> Iterator[tiles.Block]:
    """The sweeps of :func:`iter_blocks`: each worker runs its tiles of every sweep in turn,
    without waiting for the others at the end of a sweep, while this thread finishes block
    i once every worker is past sweep i."""
    symmetric = exclude_self and (query is gallery or torch.equal(query, gallery))
    q_bounds = tiles.block_bounds(query.shape[0], block)
    g_bounds = q_bounds if symmetric else tiles.block_bounds(gallery.shape[0], block)
    # Starting at a threshold that k + 1 items reach (but for about 1 row in 1000) spares
    # the buffers most of the entries an empty start lets in.
    rescorer = bf16_candidates.Rescorer(query, gallery, k, symmetric, kept) if bf16 else None
    q_tiles, g_tiles = (query, gallery) if rescorer is None else rescorer.operands
    fraction = floor_fraction(gallery.shape[0])
    floor = tiles.row_thresholds(q_tiles, g_tiles, kept, exclude_self, block, pool, fraction)
    floor = floor.float().numpy()
    shared = None
    if symmetric:
        shared = _Buffers(query.shape[0], kept)
        shared.reset(floor)
    widest = max(b - a for a, b in itertools.pairwise(q_bounds))
    # per worker, one set for the even sweeps and one for the odd ones
    own = [[_Buffers(widest, kept) for _ in range(workers)] for _ in range(OWN_SETS)]
    n_blocks = len(q_bounds) - 1

    def parts(i: int) -> list[tuple[int, list[int], _Buffers, int]]:
        """Sweep i's parts: (worker, its tiles' column blocks, buffers for block i's rows,
        the row where they start there)."""
        found = []
        todo = range(i if symmetric else 0, len(g_bounds) - 1)
        for w in range(workers):
            part = [j for j in todo if owner(j, workers) == w]
            if part:
                mine = shared is not None and w == owner(i, workers)
                direct, row0 = (shared, q_bounds[i]) if mine else (own[i % OWN_SETS][w], 0)
                found.append((w, part, direct, row0))
        return found

    sweeps = [parts(i) for i in range(n_blocks)]
    progress = SweepProgress(workers)
    products = [_TileOutputs(q_tiles.dtype) for _ in range(workers)]

    def run(w: int) -> None:
        for i, sweep in enumerate(sweeps):
            for worker, part, direct, row0 in sweep:
                if worker == w:
                    # a per-worker set is reused from sweep i - OWN_SETS: that block is read first
                    progress.wait_finished(i - OWN_SETS + 1 if direct is not shared else 0)
                    _sweep_part(q_tiles, g_tiles, q_bounds, g_bounds, i, part, direct, row0,
                                shared, floor, exclude_self, products[w])
            progress.swept(w, i + 1)

    progress.start(run, "daalml-sweeps")  # daemon threads, not the pool's: see start()
    try:
        held = _HeldBlocks(query, gallery, k, exclude_self)
        for i, sweep in enumerate(sweeps):
            progress.wait_swept(i + 1)
            lo, hi = q_bounds[i], q_bounds[i + 1]
            rows = [(direct, row0) for _, _, direct, row0 in sweep if direct is not shared]
            if shared is not None:
                rows.append((shared, lo))
            result = _finish(k, rows, hi - lo, rescorer, lo)
            progress.finished(i + 1)
            yield from held.add(lo, *result)
        yield from held.flush()
    finally:
        progress.close()  # the caller stopped early or this thread failed: workers leave


def _sweep_part(
    query: torch.Tensor,
    gallery: torch.Tensor,
    q_bounds: list[int],
    g_bounds: list[int],
    i: int,
    todo: list[int],
    direct: _Buffers,
    row0: int,
    shared: _Buffers | None,
    floor: np.ndarray,
    exclude_self: bool,
    products: _TileOutputs,
) -> None:
    """One worker's tiles (i, j) of sweep i: the rows of block i offered to ``direct`` from
    its row ``row0`` on (the worker's own buffers, reset first, or block i's shared rows),
    those of block j > i (its columns, leave-one-out) to the shared buffers. bf16 operands
    give bf16 tiles, offered as fp32; ``products``: the worker's tile results, reused."""
    i0, i1 = q_bounds[i], q_bounds[i + 1]
    if direct is not shared:
        # block i's shared rows started at the floors and have only risen since (see the
        # module docstring); reset copies what it reads
        direct.reset(floor[i0:i1] if shared is None else shared.thr[i0:i1])
    x_i = query[i0:i1]
    for j in todo:
        j0, j1 = g_bounds[j], g_bounds[j + 1]
        sim = tiles.tile_product(x_i, gallery[j0:j1], products.get(i1 - i0, j1 - j0))
        sim = sim.float().contiguous()
        if exclude_self and j0 < i1 and i0 < j1:
            tiles.mask_self(sim, i0, j0)
        if shared is not None and j > i:
            direct.offer(sim, row0, j0, shared, j0, i0)
        else:
            direct.offer(sim, row0, j0)


class _TileOutputs:
    """One worker's tile results, one reused tensor per tile shape (a search has at most
    four: full tiles and the last block's), so that no tile allocates its 1 MB result."""

    def __init__(self, dtype: torch.dtype) -> None:
        """None yet, each made on first use."""
        self.dtype = dtype
        self.by_shape: dict[tuple[int, int], torch.Tensor] = {}

    def get(self, rows: int, cols: int) -> torch.Tensor:
        """The tensor for a ``rows`` x ``cols`` tile: overwritten by the next tile of that
        shape, so each is offered before the worker multiplies the next."""
        out = self.by_shape.get((rows, cols))
        if out is None:
            out = self.by_shape[(rows, cols)] = torch.empty(rows, cols, dtype=self.dtype)
        return out


def _finish(
    k: int,
    buffers: list[tuple[_Buffers, int]],
    n_rows: int,
    rescorer: bf16_candidates.Rescorer | None = None,
    start: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top k of a block's ``n_rows`` rows (from query row ``start``) from the union of
    their buffers (each given with the row where this block's rows start in it), and the
    rows where that union is not proved to hold the exact top k, which :class:`_HeldBlocks`
    redoes. With bf16 products the union's best are rescored by ``rescorer`` first."""
    def rows(arrays: list[np.ndarray]) -> np.ndarray:
        return np.stack([a[r0 : r0 + n_rows] for a, (_, r0) in zip(arrays, buffers, strict=True)])

    size = k if rescorer is None else buffers[0][0].size
    scores, indices, unproved, left_out = kernels.top_of_union(
        rows([b.keys for b, _ in buffers]), rows([b.count for b, _ in buffers]),
        rows([b.thr for b, _ in buffers]), size,
    )
    if rescorer is not None:
        return rescorer.top(start, scores, indices, left_out)
    redo = np.flatnonzero(unproved)
    return torch.from_numpy(scores), torch.from_numpy(indices), torch.from_numpy(redo)


class _HeldBlocks:
    """Blocks waiting for their unproved rows to be redone on the plain path, yielded in order.

    A redo multiplies its rows by the whole gallery, which a few rows read at memory speed
    (about 1 row in 1000 is redone, so most blocks would read the gallery for one or two
    rows): the rows of successive blocks are redone together, once REDO_BATCH of them wait
    or at the end. The blocks held meanwhile take their results' memory, n_rows x k x 12
    bytes at most, what a caller collecting all neighbours holds anyway.
    """

    def __init__(self, query: torch.Tensor, gallery: torch.Tensor, k: int, exclude_self: bool):
        self.query, self.gallery, self.k, self.exclude_self = query, gallery, k, exclude_self
        self.blocks: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.waiting = 0

    def add(
        self, start: int, scores: torch.Tensor, indices: torch.Tensor, redo: torch.Tensor
    ) -> list[tiles.Block]:
        """Take a block (its first row, results and rows to redo); the blocks now ready."""
        if not self.blocks and not redo.numel():
            return [(start, scores, indices)]
        self.blocks.append((start, scores, indices, redo))
        self.waiting += redo.numel()
        return self.flush() if self.waiting >= REDO_BATCH else []

    def flush(self) -> list[tiles.Block]:
        """Redo the waiting rows in one product; every held block, in order."""
        if self.waiting:
            rows = torch.cat([redo + start for start, _, _, redo in self.blocks])
            self_idx = rows if self.exclude_self else None
            scores, indices = tiles.exact_rows(self.query[rows], self.gallery, self.k, self_idx)
            done = 0
            for _, block_scores, block_indices, redo in self.blocks:
                n = redo.numel()
                block_scores[redo], block_indices[redo] = scores[done:done + n], indices[done:done + n]
                done += n
        ready = [(start, scores, indices) for start, scores, indices, _ in self.blocks]
        self.blocks, self.waiting = [], 0
        return ready
