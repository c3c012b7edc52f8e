"""Per-query options of the retrieval metrics: gallery items to ignore, and query categories.

An ignore rule removes, per query, some gallery items from both its ranking and its
relevant set R, as OML's ``mask_to_ignore`` does. Two forms: a dense boolean
(n_query, n_gallery) matrix (:class:`MaskIgnore`, OML's own form) and group ids
(:class:`GroupIgnore`: a query ignores the gallery items of its own group, e.g. the other
frames of its sequence), which never builds an n_query x n_gallery matrix. The search
asks for ``k + extra`` neighbours (``extra``: the most items one query ignores) and
:func:`drop_ignored` removes the ignored ones, which keeps the top k exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from daalml.errors import DaalmlError

__all__ = ["GroupIgnore", "IgnoreRule", "MaskIgnore", "as_codes", "drop_ignored"]

Block = tuple[int, torch.Tensor, torch.Tensor]


def _ids(values: object, n: int, name: str) -> np.ndarray:
    """1-D numpy array of ``n`` integer or string ids."""
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if arr.ndim != 1:
        raise DaalmlError(f"{name}: shape {arr.shape} is not 1-D")
    if arr.shape[0] != n:
        raise DaalmlError(f"{name}: {arr.shape[0]} values for {n} samples")
    if arr.dtype.kind not in "iuUS":
        raise DaalmlError(f"{name}: dtype {arr.dtype} is not integers or strings")
    return arr


def as_codes(values: object, n: int, name: str) -> tuple[np.ndarray, list[str]]:
    """int64 codes (n,) of 1-D ids (integers or strings) and each code's id as a string."""
    uniques, codes = np.unique(_ids(values, n, name), return_inverse=True)
    return codes.astype(np.int64), [str(u) for u in uniques.tolist()]


def _pair_counts(
    query_keys: Sequence[torch.Tensor], gallery_keys: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Per query, the number of gallery items whose keys all equal the query's."""
    n_q = query_keys[0].shape[0]
    joint = torch.stack([torch.cat([q, g]) for q, g in zip(query_keys, gallery_keys, strict=True)])
    _, inverse = torch.unique(joint, dim=1, return_inverse=True)
    counts = torch.bincount(inverse[n_q:], minlength=int(inverse.max()) + 1)
    return counts[inverse[:n_q]]


class GroupIgnore:
    """A query ignores every gallery item of its own group (one id per query and item)."""

    def __init__(self, query_groups: torch.Tensor, gallery_groups: torch.Tensor) -> None:
        self.query_groups, self.gallery_groups = query_groups, gallery_groups

    @classmethod
    def from_ids(
        cls, query_ids: object, gallery_ids: object | None, n_q: int, n_g: int, device: torch.device
    ) -> GroupIgnore:
        """From ids as given (``gallery_ids`` None: leave-one-out, one set)."""
        if gallery_ids is None:
            codes, _ = as_codes(query_ids, n_q, "ignore_groups")
            groups = torch.from_numpy(codes).to(device)
            return cls(groups, groups)
        q_ids = _ids(query_ids, n_q, "ignore_groups[0]")
        g_ids = _ids(gallery_ids, n_g, "ignore_groups[1]")
        if (q_ids.dtype.kind in "US") != (g_ids.dtype.kind in "US"):
            raise DaalmlError("ignore_groups: query and gallery groups mix strings and integers")
        joint, _ = as_codes(np.concatenate([q_ids, g_ids]), n_q + n_g, "ignore_groups")
        joint_t = torch.from_numpy(joint).to(device)
        return cls(joint_t[:n_q], joint_t[n_q:])

    def extra(self, exclude_self: bool) -> int:
        """The most gallery items one query ignores (its own item not counted)."""
        same = _pair_counts([self.query_groups], [self.gallery_groups])
        return int(same.max()) - int(exclude_self)

    def ignored(self, start: int, idx: torch.Tensor) -> torch.Tensor:
        """Which of the neighbours ``idx`` of queries ``start``.. are ignored."""
        rows = self.query_groups[start : start + idx.shape[0]]
        return self.gallery_groups[idx] == rows[:, None]

    def relevant(
        self, query_labels: torch.Tensor, gallery_labels: torch.Tensor, exclude_self: bool
    ) -> torch.Tensor:
        """R per query: gallery items of its class outside its group (self is in its group,
        so ``exclude_self`` changes nothing)."""
        same_class = _pair_counts([query_labels], [gallery_labels])
        same_both = _pair_counts(
            [query_labels, self.query_groups], [gallery_labels, self.gallery_groups]
        )
        return same_class - same_both


class MaskIgnore:
    """A dense boolean (n_query, n_gallery) matrix: True = ignore (OML's ``mask_to_ignore``)."""

    def __init__(self, mask: object, n_q: int, n_g: int, device: torch.device) -> None:
        t = mask.detach() if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
        if t.dtype != torch.bool:
            raise DaalmlError(f"mask_to_ignore: dtype {t.dtype} is not bool")
        if tuple(t.shape) != (n_q, n_g):
            raise DaalmlError(
                f"mask_to_ignore: shape {tuple(t.shape)} is not (n_query, n_gallery) = ({n_q}, {n_g})"
            )
        self.mask = t.to(device)

    def extra(self, exclude_self: bool) -> int:
        """The most gallery items one query ignores (the diagonal not counted if excluded)."""
        counts = self.mask.sum(dim=1)
        if exclude_self:
            counts = counts - self.mask.diagonal().to(counts.dtype)
        return int(counts.max())

    def ignored(self, start: int, idx: torch.Tensor) -> torch.Tensor:
        """Which of the neighbours ``idx`` of queries ``start``.. are ignored."""
        return self.mask[start : start + idx.shape[0]].gather(1, idx)

    def relevant(
        self, query_labels: torch.Tensor, gallery_labels: torch.Tensor, exclude_self: bool
    ) -> torch.Tensor:
        """R per query: gallery items of its class not masked (nor itself, leave-one-out)."""
        r = torch.empty(query_labels.shape[0], dtype=torch.int64, device=query_labels.device)
        step = 1024
        for s in range(0, query_labels.shape[0], step):
            same = gallery_labels[None, :] == query_labels[s : s + step, None]
            r[s : s + step] = (same & ~self.mask[s : s + step]).sum(dim=1)
        if exclude_self:
            r -= (~self.mask.diagonal()).to(torch.int64)
        return r


IgnoreRule = GroupIgnore | MaskIgnore


def drop_ignored(blocks: Iterator[Block], rule: IgnoreRule, k: int) -> Iterator[Block]:
    """The first ``k`` neighbours per query that ``rule`` keeps, in order; index -1 where a
    query has fewer than ``k`` left."""
    for start, scores, idx in blocks:
        ignored = rule.ignored(start, idx)
        order = torch.sort(ignored.to(torch.int8), dim=1, stable=True).indices[:, :k]
        kept = idx.gather(1, order).masked_fill(ignored.gather(1, order), -1)
        if scores.shape == idx.shape:
            scores = scores.gather(1, order)
        yield start, scores, kept
