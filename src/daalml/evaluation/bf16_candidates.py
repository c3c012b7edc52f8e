"""The candidates of a tiled search with bf16 products: how many each row keeps, whether
bf16 products pay for the data at hand, and their fp32 rescoring and certificate.

:mod:`daalml.evaluation.knn_heaps` multiplies the tiles in bf16 and keeps each row's best
``bf16_kept(k)`` by those scores; :class:`Rescorer` gives a block's rows their exact top k
among them (fp32 dot products in the exact GEMM's order, :mod:`daalml.evaluation.gemm_dots`)
and says which rows are proved: those whose k-th exact score lies above what any item left
out could score (its bf16 score widened by :mod:`daalml.evaluation.bf16_bounds`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from daalml.evaluation import gemm_dots
from daalml.evaluation import knn_tiles as tiles
from daalml.evaluation.bf16_bounds import (
    U_BF16,
    bf16_error,
    bf16_score_bound,
    norms_up,
    residual_norms,
)

__all__ = [
    "BF16_CHECK_QUANTILE",
    "BF16_CHECK_ROWS",
    "BF16_MARGIN_MIN",
    "Rescorer",
    "bf16_kept",
    "bf16_plan",
]


BF16_MARGIN_MIN = 16
"""With bf16 products each buffer row keeps ``bf16_kept(k)`` = k + 2 max(16, ceil(k / 3))
candidates. Redoing a row costs a product with the whole gallery, a candidate more only a
dot product per row: on the benchmark data at N = 60,000 (k = 75) keeping k + 25 left 373
rows to redo (7.7 s), k + 37 and k + 50 one row (6.6 and 6.8 s); at N = 20,000 (k = 69)
k + 23, k + 35 and k + 46 took 1.15, 1.10 and 1.08 s (``benchmarks/bench_bf16_kept.py``,
performance.md)."""


def bf16_kept(k: int) -> int:
    """Candidates a buffer row keeps for ``k`` neighbours with bf16 products."""
    return k + 2 * max(BF16_MARGIN_MIN, -(-k // 3))


BF16_CHECK_ROWS = 128
BF16_CHECK_QUANTILE = 0.99
""":func:`bf16_plan` asks that this share of a sample of ``BF16_CHECK_ROWS`` queries need at
most ``bf16_kept(k)`` candidates for its certificate."""


def bf16_plan(
    query: torch.Tensor, gallery: torch.Tensor, k: int, exclude_self: bool
) -> int | None:
    """How many candidates a search with bf16 products should keep per row
    (``bf16_kept(k)``), or None where more would be needed, so that fp32 tiles are faster
    (past it the rescoring, a dot product per candidate at about a fifteenth of a GEMM's
    speed, and the redone rows cost about what bf16 tiles save where bf16 matmul is 2x
    faster than fp32).

    On a fixed random sample of queries it counts the candidates each row's certificate
    needs (the items whose bf16 score, widened by the error bound, reaches the row's exact
    k-th score) and asks that ``BF16_CHECK_QUANTILE`` of them need at most that. Where
    scores crowd around the k-th (vectors without structure, in many
    dimensions), hundreds would be needed. An estimate for the choice only (the sample's
    largest residual stands for the gallery's); exactness never depends on it. Costs two
    products of the sample with the gallery (about 3% of the search at N = 20,000)."""
    gen = torch.Generator().manual_seed(0)
    rows = torch.randperm(query.shape[0], generator=gen)[:BF16_CHECK_ROWS].sort().values
    q = query[rows]
    q16 = q.bfloat16()
    exact = tiles.tile_product(q, gallery)
    approx = tiles.tile_product(q16, gallery.bfloat16())
    if exclude_self:
        exact[torch.arange(rows.shape[0]), rows] = float("-inf")
        approx[torch.arange(rows.shape[0]), rows] = float("-inf")
    kth = torch.topk(exact, k, dim=1).values[:, -1]
    q_norm, q_res = norms_up(q), residual_norms(q, q16)
    err = bf16_error(q_norm, q_res, float(q_norm.max()), float(q_res.max()), query.shape[1])
    # the bf16 score from which the bound reaches the k-th (the bound grows with the score)
    reach = kth - err
    reach = reach / (1 + torch.where(reach >= 0, U_BF16, -U_BF16) / (1 - U_BF16))
    needed = (approx >= reach[:, None].bfloat16()).sum(dim=1)
    wanted = math.ceil(float(torch.quantile(needed.double(), BF16_CHECK_QUANTILE)))
    return None if wanted > bf16_kept(k) else bf16_kept(k)


class Rescorer:
    """The bf16 operands of a search with bf16 products, and the exact top k of a block's
    candidates: fp32 scores with the exact path's bits, and the rows they are proved for."""

    def __init__(
        self, query: torch.Tensor, gallery: torch.Tensor, k: int, symmetric: bool, kept: int
    ) -> None:
        """Round the operands to bf16 and bound each query's bf16 error (see bf16_bounds);
        a symmetric search also keeps each pair's dot product for the later row of the two
        (``kept`` a row; :class:`daalml.evaluation.gemm_dots.Memo`)."""
        bounds = gemm_dots.split(query.shape[1])
        if bounds is None:
            raise RuntimeError("bf16 products need gemm_dots.split to find this GEMM's order")
        self.query, self.gallery, self.k, self.bounds = query, gallery, k, bounds
        q16 = query.bfloat16()
        q_norm, q_res = norms_up(query), residual_norms(query, q16)
        if symmetric:
            g16, g_norms, g_residuals = q16, q_norm, q_res
        else:
            g16 = gallery.bfloat16()
            g_norms, g_residuals = norms_up(gallery), residual_norms(gallery, g16)
        self.operands = (q16, g16)
        g_norm = float(g_norms.max()) if gallery.shape[0] else 0.0
        g_res = float(g_residuals.max()) if gallery.shape[0] else 0.0
        self.err = bf16_error(q_norm, q_res, g_norm, g_res, query.shape[1])
        self.memo = gemm_dots.Memo(query.shape[0], kept) if symmetric else None

    def top(
        self, start: int, approx: np.ndarray, cand: np.ndarray, left_out: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows ``start`` on: their top k among ``cand`` (the union's best by bf16 score,
        ``approx``, descending; -1 and -inf past a short union), and the rows not proved.

        Only a prefix of each row is rescored: the k best by bf16 score each score at least
        the lower bound of the k-th, so a candidate whose upper bound lies below it cannot
        rank in the top k, nor can any after it. Left out, and bounded by the certificate,
        are the items under the largest threshold (``left_out``) and those after the prefix
        (or, where the whole row is rescored, after the last candidate)."""
        end = start + cand.shape[0]
        err = self.err[start:end]
        approx_t = torch.from_numpy(approx)
        worst_top = approx_t[:, self.k - 1]
        lowest = worst_top - worst_top.abs() * (U_BF16 / (1 - U_BF16)) - err
        upper = bf16_score_bound(approx_t, err[:, None])
        n_rescored = (upper >= lowest[:, None]).sum(dim=1)
        counts = n_rescored.numpy()
        if self.memo is None:
            exact = gemm_dots.dots(self.query[start:end], self.gallery, cand, self.bounds, counts)
        else:
            exact = gemm_dots.symmetric_dots(self.query, start, cand, self.bounds, counts, self.memo)
        keys = tiles.score_keys(torch.from_numpy(exact), torch.from_numpy(cand).clamp(min=0))
        scores, indices = tiles.decode_keys(torch.topk(keys, self.k, dim=1).values)
        after = approx_t.gather(1, n_rescored.clamp(max=cand.shape[1] - 1)[:, None])[:, 0]
        beyond = torch.maximum(torch.from_numpy(left_out), after)
        redo = torch.nonzero(~(scores[:, -1] > bf16_score_bound(beyond, err))).squeeze(1)
        return scores.contiguous(), indices.contiguous(), redo
