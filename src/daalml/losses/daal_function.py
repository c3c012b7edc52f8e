"""The proxy part of DAAL as one autograd function with its closed-form gradient.

Autograd through the straightforward formulas keeps about ten ``B x C`` temporaries alive;
here the forward pass builds the gradient with respect to the segment similarities directly
(one ``B x C`` tensor, plus the projection coordinates ``t``), and the backward pass is two
matrix products. Two facts make this short:

- only the positive pair of each sample enters the intra-class term, so it needs ``B`` values,
  not ``B x C``;
- ``t`` minimises the distance along the line, so the derivative of ``D^2`` with respect to
  ``<x - a, u>`` is ``-2 t`` whether or not ``t`` was clamped (and ``t^2`` for ``|u|^2``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from daalml.losses.geometry import EPS


class ProxySegmentLoss(torch.autograd.Function):
    """L_intra + lambda * L_inter from embeddings, segment starts and directions.

    Returns the loss and, for logging only (no gradient), the two terms L_intra and L_inter.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,  # (B, d)
        start: torch.Tensor,  # (C, d)
        direction: torch.Tensor,  # (C, d), ignored in "point" mode
        labels: torch.Tensor,  # (B,) int64
        margins: torch.Tensor,  # (C,)
        alpha: float,
        lambda_inter: float,
        mode: str,
    ) -> torch.Tensor:
        batch, num_classes = x.shape[0], start.shape[0]
        rows = torch.arange(batch, device=x.device)
        use_direction = mode != "point"
        vectors = torch.cat([start, direction]) if use_direction else start
        products = x @ vectors.T  # (B, C) or (B, 2C): the only large product
        point_sq = (x * x).sum(dim=1, keepdim=True)
        start_sq = (start * start).sum(dim=1)

        # similarity s = 1 - D^2 / 2, built in place in the first half of `products`
        similarity = products[:, :num_classes]
        similarity.mul_(2.0).sub_(point_sq).sub_(start_sq)  # -|x - a|^2
        t = None
        if use_direction:
            dir_sq = (direction * direction).sum(dim=1)
            offset = products[:, num_classes:].sub_((start * direction).sum(dim=1))
            t = offset / (dir_sq + EPS)
            if mode == "segment":
                t.clamp_(0.0, 1.0)
            # -D^2 = -|x - a|^2 + t (2 <x - a, u> - t |u|^2)
            offset.mul_(2.0).sub_(t * dir_sq).mul_(t)
            similarity.add_(offset)
        similarity.clamp_(max=0.0).mul_(0.5).add_(1.0)

        # intra: per present class, log(1 + sum over its samples of exp(-alpha (s - m)))
        positive_sim = similarity[rows, labels]
        pos_logits = -alpha * (positive_sim - margins[labels])
        pos_shift = torch.zeros(num_classes, dtype=x.dtype, device=x.device)
        pos_shift.scatter_reduce_(0, labels, pos_logits, reduce="amax", include_self=True)
        pos_weights = torch.exp(pos_logits - pos_shift[labels])
        pos_denom = torch.exp(-pos_shift).index_add_(0, labels, pos_weights)
        present = torch.bincount(labels, minlength=num_classes) > 0
        num_present = present.sum().to(x.dtype)
        intra = (pos_shift + torch.log(pos_denom))[present].sum() / num_present

        # inter: per class, log(1 + sum over other samples of exp(alpha (s + m))), in place
        neg = similarity.add_(margins).mul_(alpha)
        neg[rows, labels] = float("-inf")
        neg_shift = neg.amax(dim=0).clamp_min_(0.0)
        weights = neg.sub_(neg_shift).exp_()
        neg_denom = weights.sum(dim=0).add_(torch.exp(-neg_shift))
        inter = (neg_shift + torch.log(neg_denom)).sum() / num_classes

        # dL/ds: the softmax weights of both terms, scaled
        grad_sim = weights.mul_(lambda_inter * alpha / num_classes / neg_denom)
        grad_sim[rows, labels] = -alpha / num_present * pos_weights / pos_denom[labels]
        ctx.save_for_backward(x, start, direction, grad_sim, t)
        ctx.use_direction = use_direction
        intra, inter = intra.detach(), inter.detach()
        ctx.mark_non_differentiable(intra, inter)
        return intra + lambda_inter * inter, intra, inter

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_output: torch.Tensor, *_terms: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        x, start, direction, grad_sim, t = ctx.saved_tensors
        grad_sim = grad_sim * grad_output
        # s = 1 - D^2 / 2 with D^2 = |x|^2 - 2<x, a> + |a|^2 - 2 t <x - a, u> + t^2 |u|^2
        grad_point_sq = -0.5 * grad_sim.sum(dim=1, keepdim=True)  # (B, 1)
        grad_start_sq = -0.5 * grad_sim.sum(dim=0)  # (C,)
        if not ctx.use_direction:
            grad_x = grad_sim @ start + 2.0 * grad_point_sq * x
            grad_start = grad_sim.T @ x + 2.0 * grad_start_sq[:, None] * start
            return grad_x, grad_start, None, None, None, None, None, None
        grad_sim_t = grad_sim * t
        grad_products = torch.cat([grad_sim, grad_sim_t], dim=1)  # d/d<x,a>, d/d<x,u>
        grad_x = grad_products @ torch.cat([start, direction]) + 2.0 * grad_point_sq * x
        grad_vectors = grad_products.T @ x
        num_classes = start.shape[0]
        grad_start_dir = -grad_sim_t.sum(dim=0)  # d/d<a, u>
        grad_dir_sq = -0.5 * (grad_sim_t * t).sum(dim=0)  # d/d|u|^2
        grad_start = (
            grad_vectors[:num_classes]
            + 2.0 * grad_start_sq[:, None] * start
            + grad_start_dir[:, None] * direction
        )
        grad_direction = (
            grad_vectors[num_classes:]
            + grad_start_dir[:, None] * start
            + 2.0 * grad_dir_sq[:, None] * direction
        )
        return grad_x, grad_start, grad_direction, None, None, None, None, None
