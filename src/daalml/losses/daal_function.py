"""DAAL's loss as one autograd function with its closed-form gradient.

Autograd through the straightforward formulas keeps about ten ``B x C`` temporaries alive,
makes a dozen passes over the ``(C, 2, d)`` vertices (normalise, subtract, concatenate, and the
same again backwards) and runs some thirty small graph nodes. Here the raw vertices enter one
``(B x d) @ (d x 2C)`` product in their stored, interleaved order (``a_0, b_0, a_1, b_1, ...``:
no copy), normalisation is a per-column rescaling of that product, and everything else about a
segment comes from four numbers per class (``|a|``, ``|b|``, ``|b - a|`` and the Gram entries
derived from them). The forward pass already builds the gradient with respect to the products
(one ``B x 2C`` tensor kept for the backward pass), so the backward pass is two matrix products
plus two fused passes over the vertices. Three facts make this short:

- the closest point of a segment is ``q = (1 - t) a + t b``, so ``D^2 = |x|^2 - 2 (1 - t) <x, a>
  - 2 t <x, b> + (1 - t)^2 |a|^2 + 2 t (1 - t) <a, b> + t^2 |b|^2``;
- ``t`` minimises ``D^2`` along the line (or is clamped, hence locally constant), so its own
  derivative never enters the gradient;
- only the positive pair of each sample enters the intra-class term: ``B`` values, not ``B x C``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from daalml.losses.geometry import EPS

OWN_COLUMNS: tuple[str, ...] = ("dist_sq", "coord", "t", "start_product", "offset")
"""Columns of ``own``: D^2, p = <x - a, u> / |u|, the (clamped) t, <x, a> and <x - a, u>."""


CLASS_COLUMNS: tuple[str, ...] = ("start_sq", "direction_sq", "mean_sq", "count")
"""Columns of the per-class output: |a|^2, |u|^2 (0 in point mode), |x_bar|^2 (0 unless
``class_means``) and the number of samples in the batch."""


def class_mean_norms_sq(
    x: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor
) -> torch.Tensor:
    """|x_bar_c|^2 (C,): the squared norm of each class's batch mean (0 for absent classes).

    With more classes than samples the present classes are renumbered 0..G-1 in label order
    (a sort, no host sync on a GPU), so that the class sums take (B, d), never (C, d).
    """
    num_classes, batch = counts.shape[0], x.shape[0]
    if num_classes <= batch:
        sums = x.new_zeros(num_classes, x.shape[1]).index_add_(0, labels, x)
        return torch.linalg.vector_norm(sums, dim=1).square_().div_(counts.clamp_min(1).square())
    sorted_labels, order = labels.sort()
    first = torch.ones_like(sorted_labels, dtype=torch.bool)
    first[1:] = sorted_labels[1:] != sorted_labels[:-1]
    group_sorted = first.cumsum(0) - 1
    group = torch.empty_like(labels).scatter_(0, order, group_sorted)
    sums = torch.zeros_like(x).index_add_(0, group, x)
    norms_sq = torch.linalg.vector_norm(sums, dim=1).square_()[group_sorted]
    mean_sq = x.new_zeros(num_classes).scatter_(0, sorted_labels, norms_sq)
    return mean_sq.div_(counts.clamp_min(1).square())


@dataclass(frozen=True)
class DAALOptions:
    """The scalar settings the loss function needs (see DAALLoss for their meaning)."""

    alpha: float
    lambda_inter: float
    lambda_len: float
    mode: str  # "segment", "line" or "point"
    normalize: bool
    class_means: bool = False  # also measure |x_bar_c|^2 (the v2 statistics need it)


def _vertex_scalars(
    vertices: torch.Tensor, normalize: bool, point: bool
) -> dict[str, torch.Tensor]:
    """Per-class scale and Gram numbers of the (optionally normalised) vertices.

    ``scale`` (C, 1|2) turns raw products into products with the normalised vertices
    (``1 / max(|v|, eps)`` as F.normalize does, or 1). ``uu = |b^ - a^|^2`` comes from
    ``|b - a|^2`` and the norm difference, which keeps it accurate for short segments, where
    ``|a^|^2 + |b^|^2 - 2 <a^, b^>`` would cancel.
    """
    norms = torch.linalg.vector_norm(vertices[:, :1] if point else vertices, dim=-1)
    if normalize:
        scale = 1.0 / norms.clamp_min(EPS)
        projected = norms > EPS  # where F.normalize's gradient removes the radial part
    else:
        scale = torch.ones_like(norms)
        projected = torch.zeros_like(norms, dtype=torch.bool)
    unit_norms = norms * scale
    out = {"scale": scale, "projected": projected, "aa": unit_norms[:, 0].square()}
    if point:
        return out
    direction = vertices[:, 1] - vertices[:, 0]  # raw u, (C, d)
    raw_gap_sq = torch.linalg.vector_norm(direction, dim=-1).square()  # no (C, d) temporary
    uu = scale[:, 0] * scale[:, 1] * (raw_gap_sq - (norms[:, 0] - norms[:, 1]).square())
    uu = (uu + (unit_norms[:, 0] - unit_norms[:, 1]).square()).clamp_min(0.0)
    bb = unit_norms[:, 1].square()
    # <a^, u^> and scale_b - scale_a without cancellation, for short segments: with
    # |b|^2 - |a|^2 = <u, 2a + u>, scale_b - scale_a = -<u, 2a + u> / ((|a| + |b|) |a| |b|)
    raw_au = torch.linalg.vecdot(direction, vertices[:, 0])
    if normalize:
        both = projected.all(dim=1)
        denom = (norms.sum(dim=1) * norms.prod(dim=1)).clamp_min(EPS)
        accurate = -(2.0 * raw_au + raw_gap_sq) / denom
        scale_gap = torch.where(both, accurate, scale[:, 1] - scale[:, 0])
    else:
        scale_gap = torch.zeros_like(raw_au)
    au = scale[:, 0] * (scale[:, 1] * raw_au + scale_gap * norms[:, 0].square())
    out.update(bb=bb, uu=uu, ab=0.5 * (out["aa"] + bb - uu), au=au, scale_gap=scale_gap)
    out["direction"] = direction
    return out


def _similarities(
    x: torch.Tensor,
    vertices: torch.Tensor,
    labels: torch.Tensor,
    geo: dict[str, torch.Tensor],
    options: DAALOptions,
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None, torch.Tensor]:
    """(s, products with the raw vertices, t, own): s = 1 - D^2 / 2 of every pair.

    One ``(B, C)`` product per vertex, read in place from the strided ``(C, 2, d)`` parameter,
    so that every elementwise pass below runs over contiguous memory. ``own`` (B, 5) holds,
    for each sample and its own class, the columns of :data:`OWN_COLUMNS` (the statistics'
    inputs: B numbers each, gathered from the B x C tensors as they pass).
    """
    rows = torch.arange(x.shape[0], device=x.device)
    own_offset = own_coord = own_t = x.new_zeros(x.shape[0])
    num_vertices = 1 if options.mode == "point" else 2
    products = [x @ vertices[:, 0].T]  # raw a, read in place
    if num_vertices == 2:  # <x, u> directly: <x, b> - <x, a> would cancel for short segments
        direction_products = x @ geo.pop("direction").T
        products.append(products[0] + direction_products)  # <x, b>, for the backward's sums
    scale = geo["scale"]  # applied on the fly: <x, v^> = scale_v <x, v>
    own_start = products[0][rows, labels] * scale[labels, 0]  # <x_i, a^_{y_i}>
    # -D^2 / 2 = t (<x - a, u> - t |u|^2 / 2) + <x, a> - |x|^2 / 2 - |a|^2 / 2
    if options.mode == "point":
        t = None
        half_neg_dist_sq = products[0] * scale[:, 0]
    else:
        uu = geo["uu"]
        # <x - a^, u^> = scale_b <x, u> + (scale_b - scale_a) <x, a> - <a^, u^>
        offset = torch.addcmul(-geo["au"], direction_products, scale[:, 1])
        offset.addcmul_(products[0], geo["scale_gap"])
        own_offset = offset[rows, labels]
        own_coord = own_offset / (uu[labels].sqrt() + EPS)
        t = offset * torch.where(uu > 0, 1.0 / (uu + EPS), torch.zeros_like(uu))
        if options.mode == "segment":
            t.clamp_(0.0, 1.0)
        own_t = t[rows, labels]
        half_neg_dist_sq = offset.addcmul_(t, uu, value=-0.5).mul_(t)
        half_neg_dist_sq.addcmul_(products[0], scale[:, 0])
    half_neg_dist_sq.sub_(0.5 * (x * x).sum(dim=1, keepdim=True)).sub_(0.5 * geo["aa"])
    half_neg_dist_sq.clamp_(max=0.0)
    own_dist_sq = -2.0 * half_neg_dist_sq[rows, labels]
    own = torch.stack([own_dist_sq, own_coord, own_t, own_start, own_offset], dim=1)
    return half_neg_dist_sq.add_(1.0), products, t, own


def _proxy_anchor_terms(
    similarity: torch.Tensor,
    labels: torch.Tensor,
    counts: torch.Tensor,
    margins: torch.Tensor,
    options: DAALOptions,
    sample_bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L_intra, L_inter, dL/ds): overwrites ``similarity`` with the gradient.

    ``sample_bias`` (B,), if given, is added to every logit of its sample (PML's miner weights).
    """
    alpha, lambda_inter = options.alpha, options.lambda_inter
    batch, num_classes = similarity.shape
    rows = torch.arange(batch, device=similarity.device)
    # intra: per present class, log(1 + sum over its samples of exp(-alpha (s - m)))
    pos_logits = -alpha * (similarity[rows, labels] - margins[labels])
    if sample_bias is not None:
        pos_logits = pos_logits + sample_bias
    pos_shift = similarity.new_zeros(num_classes)
    pos_shift.scatter_reduce_(0, labels, pos_logits, reduce="amax", include_self=True)
    pos_weights = torch.exp(pos_logits - pos_shift[labels])
    pos_denom = torch.exp(-pos_shift).index_add_(0, labels, pos_weights)
    present = counts > 0
    num_present = present.sum().to(similarity.dtype)
    per_class = torch.where(present, pos_shift + torch.log(pos_denom), 0.0)
    intra = per_class.sum() / num_present

    # inter: per class, log(1 + sum over other samples of exp(alpha (s + m))), in place
    neg = similarity.add_(margins).mul_(alpha)
    if sample_bias is not None:
        neg.add_(sample_bias[:, None])
    neg[rows, labels] = float("-inf")
    neg_shift = neg.amax(dim=0).clamp_min_(0.0)
    weights = neg.sub_(neg_shift).exp_()
    neg_denom = weights.sum(dim=0).add_(torch.exp(-neg_shift))
    inter = (neg_shift + torch.log(neg_denom)).sum() / num_classes

    # the softmax weights of both terms, scaled
    grad = weights.mul_(lambda_inter * alpha / num_classes / neg_denom)
    grad[rows, labels] = -alpha / num_present * pos_weights / pos_denom[labels]
    return intra, inter, grad


