"""Rank metrics from the neighbour blocks: per query AP@R, R-precision and the first hit's rank,
their averages (Recall@k, MAP@R, R-precision), per query category, and unmatchable queries.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from daalml.evaluation.inputs import ArrayLike, _as_labels


def count_unmatchable_queries(labels: ArrayLike) -> int:
    """Number of samples whose class has a single sample (no leave-one-out match exists)."""
    lab = _as_labels(labels, None, "labels", torch.device("cpu"))
    _, counts = torch.unique(lab, return_counts=True)
    return int((counts == 1).sum())


def _per_query(
    blocks: Iterator[tuple[int, torch.Tensor, torch.Tensor]],
    query_labels: torch.Tensor,
    gallery_labels: torch.Tensor,
    r_per_query: torch.Tensor,
    padded: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per query: rank of the first hit (k if none), AP@R and R-precision.

    With ``padded``, index -1 marks a slot with no neighbour (all others were ignored)."""
    n = query_labels.shape[0]
    device = query_labels.device
    first_hit = torch.empty(n, dtype=torch.int64, device=device)
    ap_r = torch.zeros(n, dtype=torch.float64, device=device)
    r_prec = torch.zeros(n, dtype=torch.float64, device=device)
    for start, _, idx in blocks:
        stop = start + idx.shape[0]
        k = idx.shape[1]
        if padded:
            hit = (gallery_labels[idx.clamp(min=0)] == query_labels[start:stop, None]) & (idx >= 0)
        else:
            hit = gallery_labels[idx] == query_labels[start:stop, None]
        pos = torch.arange(k, device=device)
        first_hit[start:stop] = torch.where(hit.any(dim=1), hit.to(torch.int8).argmax(dim=1), k)
        r = r_per_query[start:stop]
        hit_r = hit & (pos[None, :] < r[:, None])
        hits_so_far = hit_r.cumsum(dim=1, dtype=torch.float64)
        prec_at_hits = hits_so_far / (pos + 1).to(torch.float64) * hit_r
        denom = r.clamp(min=1).to(torch.float64)
        ap_r[start:stop] = prec_at_hits.sum(dim=1) / denom
        r_prec[start:stop] = hit_r.sum(dim=1).to(torch.float64) / denom
    return first_hit, ap_r, r_prec


def _summary(
    per_query: tuple[torch.Tensor, torch.Tensor, torch.Tensor], valid: torch.Tensor, ks: list[int]
) -> dict[str, float]:
    """Recall@k, MAP@R and R-precision averaged over the ``valid`` queries."""
    first_hit, ap_r, r_prec = per_query
    out = {f"recall@{k}": float((first_hit[valid] < k).double().mean()) for k in ks}
    out["map@r"] = float(ap_r[valid].mean())
    out["r_precision"] = float(r_prec[valid].mean())
    return out


def _per_category(
    per_query: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    valid: torch.Tensor,
    categories: tuple[np.ndarray, list[str]],
    ks: list[int],
) -> dict[str, dict[str, float | int]]:
    """``{category: {rank metrics..., "queries_without_relevant": n}}``; a category whose
    queries all lack a relevant item gets only the count."""
    codes, names = categories
    code_t = torch.from_numpy(codes).to(valid.device)
    out: dict[str, dict[str, float | int]] = {}
    for c, name in enumerate(names):
        rows = code_t == c
        entry: dict[str, float | int] = {}
        if bool((valid & rows).any()):
            entry.update(_summary(per_query, valid & rows, ks))
        entry["queries_without_relevant"] = int((rows & ~valid).sum())
        out[name] = entry
    return out
