"""Compiled (numba) kernels of the merge of :mod:`daalml.evaluation.knn_heaps`: a tile's
offers to its rows' and its columns' candidate buffers in one pass, and a block's top k from
the union of its buffers.

A buffer row holds up to ``capacity`` int64 keys (score and column, as
:func:`daalml.evaluation.knn_tiles.score_keys` packs them: larger = higher score, then lower
column) and a threshold. An entry is appended only if it scores strictly above the
threshold; a full row keeps its ``size`` largest keys (a quickselect) and raises its
threshold to the score of the smallest of them. So every entry a row left out, refused or
dropped, scores at most its threshold: all that the search's certificate needs, as it
needed of faiss's heap roots before. Against a min-heap of ``size`` entries, where each
entry that enters costs a sift through the heap, an entry costs an append, plus a
quickselect every ``capacity - size`` appends; the threshold rises in steps rather than
with every entry, so somewhat more entries enter.

A tile is read once for its rows and its columns (faiss's ``addn`` takes rows only, so the
columns needed a transposed copy). Per row of the tile, one vectorised pass flags the
entries above their row's or their column's threshold; the flagged ones are then listed
without a branch per entry (the 8-flag words holding any, then the flags in those) and
only they are looked at. The kernels release the GIL, so the search's worker threads run
them side by side; numba compiles them on first use (seconds) and caches the machine code
on disk (``__pycache__`` beside this file, or numba's cache directory).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable

import numpy as np

__all__ = ["AVAILABLE", "CAPACITY_FACTOR", "capacity", "kth_largest", "offer_tile", "top_of_union"]

AVAILABLE = importlib.util.find_spec("numba") is not None
"""Whether numba is installed; without it the search scans in torch. numba itself is
imported when the kernels are first called, not with this module, so a process that never
runs a tiled CPU search never loads it: with numba imported at start-up, two-process DDP
training with data-loader workers hung at the start of its second epoch in 2 of 5 runs
(`pytest -m slow tests/engine/test_reliability.py -k two_process`; 0 of 4 on the code
before numba, 0 of 5 with the import deferred; the cause was not found)."""

CAPACITY_FACTOR = 2
"""A buffer row holds this many times the entries it keeps: the quickselect of a full row
then comes once every ``size`` appends."""

_INT32_MAX = 2**31 - 1


def capacity(size: int) -> int:
    """Entries a buffer row holds when it keeps ``size`` of them (more than ``size``: the
    kernels append to a full row's kept ones without a bounds check)."""
    if CAPACITY_FACTOR < 2:
        raise ValueError(f"CAPACITY_FACTOR must be at least 2, not {CAPACITY_FACTOR}")
    return CAPACITY_FACTOR * size


def _offer_tile(
    sim: np.ndarray,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    row0: int,
    col0: int,
    cols: tuple[np.ndarray, np.ndarray, np.ndarray],
    col_row0: int,
    col_id0: int,
    columns: bool,
    size: int,
) -> None:
    """Offer tile ``sim`` (m x n, fp32): row a to buffer row ``row0 + a`` of ``rows`` (its
    keys, counts and thresholds) as columns ``col0 + b``; if ``columns``, also column b to
    buffer row ``col_row0 + b`` of ``cols`` as columns ``col_id0 + a``. Each buffer row
    keeps at least its ``size`` best.

    Per row of the tile: one vectorised pass flags the entries above their row's or their
    column's threshold, then the flagged ones are listed without a branch per entry (first
    the 8-flag words with any flag, then the flags in those), and only those are looked at.
    """
    m, n = sim.shape
    bits = sim.view(np.int32)
    capacity = rows[0].shape[1]
    row_keys, row_count, row_thr = rows
    col_keys, col_count, col_thr_all = cols
    col_thr = np.empty(n, dtype=np.float32)
    if columns:
        for b in range(n):
            col_thr[b] = col_thr_all[col_row0 + b]
    width = (n + 7) // 8 * 8
    flags = np.zeros(width, dtype=np.uint8)  # the tail past n stays 0
    words = flags.view(np.uint64)
    listed_words = np.empty(width // 8, dtype=np.int64)
    flagged = np.empty(width, dtype=np.int64)
    for a in range(m):
        r = row0 + a
        thr = row_thr[r]
        if columns:
            for b in range(n):
                flags[b] = (sim[a, b] > thr) | (sim[a, b] > col_thr[b])
        else:
            for b in range(n):
                flags[b] = sim[a, b] > thr
        n_words = 0
        for w in range(width // 8):
            listed_words[n_words] = w
            n_words += words[w] != 0
        n_flagged = 0
        for q in range(n_words):
            b0 = 8 * listed_words[q]
            for e in range(8):
                flagged[n_flagged] = b0 + e
                n_flagged += flags[b0 + e]
        for q in range(n_flagged):
            b = flagged[q]
            s = sim[a, b]
            key = np.int64(_ordered(bits[a, b])) << 32
            # appends written out here: a call per entry (its arrays' reference counts)
            # took several times the append itself
            if s > thr:
                j = row_count[r]
                row_keys[r, j] = key | (_INT32_MAX - col0 - b)
                row_count[r] = j + 1
                if j + 1 == capacity:
                    thr = row_thr[r] = _keep_best(row_keys, row_count, r, size)
            if columns and s > col_thr[b]:
                c = col_row0 + b
                j = col_count[c]
                col_keys[c, j] = key | (_INT32_MAX - col_id0 - a)
                col_count[c] = j + 1
                if j + 1 == capacity:
                    col_thr[b] = col_thr_all[c] = _keep_best(col_keys, col_count, c, size)


def _ordered(bits: int) -> int:
    """A float's int32 bits mapped so that they order like its value (see
    :func:`daalml.evaluation.knn_tiles.score_keys`), -0.0 as +0.0."""
    if bits == -_INT32_MAX - 1:  # -0.0
        return 0
    return bits ^ _INT32_MAX if bits < 0 else bits


def _score(key: int) -> float:
    """The fp32 score of a key (called once per quickselect: it allocates)."""
    cell = np.empty(1, dtype=np.int32)
    cell[0] = _unordered(np.int32(key >> 32))
    return cell.view(np.float32)[0]


def _unordered(ordered: int) -> int:
    """The int32 bits of the float that :func:`_ordered` maps to ``ordered``."""
    return ordered ^ _INT32_MAX if ordered < 0 else ordered


def _keep_best(keys: np.ndarray, count: np.ndarray, r: int, size: int) -> float:
    """Keep the ``size`` largest keys of full buffer row r (its first ``size``); its new
    threshold, the score of the size-th largest."""
    row = keys[r]
    _largest_first(row, row.shape[0], size)
    count[r] = size
    return _score(row[size - 1])


def _largest_first(row: np.ndarray, n: int, size: int) -> None:
    """Reorder ``row[:n]`` so that its ``size`` largest come first: a quickselect (Hoare's
    partition, descending), after which entry ``size - 1`` is the size-th largest, none
    before it smaller and none after it larger."""
    lo, hi, target = 0, n - 1, size - 1
    while lo < hi:
        a, b, c = row[lo], row[(lo + hi) // 2], row[hi]
        pivot = max(min(a, b), min(max(a, b), c))
        i, j = lo, hi
        while i <= j:
            while row[i] > pivot:
                i += 1
            while row[j] < pivot:
                j -= 1
            if i <= j:
                row[i], row[j] = row[j], row[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            break


def _top_of_union(
    keys: np.ndarray, counts: np.ndarray, thresholds: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row of the stacked buffers (``keys``: buffers x rows x capacity; ``counts``,
    ``thresholds``: buffers x rows), the best k of their union by (score descending, column
    ascending), whether that row is unproved (fewer than k entries: its places past them
    hold -inf and -1; or the k-th best not above the largest threshold), and that largest
    threshold, which bounds every entry the buffers left out."""
    n_buffers, m, width = keys.shape
    scores = np.full((m, k), -np.inf, dtype=np.float32)
    columns = np.full((m, k), -1, dtype=np.int64)
    score_bits = scores.view(np.int32)
    unproved = np.zeros(m, dtype=np.bool_)
    largest = np.empty(m, dtype=np.float32)
    union = np.empty(n_buffers * width, dtype=np.int64)
    for r in range(m):
        n, left_out = 0, thresholds[0, r]
        for h in range(n_buffers):
            left_out = max(left_out, thresholds[h, r])
            c = counts[h, r]
            union[n : n + c] = keys[h, r, :c]
            n += c
        top = min(k, n)
        if n > top:
            _largest_first(union, n, top)
        best = union[:top]
        best.sort()  # in place: ascending
        for t in range(top):
            key = best[top - 1 - t]
            score_bits[r, t] = _unordered(np.int32(key >> 32))
            columns[r, t] = _INT32_MAX - (key & 0xFFFFFFFF)
        unproved[r] = n < k or scores[r, k - 1] <= left_out
        largest[r] = left_out
    return scores, columns, unproved, largest


def _kth_largest(sim: np.ndarray, rank: int, out: np.ndarray) -> None:
    """Per row of ``sim`` (fp32, no NaN, at least ``rank`` columns), its ``rank``-th
    largest value, as ``torch.topk(sim, rank).values[:, -1]``: the row's best ``rank`` kept
    in order by insertion (``rank`` is a few; torch's topk took 2.7 us a row of 312)."""
    m, n = sim.shape
    best = np.empty(rank, dtype=np.float32)
    for r in range(m):
        for b in range(n):
            v = sim[r, b]
            if b < rank:
                i = b
            elif v > best[rank - 1]:
                i = rank - 1
            else:
                continue
            while i > 0 and best[i - 1] < v:
                best[i] = best[i - 1]
                i -= 1
            best[i] = v
        out[r] = best[rank - 1]


_COMPILING = threading.Lock()
_compiled: dict[str, Callable] = {}


def _kernel(name: str) -> Callable:
    """The compiled kernel ``name``; the first call imports numba and wraps every kernel (the
    module's names then refer to the compiled functions, as numba resolves the calls among
    them by name)."""
    if not _compiled:
        with _COMPILING:
            if not _compiled:
                import numba

                jit = numba.njit(nogil=True, cache=True, boundscheck=False)
                names = ("_ordered", "_unordered", "_score", "_largest_first", "_keep_best")
                for helper in names:
                    globals()[helper] = jit(globals()[helper])
                _compiled.update(
                    offer_tile=jit(_offer_tile), top_of_union=jit(_top_of_union),
                    kth_largest=jit(_kth_largest),
                )
    return _compiled[name]


def offer_tile(*args: object) -> None:
    """:func:`_offer_tile`, compiled (the arguments as there)."""
    _kernel("offer_tile")(*args)


def top_of_union(*args: object) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_top_of_union`, compiled (the arguments as there)."""
    return _kernel("top_of_union")(*args)


def kth_largest(sim: np.ndarray, rank: int) -> np.ndarray:
    """:func:`_kth_largest`, compiled: each row's ``rank``-th largest value (fp32)."""
    out = np.empty(sim.shape[0], dtype=np.float32)
    _kernel("kth_largest")(sim, rank, out)
    return out