def _elastic_term(
    uu: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_elastic, dL_elastic/d|u|^2) for half-lengths |u| / 2 against their targets."""
    positive = uu > 0
    length = torch.where(positive, uu.clamp_min(EPS * EPS).sqrt(), torch.zeros_like(uu))
    residual = (0.5 * length - target) * mask
    value = residual.square().sum() / uu.shape[0]
    grad = torch.where(positive, residual * 0.5 / length.clamp_min(EPS), torch.zeros_like(uu))
    return value, grad / uu.shape[0]


class DAALFunction(torch.autograd.Function):
    """L_intra + lambda_daal L_inter + lambda_len L_elastic from raw embeddings and vertices.

    Returns the loss, then for logging and statistics (no gradient): L_intra, L_inter,
    L_elastic, ``own`` (B, 5): each sample's :data:`OWN_COLUMNS` against its own class, and
    (C, 4): each class's :data:`CLASS_COLUMNS`.
    """

    @staticmethod
    def forward(
        ctx: Any,
        embeddings: torch.Tensor,  # (B, d)
        vertices: torch.Tensor,  # (C, 2, d), raw
        labels: torch.Tensor,  # (B,) int64
        margins: torch.Tensor,  # (C,)
        length_target: torch.Tensor,  # (C,) gamma_len * sigma_par
        length_mask: torch.Tensor,  # (C,) 1.0 where the elastic term applies
        options: DAALOptions,
        sample_bias: torch.Tensor | None = None,  # (B,) added to each sample's logits
    ) -> tuple[torch.Tensor, ...]:
        point = options.mode == "point"
        x, inv_norm = embeddings, None
        if options.normalize:
            inv_norm = 1.0 / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(EPS)
            x = x * inv_norm
        geo = _vertex_scalars(vertices, options.normalize, point)
        counts = x.new_zeros(vertices.shape[0]).index_add_(0, labels, x.new_ones(x.shape[0]))
        similarity, products, t, own = _similarities(x, vertices, labels, geo, options)
        intra, inter, grad_sim = _proxy_anchor_terms(
            similarity, labels, counts, margins, options, sample_bias
        )
        loss = intra + options.lambda_inter * inter
        elastic = x.new_zeros(())
        grad_uu = None
        if not point and options.lambda_len != 0:
            elastic, grad_uu = _elastic_term(geo["uu"], length_target, length_mask)
            loss = loss + options.lambda_len * elastic
            grad_uu = grad_uu * options.lambda_len

        # dL/d<x, v> for both vertices (ds/d<x, a> = 1 - t, ds/d<x, b> = t), and the batch
        # sums that the vertices' own terms need (ds/d|a|^2 = -(1 - t)^2 / 2, ...)
        row_sum = grad_sim.sum(dim=1, keepdim=True)  # ds/d|x|^2 = -1/2 on every pair
        if point:
            grad_products = [grad_sim]
            sums = (grad_sim.sum(dim=0),)
        else:
            grad_b = grad_sim * t
            grad_products = [grad_sim.sub_(grad_b), grad_b]
            sum_gt = grad_b.sum(dim=0)
            sums = (grad_sim.sum(dim=0) + sum_gt, sum_gt, (grad_b * t).sum(dim=0))
        product_sums = geo["scale"] * torch.stack(  # sum_i dL/d<x_i, v^> <x_i, v^>
            [
                (grad * product).sum(dim=0)
                for grad, product in zip(grad_products, products, strict=True)
            ],
            1,
        )
        if options.normalize:
            for k, grad in enumerate(grad_products):
                grad.mul_(geo["scale"][:, k])

        ctx.save_for_backward(x, inv_norm, vertices, row_sum, *grad_products)
        ctx.point, ctx.geo, ctx.sums = point, geo, (*sums, product_sums)
        ctx.grad_uu = grad_uu
        zeros = torch.zeros_like(geo["aa"])
        mean_sq = class_mean_norms_sq(x, labels, counts) if options.class_means else zeros
        per_class = torch.stack([geo["aa"], zeros if point else geo["uu"], mean_sq, counts], 1)
        outputs = (intra.detach(), inter.detach(), elastic.detach(), own, per_class)
        ctx.mark_non_differentiable(*outputs)
        return (loss, *outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor, *_: torch.Tensor) -> tuple[Any, ...]:
        x, inv_norm, vertices, row_sum, *grad_products = ctx.saved_tensors
        grad_x = grad_vertices = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(grad_products[0], vertices[:, 0])
            if not ctx.point:
                grad_x.addmm_(grad_products[1], vertices[:, 1])
            grad_x.mul_(grad_output).sub_(x * (row_sum * grad_output))
            if inv_norm is not None:  # F.normalize's chain rule: (g - x^ <x^, g>) / |x|
                radial = (grad_x * x).sum(dim=1, keepdim=True) * (inv_norm < 1.0 / EPS)
                grad_x = grad_x.sub_(x * radial).mul_(inv_norm)
        if ctx.needs_input_grad[1]:  # frozen vertices (a rigid line) skip this product
            scaled_x = x * grad_output
            if torch.compiler.is_compiling():  # out= into a strided view does not trace
                parts = [grad.T @ scaled_x for grad in grad_products]
                if ctx.point:
                    parts.append(torch.zeros_like(parts[0]))
                grad_vertices = torch.stack(parts, dim=1)
            else:
                grad_vertices = (
                    torch.zeros_like(vertices) if ctx.point else torch.empty_like(vertices)
                )
                for k, grad in enumerate(grad_products):  # the product part, into (C, 2, d)
                    torch.mm(grad.T, scaled_x, out=grad_vertices[:, k])
            grad_vertices = _add_vertex_terms(ctx, grad_output, grad_vertices, vertices)
        return grad_x, grad_vertices, *[None] * 6


def _add_vertex_terms(
    ctx: Any, grad_output: torch.Tensor, grad_vertices: torch.Tensor, vertices: torch.Tensor
) -> torch.Tensor:
    """Add, in place, the gradient that flows through |a^|^2, |b^|^2 and <a^, b^>.

    With g the gradient with respect to a normalised vertex v^, F.normalize's chain rule gives
    ``scale * (g - v^ <v^, g>)``; apart from the product part, every term is a per-class
    combination of a and b: two passes over the vertices.
    """
    geo, sums = ctx.geo, ctx.sums
    scale, projected = geo["scale"], geo["projected"]
    if ctx.point:
        sum_g, product_sums = sums
        g_aa = -0.5 * grad_output * sum_g
        radial = grad_output * product_sums[:, 0] + 2.0 * g_aa * geo["aa"]
        coef_aa = scale[:, 0].square() * (2.0 * g_aa - radial * projected[:, 0])
        grad_vertices[:, 0].addcmul_(coef_aa[:, None], vertices[:, 0])
        return grad_vertices
    sum_g, sum_gt, sum_gtt, product_sums = sums
    grad_uu = 0.0 if ctx.grad_uu is None else ctx.grad_uu * grad_output
    g_aa = -0.5 * grad_output * (sum_g - 2.0 * sum_gt + sum_gtt) + grad_uu
    g_bb = -0.5 * grad_output * sum_gtt + grad_uu
    g_ab = -grad_output * (sum_gt - sum_gtt) - 2.0 * grad_uu
    radial_a = grad_output * product_sums[:, 0] + 2.0 * g_aa * geo["aa"] + g_ab * geo["ab"]
    radial_b = grad_output * product_sums[:, 1] + 2.0 * g_bb * geo["bb"] + g_ab * geo["ab"]
    coef = vertices.new_empty(vertices.shape[0], 2, 2)
    coef[:, 0, 0] = scale[:, 0].square() * (2.0 * g_aa - radial_a * projected[:, 0])
    coef[:, 1, 1] = scale[:, 1].square() * (2.0 * g_bb - radial_b * projected[:, 1])
    coef[:, 0, 1] = coef[:, 1, 0] = scale[:, 0] * scale[:, 1] * g_ab
    grad_vertices.addcmul_(coef[:, :, :1], vertices[:, :1])
    return grad_vertices.addcmul_(coef[:, :, 1:], vertices[:, 1:])
