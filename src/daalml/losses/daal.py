"""DAAL: the Density-Aware Adaptive Line Margin loss, as defined in docs/daal-loss.md.

Every class is an elastic line segment between two learnable vertices. The loss is
Proxy-Anchor's with the cosine replaced by a segment similarity ``1 - D^2 / 2``, a margin
that adapts to how thick each class is around its segment, and a term that sizes each
segment to the class's spread along it. Switching the extras off gives Proxy-Anchor exactly.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import nn

from daalml.losses.daal_function import DAALFunction, DAALOptions, class_mean_norms_sq
from daalml.losses.geometry import (
    EPS,
    SEGMENT_MODES,
    SegmentMode,
    paired_segment_geometry,
    segment_geometry,
)

INIT_MODES: tuple[str, ...] = ("random", "data")
THICKNESS_MODES: tuple[str, ...] = ("spread", "rms_distance")
# which sigma_perp a state_dict carries (buffer ``thickness_version``; absent before DAAL v2)
THICKNESS_VERSIONS: dict[str, int] = {"rms_distance": 1, "spread": 2}
_STATISTIC_NAMES = {
    1: "v1 sigma_perp = RMS distance of a class's samples to its segment",
    2: "v2 sigma_perp = spread of a class's residuals around their mean",
}
_STATISTICS = ("sigma_perp", "sigma_par", "seen", "seen_par")
_INIT_NOISE = 1e-2  # relative size of b_c - a_c at random init


class DAALLoss(BaseMetricLossFunction):
    """Density-Aware Adaptive Line Margin loss; call as ``loss(embeddings, labels)``.

    The vertices are an ``nn.Parameter`` of this module: pass ``loss.parameters()`` to the
    optimiser (the engine does, with a learning-rate multiplier). ``thickness`` picks the
    statistic behind the density-aware margin: ``"spread"`` (version 2, the default: the spread
    of each class's residuals around their mean, the same wherever its segment sits) or
    ``"rms_distance"`` (version 1: the RMS distance of the class to its segment).
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
        thickness: str = "spread",
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
        if thickness not in THICKNESS_MODES:
            raise ValueError(f"thickness must be one of {THICKNESS_MODES}, got {thickness!r}")
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
        self.thickness = thickness

        start = torch.empty(num_classes, embedding_size)
        nn.init.kaiming_normal_(start, mode="fan_out")
        scale = start.norm(dim=1, keepdim=True) / embedding_size**0.5
        end = start + _INIT_NOISE * scale * torch.randn_like(start)
        self.vertices = nn.Parameter(torch.stack([start, end], dim=1))  # (C, 2, d)
        self.register_buffer("sigma_perp", torch.zeros(num_classes))
        self.register_buffer("sigma_par", torch.zeros(num_classes))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        # v1 measured sigma_perp from one sample on, sigma_par from two: seen_par may start
        # later than seen there. In v2 both need two samples and seen_par equals seen.
        self.register_buffer("seen_par", torch.zeros(num_classes, dtype=torch.bool))
        version = torch.tensor(THICKNESS_VERSIONS[thickness], dtype=torch.int64)
        self.register_buffer("thickness_version", version)
        # the unweighted terms of the last call, detached: for logging and training curves
        self.last_terms: dict[str, torch.Tensor] = {}

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_size={self.embedding_size}, "
            f"alpha={self.alpha}, delta={self.delta}, kappa={self.kappa}, "
            f"segment={self.segment!r}, lambda_daal={self.lambda_daal}, "
            f"lambda_len={self.lambda_len}, thickness={self.thickness!r}"
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

    def margins(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The adaptive margins delta_c (C,), from the statistics as they stand.

        Computed in ``dtype`` (default: the buffers' precision, at least float32), so that a
        float64 loss gets its margins, ``delta`` included, to float64 precision.
        """
        if dtype is None:
            dtype = torch.promote_types(self.sigma_perp.dtype, torch.float32)
        sigma = self.sigma_perp.to(dtype)
        seen = self.seen
        sigma_bar = (sigma * seen).sum() / seen.sum().clamp_min(1)
        adaptive = seen & (sigma > 0)  # no data-dependent branch: no host sync on a GPU
        ratio = sigma_bar / torch.where(adaptive, sigma, torch.ones_like(sigma))
        clipped = (self.delta * ratio.pow(self.kappa)).clamp(self.delta_min, self.delta_max)
        return torch.where(adaptive, clipped, torch.full_like(sigma, self.delta))

    # ------------------------------------------------------------------ loss
    def forward(  # type: ignore[override]
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        indices_tuple: tuple[torch.Tensor, ...] | None = None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of a batch; the signature of a pytorch-metric-learning loss.

        ``indices_tuple`` (a miner's pairs or triplets) is treated as PML's ProxyAnchorLoss
        treats it: each sample is weighted by how often it occurs in the tuples (over the
        most frequent one), w_i in [0, 1], and w_i - 1 is added to its logits in both terms,
        so that a sample the miner left out counts e^-1 as much. Without tuples (or with empty
        ones) every sample has weight 1. The density statistics always use every sample.
        ``ref_emb``/``ref_labels``: as for PML's proxy losses, only the batch itself is accepted
        (the references of a proxy loss are its class segments); anything else is a ValueError.
        """
        self._check_inputs(embeddings, labels)
        if (ref_emb is not None and ref_emb is not embeddings) or (
            ref_labels is not None and ref_labels is not labels
        ):
            raise ValueError(
                "ref_emb is not supported for this loss function (DAALLoss compares the batch "
                "with its class segments, as PML's proxy losses do)"
            )
        labels = labels.long()
        with torch.autocast(embeddings.device.type, enabled=False):
            dtype = self._compute_dtype(embeddings)
            vertices = self.vertices.to(dtype)
            sample_bias = None
            if indices_tuple is not None:
                weights = lmu.convert_to_weights(indices_tuple, labels, dtype=dtype)
                sample_bias = weights - 1.0
            loss, intra, inter, elastic, own, per_class = DAALFunction.apply(
                embeddings.to(dtype),
                vertices,
                labels,
                self.margins(dtype),
                self.gamma_len * self.sigma_par.to(dtype),
                self.seen_par.to(dtype),
                DAALOptions(
                    alpha=self.alpha,
                    lambda_inter=self.lambda_daal,
                    lambda_len=self.lambda_len,
                    mode=self.segment,
                    normalize=self.normalize,
                    class_means=self.training and self.thickness == "spread",
                ),
                sample_bias,
            )
            self.last_terms = {"intra": intra, "inter": inter, "elastic": elastic}
            if self.training:
                self._update_statistics(labels, own, per_class)
        return loss

    # ------------------------------------------------------------------ statistics
    @torch.no_grad()
    def _update_statistics(
        self, labels: torch.Tensor, own: torch.Tensor, per_class: torch.Tensor
    ) -> None:
        """Blend in this batch's per-class thickness and length (after the batch's loss).

        ``own`` (B, 5): each sample's ``OWN_COLUMNS`` against its own class; ``per_class``
        (C, 4): each class's ``CLASS_COLUMNS`` (daal_function.py).
        """
        counts = per_class[:, 3]
        sums = own.new_zeros(self.num_classes, own.shape[1]).index_add_(0, labels, own)
        means = sums / counts.clamp_min(1)[:, None]
        deviations = (own[:, 1] - means[labels, 1]).square()  # of the coordinate p
        sum_sq = means.new_zeros(self.num_classes).index_add_(0, labels, deviations)
        batch_par = (sum_sq / (counts - 1).clamp_min(1)).sqrt()  # unbiased std
        if self.thickness == "rms_distance":  # version 1, exactly as first released
            self._blend(self.sigma_perp, self.seen, means[:, 0].sqrt(), counts > 0)
            self.seen |= counts > 0
            if self.segment != "point":
                self._blend(self.sigma_par, self.seen_par, batch_par, counts >= 2)
                self.seen_par |= counts >= 2
            return
        # v2, the spec's cheap form: r_bar = x_bar - a - t_bar u, so |r_bar|^2 needs |x_bar|^2
        # and the class means of <x, a>, <x - a, u> and t; sum |r - r_bar|^2 = sum D^2 - n |r_bar|^2
        t_bar, start_bar, offset_bar = means[:, 2], means[:, 3], means[:, 4]
        residual_mean_sq = per_class[:, 2] - 2.0 * start_bar + per_class[:, 0]  # |x_bar - a|^2
        residual_mean_sq -= t_bar * (2.0 * offset_bar - t_bar * per_class[:, 1])
        spread_sq = (sums[:, 0] - counts * residual_mean_sq.clamp_min(0.0)).clamp_min(0.0)
        batch_perp = (spread_sq / (counts - 1).clamp_min(1)).sqrt()
        measured = counts >= 2
        self._blend(self.sigma_perp, self.seen, batch_perp, measured)
        if self.segment != "point":
            self._blend(self.sigma_par, self.seen, batch_par, measured)
        self.seen |= measured
        self.seen_par.copy_(self.seen)

    def _blend(
        self, stat: torch.Tensor, seen: torch.Tensor, batch: torch.Tensor, mask: torch.Tensor
    ) -> None:
        """First sight (``seen`` False) copies the batch value, later sights blend it in."""
        batch = batch.to(stat.dtype)
        blended = torch.where(seen, stat.lerp(batch, 1.0 - self.momentum), batch)
        stat.copy_(torch.where(mask, blended, stat))

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
        self._reset_statistics()
        start, end = self._endpoints(x.dtype)
        own = paired_segment_geometry(x, start[labels], end[labels], self.segment)
        t = own.offset / (own.direction_norm_sq + EPS)
        if self.segment == "segment":
            t = t.clamp(0.0, 1.0)
        columns = [
            own.squared_distance,
            own.offset / (own.direction_norm_sq.sqrt() + EPS),
            t,
            (x * start[labels]).sum(dim=1),
            own.offset,
        ]
        gap = torch.zeros_like(start) if self.segment == "point" else end - start
        counts = x.new_zeros(self.num_classes).index_add_(0, labels, x.new_ones(x.shape[0]))
        per_class = torch.stack(
            [
                (start * start).sum(dim=1),
                (gap * gap).sum(dim=1),
                class_mean_norms_sq(x, labels, counts),
                counts,
            ],
            dim=1,
        )
        self._update_statistics(labels, torch.stack(columns, dim=1), per_class)

    def _reset_statistics(self) -> None:
        for name in _STATISTICS:
            getattr(self, name).zero_()

    # ------------------------------------------------------------------ checkpoints
    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Load, never mixing statistics of the two versions (see docs/daal-loss.md).

        A state_dict written before DAAL v2 has no ``thickness_version``: it carries v1
        statistics. Statistics of the other version than this loss's ``thickness`` are
        reset (re-measured from the next training batches) with a one-line warning; the
        vertices always load.
        """
        key = prefix + "thickness_version"
        own = THICKNESS_VERSIONS[self.thickness]
        if prefix + "sigma_perp" not in state_dict:  # not a DAAL state: let torch complain
            super()._load_from_state_dict(
                state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                error_msgs,
            )  # fmt: skip
            return
        legacy = key not in state_dict
        written = 1 if legacy else int(state_dict[key])
        state_dict[key] = self.thickness_version.clone()  # torch hands us its own copy
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if written not in _STATISTIC_NAMES:
            error_msgs.append(f"{key}: unknown DAAL statistics version {written}")
            return
        origin = "written before DAAL v2, " if legacy else ""
        carries = (
            f"DAALLoss state ({origin}{prefix or 'top level'}) carries {_STATISTIC_NAMES[written]}"
        )
        if written == own:
            if legacy:
                warnings.warn(f"{carries}: loaded as thickness='rms_distance'", stacklevel=2)
            return
        self._reset_statistics()
        warnings.warn(
            f"{carries}, but this loss uses thickness={self.thickness!r}: sigma_perp, sigma_par "
            "and seen are reset and re-measured from the next training batches (vertices loaded)",
            stacklevel=2,
        )

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
        if torch.compiler.is_compiling():  # no data-dependent branch in a compiled graph
            in_range = ((labels >= 0) & (labels < self.num_classes)).all()
            torch._assert_async(in_range, "a label is outside [0, num_classes) for DAALLoss")
        elif labels.min() < 0 or labels.max() >= self.num_classes:
            bad = labels[(labels < 0) | (labels >= self.num_classes)][0].item()
            raise ValueError(
                f"label {bad} is outside [0, {self.num_classes}) for this loss's "
                f"{self.num_classes} classes"
            )
