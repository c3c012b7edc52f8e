"""A slow, obvious, loop-by-loop reading of docs/daal-loss.md, to check the fast DAALLoss.

Written from the spec alone, one scalar at a time; shares no code with daalml.losses.
"""

from __future__ import annotations

import math

import torch

EPS = 1e-12


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.linalg.vector_norm(v).clamp_min(EPS)


def point_to_segment(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, mode: str):
    """(D, p, t, D^2): distance, coordinate along the line, (clamped) t, squared distance."""
    u = b - a
    if mode == "point":
        distance_sq = torch.dot(x - a, x - a)
        return torch.sqrt(distance_sq), torch.zeros((), dtype=x.dtype), 0.0, distance_sq
    t = torch.dot(x - a, u) / (torch.dot(u, u) + EPS)
    if mode == "segment":
        t = torch.clamp(t, 0.0, 1.0)
    q = a + t * u
    distance_sq = torch.clamp(torch.dot(x - q, x - q), min=0.0)
    p = torch.dot(x - a, u) / (torch.linalg.vector_norm(u) + EPS)
    return torch.sqrt(distance_sq), p, t, distance_sq


def reference_loss(
    embeddings: torch.Tensor,
    labels: list[int],
    vertices: torch.Tensor,
    sigma_perp: list[float],
    sigma_par: list[float],
    seen: list[bool],
    seen_par: list[bool],
    *,
    alpha: float,
    delta: float,
    kappa: float,
    delta_min: float,
    delta_max: float,
    lambda_daal: float,
    lambda_len: float,
    gamma_len: float,
    normalize: bool,
    segment: str,
) -> torch.Tensor:
    """The loss of one batch from the statistics as they stand (differentiable)."""
    num_classes = vertices.shape[0]
    xs = [_unit(e) if normalize else e for e in embeddings]
    a = [_unit(vertices[c, 0]) if normalize else vertices[c, 0] for c in range(num_classes)]
    b = [_unit(vertices[c, 1]) if normalize else vertices[c, 1] for c in range(num_classes)]

    seen_sigmas = [sigma_perp[c] for c in range(num_classes) if seen[c]]
    sigma_bar = sum(seen_sigmas) / len(seen_sigmas) if seen_sigmas else 0.0
    margins = []
    for c in range(num_classes):
        if seen[c] and sigma_perp[c] > 0:
            m = delta * (sigma_bar / sigma_perp[c]) ** kappa
            margins.append(min(max(m, delta_min), delta_max))
        else:
            margins.append(delta)

    def similarity(i: int, c: int) -> torch.Tensor:
        return 1.0 - point_to_segment(xs[i], a[c], b[c], segment)[3] / 2.0

    present = sorted(set(labels))
    intra = torch.zeros((), dtype=embeddings.dtype)
    for c in present:
        terms = [
            torch.exp(-alpha * (similarity(i, c) - margins[c]))
            for i, y in enumerate(labels)
            if y == c
        ]
        intra = intra + torch.log(1.0 + sum(terms))
    intra = intra / len(present)

    inter = torch.zeros((), dtype=embeddings.dtype)
    for c in range(num_classes):
        terms = [
            torch.exp(alpha * (similarity(i, c) + margins[c]))
            for i, y in enumerate(labels)
            if y != c
        ]
        if terms:
            inter = inter + torch.log(1.0 + sum(terms))
    inter = inter / num_classes

    elastic = torch.zeros((), dtype=embeddings.dtype)
    if segment != "point":
        for c in range(num_classes):
            if seen_par[c]:
                u = b[c] - a[c]
                length = torch.linalg.vector_norm(u) if bool(torch.any(u != 0)) else u.sum() * 0
                elastic = elastic + (length / 2.0 - gamma_len * sigma_par[c]) ** 2
        elastic = elastic / num_classes
    return intra + lambda_daal * inter + lambda_len * elastic


def reference_update(
    embeddings: torch.Tensor,
    labels: list[int],
    vertices: torch.Tensor,
    sigma_perp: list[float],
    sigma_par: list[float],
    seen: list[bool],
    seen_par: list[bool],
    *,
    momentum: float,
    normalize: bool,
    segment: str,
    thickness: str = "spread",
) -> None:
    """Update the statistics lists in place from one batch (after its loss).

    ``thickness="spread"``: version 2 (residual vectors r_i = x_i - q_i, their spread around
    their mean, classes with >= 2 samples only); ``"rms_distance"``: version 1 (RMS of D).
    """

    def blend(old: float, new: float, first: bool) -> float:
        return new if first else momentum * old + (1 - momentum) * new

    with torch.no_grad():
        num_classes = vertices.shape[0]
        for c in range(num_classes):
            members = [i for i, y in enumerate(labels) if y == c]
            if not members:
                continue
            a = _unit(vertices[c, 0]) if normalize else vertices[c, 0]
            b = _unit(vertices[c, 1]) if normalize else vertices[c, 1]
            ds, ps, residuals = [], [], []
            for i in members:
                x = _unit(embeddings[i]) if normalize else embeddings[i]
                d, p, t, _ = point_to_segment(x, a, b, segment)
                ds.append(float(d))
                ps.append(float(p))
                residuals.append([float(v) for v in x - (a + t * (b - a))])
            par = None
            if len(ps) >= 2:
                mean = sum(ps) / len(ps)
                par = math.sqrt(sum((p - mean) ** 2 for p in ps) / (len(ps) - 1))
            if thickness == "rms_distance":
                rms = math.sqrt(sum(d * d for d in ds) / len(ds))
                sigma_perp[c] = blend(sigma_perp[c], rms, not seen[c])
                seen[c] = True
                if segment != "point" and par is not None:
                    sigma_par[c] = blend(sigma_par[c], par, not seen_par[c])
                    seen_par[c] = True
                continue
            if len(members) < 2:
                continue  # one sample says nothing about a spread: left as it was
            dim = len(residuals[0])
            centre = [sum(r[k] for r in residuals) / len(residuals) for k in range(dim)]
            total = sum(sum((r[k] - centre[k]) ** 2 for k in range(dim)) for r in residuals)
            spread = math.sqrt(total / (len(residuals) - 1))
            sigma_perp[c] = blend(sigma_perp[c], spread, not seen[c])
            if segment != "point":
                sigma_par[c] = blend(sigma_par[c], par, not seen[c])
            seen[c] = seen_par[c] = True
