"""DAAL: the Density-Aware Adaptive Line Margin loss, as defined in docs/daal-loss.md.

Every class is an elastic line segment between two learnable vertices. The loss is
Proxy-Anchor's with the cosine replaced by a segment similarity ``1 - D^2 / 2``, a margin
that adapts to how thick each class is around its segment, and a term that sizes each
segment to the class's spread along it. Switching the extras off gives Proxy-Anchor exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from daalml.losses.daal_function import DAALFunction, DAALOptions
from daalml.losses.geometry import (
    EPS,
    SEGMENT_MODES,
    SegmentMode,
    paired_segment_geometry,
    segment_geometry,
)

INIT_MODES: tuple[str, ...] = ("random", "data")
_INIT_NOISE = 1e-2  # relative size of b_c - a_c at random init


class DAALLoss(nn.Module):
    """Density-Aware Adaptive Line Margin loss; call as ``loss(embeddings, labels)``.

    The vertices are an ``nn.Parameter`` of this module: pass ``loss.parameters()`` to the
    optimiser (the engine does, with a learning-rate multiplier).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        *,
        alpha: float = 32.0,
        delta: float = 0.1,
        kappa: float = 0.5,
        delta_min: float = 0.0,
        delta_max: float = 0.3,
        lambda_daal: float = 1.0,
        lambda_len: float = 0.1,
        gamma_len: float = 1.0,
        momentum: float = 0.9,
        normalize: bool = True,
        segment: SegmentMode = "segment",
        init: str = "random",
    ) -> None:
        super().__init__()
        if num_classes < 1 or embedding_size < 1:
            raise ValueError(
                f"num_classes and embedding_size must be >= 1, got {num_classes}, {embedding_size}"
            )
        if segment not in SEGMENT_MODES:
            raise ValueError(f"segment must be one of {SEGMENT_MODES}, got {segment!r}")
        if init not in INIT_MODES:
            raise ValueError(f"init must be one of {INIT_MODES}, got {init!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if delta_min > delta_max:
            raise ValueError(f"delta_min ({delta_min}) must not exceed delta_max ({delta_max})")
        self.num_classes = num_classes
        self.embedding_size = embedding_size
        self.alpha = alpha
        self.delta = delta
        self.kappa = kappa
        self.delta_min = delta_min
        self.delta_max = delta_max
        self.lambda_daal = lambda_daal
        self.lambda_len = lambda_len
        self.gamma_len = gamma_len
        self.momentum = momentum
        self.normalize = normalize
        self.segment = segment
        self.init = init

        start = torch.empty(num_classes, embedding_size)
        nn.init.kaiming_normal_(start, mode="fan_out")
        scale = start.norm(dim=1, keepdim=True) / embedding_size**0.5
        end = start + _INIT_NOISE * scale * torch.randn_like(start)
        self.vertices = nn.Parameter(torch.stack([start, end], dim=1))  # (C, 2, d)
        self.register_buffer("sigma_perp", torch.zeros(num_classes))
        self.register_buffer("sigma_par", torch.zeros(num_classes))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        # sigma_par needs >= 2 samples of a class in a batch, so it may start later than seen.
        self.register_buffer("seen_par", torch.zeros(num_classes, dtype=torch.bool))
        # the unweighted terms of the last call, detached: for logging and training curves
        self.last_terms: dict[str, torch.Tensor] = {}

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_size={self.embedding_size}, "
            f"alpha={self.alpha}, delta={self.delta}, kappa={self.kappa}, "
            f"segment={self.segment!r}, lambda_daal={self.lambda_daal}, "
            f"lambda_len={self.lambda_len}"
        )

    # ------------------------------------------------------------------ geometry
    def _compute_dtype(self, embeddings: torch.Tensor) -> torch.dtype:
        wide = torch.float64 in (embeddings.dtype, self.vertices.dtype)
        return torch.float64 if wide else torch.float32

    def _endpoints(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        vertices = self.vertices.to(dtype)
        if self.normalize:
            vertices = F.normalize(vertices, dim=-1, eps=EPS)
        return vertices[:, 0], vertices[:, 1]

    def _prepare(self, embeddings: torch.Tensor) -> torch.Tensor:
        x = embeddings.to(self._compute_dtype(embeddings))
        return F.normalize(x, dim=1, eps=EPS) if self.normalize else x

    def segment_distances(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Distances D (B, C) from each embedding to every class segment."""
        self._check_embeddings(embeddings)
        with torch.autocast(embeddings.device.type, enabled=False):
            x = self._prepare(embeddings)
            start, end = self._endpoints(x.dtype)
            return segment_geometry(x, start, end, self.segment).squared_distance.sqrt()

    def margins(self) -> torch.Tensor:
        """The adaptive margins delta_c (C,), from the statistics as they stand."""
        sigma = self.sigma_perp.to(torch.promote_types(self.sigma_perp.dtype, torch.float32))
        seen = self.seen
        sigma_bar = (sigma * seen).sum() / seen.sum().clamp_min(1)
        adaptive = seen & (sigma > 0)  # no data-dependent branch: no host sync on a GPU
        ratio = sigma_bar / torch.where(adaptive, sigma, torch.ones_like(sigma))
        clipped = (self.delta * ratio.pow(self.kappa)).clamp(self.delta_min, self.delta_max)
        return torch.where(adaptive, clipped, torch.full_like(sigma, self.delta))

    # ------------------------------------------------------------------ loss
    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self._check_inputs(embeddings, labels)
        labels = labels.long()
        with torch.autocast(embeddings.device.type, enabled=False):
            dtype = self._compute_dtype(embeddings)
            vertices = self.vertices.to(dtype)
            loss, intra, inter, elastic, own = DAALFunction.apply(
                embeddings.to(dtype),
                vertices,
                labels,
                self.margins().to(dtype),
                self.gamma_len * self.sigma_par.to(dtype),
                self.seen_par.to(dtype),
                DAALOptions(
                    alpha=self.alpha,
                    lambda_inter=self.lambda_daal,
                    lambda_len=self.lambda_len,
                    mode=self.segment,
                    normalize=self.normalize,
                ),
            )
            self.last_terms = {"intra": intra, "inter": inter, "elastic": elastic}
            if self.training:
                self._update_statistics(own[:, 0], own[:, 1], labels)
        return loss

    # ------------------------------------------------------------------ statistics
    @torch.no_grad()
    def _update_statistics(
        self, own_dist_sq: torch.Tensor, own_coord: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """Blend in this batch's per-class thickness and length.

        ``own_dist_sq`` and ``own_coord`` (B,) are each sample's D^2 to its own class segment
        and its coordinate p along that class's line (ignored in point mode).
        """
        counts = torch.bincount(labels, minlength=self.num_classes)
        per_sample = torch.stack([own_dist_sq, own_coord], dim=1)
        means = per_sample.new_zeros(self.num_classes, 2).index_add_(0, labels, per_sample)
        means.div_(counts.clamp_min(1)[:, None])
        self._blend(self.sigma_perp, self.seen, means[:, 0].sqrt(), counts > 0)
        if self.segment == "point":
            return
        deviations = (own_coord - means[labels, 1]).square()
        sum_sq = means.new_zeros(self.num_classes).index_add_(0, labels, deviations)
        batch_par = (sum_sq / (counts - 1).clamp_min(1)).sqrt()  # unbiased std
        self._blend(self.sigma_par, self.seen_par, batch_par, counts >= 2)

    def _blend(
        self, stat: torch.Tensor, seen: torch.Tensor, batch: torch.Tensor, mask: torch.Tensor
    ) -> None:
        """First sight copies the batch value, later sights blend it in with the momentum."""
        batch = batch.to(stat.dtype)
        blended = torch.where(seen, stat.lerp(batch, 1.0 - self.momentum), batch)
        stat.copy_(torch.where(mask, blended, stat))
        seen |= mask

    # ------------------------------------------------------------------ "data" init
    @torch.no_grad()
    def initialize_from_embeddings(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Place each class segment along its first principal axis and fill the statistics.

        a_c, b_c = mu_c -/+ gamma_len * s_c * e_c (centroid, first principal direction and
        standard deviation along it); classes without samples keep their vertices.
        """
        self._check_inputs(embeddings, labels)
        labels = labels.long()
        x = self._prepare(embeddings.detach())
        vertices = self.vertices.detach().to(x.dtype).clone()
        for cls in torch.unique(labels).tolist():
            members = x[labels == cls]
            centroid = members.mean(dim=0)
            half = torch.zeros_like(centroid)
            if members.shape[0] >= 2:
                centred = members - centroid
                _, _, right = torch.linalg.svd(centred, full_matrices=False)
                axis = right[0]
                spread = (centred @ axis).std()
                half = self.gamma_len * spread * axis
            vertices[cls, 0] = centroid - half
            vertices[cls, 1] = centroid + half
        self.vertices.copy_(vertices.to(self.vertices.dtype))
        for name in ("sigma_perp", "sigma_par", "seen", "seen_par"):
            getattr(self, name).zero_()
        start, end = self._endpoints(x.dtype)
        own = paired_segment_geometry(x, start[labels], end[labels], self.segment)
        own_coord = own.offset / (own.direction_norm_sq.sqrt() + EPS)
        self._update_statistics(own.squared_distance, own_coord, labels)

    # ------------------------------------------------------------------ validation
    def _check_embeddings(self, embeddings: torch.Tensor) -> None:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_size:
            raise ValueError(
                f"embeddings must have shape (B, {self.embedding_size}), "
                f"got {tuple(embeddings.shape)}"
            )
        if not embeddings.is_floating_point():
            raise ValueError(f"embeddings must be floating point, got {embeddings.dtype}")

    def _check_inputs(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        self._check_embeddings(embeddings)
        if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
            raise ValueError(
                f"labels must have shape ({embeddings.shape[0]},) to match {embeddings.shape[0]} "
                f"embeddings, got {tuple(labels.shape)}"
            )
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        if labels.numel() == 0:
            raise ValueError("the batch is empty: DAALLoss needs at least one embedding")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            bad = labels[(labels < 0) | (labels >= self.num_classes)][0].item()
            raise ValueError(
                f"label {bad} is outside [0, {self.num_classes}) for this loss's "
                f"{self.num_classes} classes"
            )
