"""Where do DAAL's segments go when only the vertices train? The figures behind docs/daal-loss.md.

    python benchmarks/elastic_check.py [--steps 300] [--checkpoint RUN/checkpoints/best.ckpt]

Synthetic unit-sphere classes, each elongated along a known tangent axis (one is two blobs),
embeddings held fixed; the vertices start either at random or at the class centroids. Prints,
per class, |cos| between the segment and the class axis, sigma_perp and the margin (both for
``--thickness``, default the v2 ``spread``). With --checkpoint, also prints the range of
sigma_perp and of the margins in a trained run (how much density awareness there is to act on).
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torch.nn.functional as F

from daalml import DAALLoss
from daalml.losses.registry import build_loss


def elongated_classes(dim: int = 32, num_classes: int = 6, per_class: int = 40, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=gen))[0]
    xs, ys = [], []
    for c in range(num_classes):
        length, thick = 0.3 + 0.05 * c, (0.01 if c % 2 == 0 else 0.05)
        if c == num_classes - 1:
            coord = torch.cat(
                [torch.full((per_class // 2,), -length), torch.full((per_class // 2,), length)]
            )
        else:
            coord = (torch.rand(per_class, generator=gen) * 2 - 1) * length
        noise = thick * torch.randn(per_class, dim, generator=gen)
        xs.append(F.normalize(basis[c] + coord[:, None] * basis[num_classes + c] + noise, dim=1))
        ys.append(torch.full((per_class,), c))
    axes = basis[num_classes : 2 * num_classes]
    return torch.cat(xs), torch.cat(ys), axes


def run(start: str, steps: int, thickness: str) -> None:
    torch.manual_seed(0)
    x, y, axes = elongated_classes()
    loss_fn = DAALLoss(axes.shape[0], x.shape[1], thickness=thickness)
    if start == "centroids":
        with torch.no_grad():
            for c in range(axes.shape[0]):
                centroid = x[y == c].mean(dim=0)
                loss_fn.vertices[c] = (
                    centroid + 0.05 * torch.randn(2, x.shape[1]) / x.shape[1] ** 0.5
                )
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(x, y).backward()
        optimizer.step()
    vertices = F.normalize(loss_fn.vertices.detach(), dim=-1)
    direction = vertices[:, 1] - vertices[:, 0]
    cosines = (direction * axes).sum(1).abs() / direction.norm(dim=1)
    print(f"start={start}, {steps} vertex-only steps, thickness={thickness!r}")
    print("  |cos(segment, class axis)|:", [round(v, 2) for v in cosines.tolist()])
    print("  sigma_perp:", [round(v, 3) for v in loss_fn.sigma_perp.tolist()])
    print("  margins:", [round(v, 3) for v in loss_fn.margins().tolist()])


def trained_statistics(path: str) -> None:
    """Spread of sigma_perp and of the margins in a trained run, with the run's loss settings.

    The loss is rebuilt from the checkpoint's own config; a checkpoint written before DAAL v2
    carries v1 statistics, so it is read with ``thickness="rms_distance"`` (and said so).
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint["state_dict"]
    loss_cfg = checkpoint["daalml"]["config"]["loss"]
    params = dict(loss_cfg.get("params") or {})
    version = state.get("loss.loss.thickness_version")
    thickness = "rms_distance" if version is None or int(version) == 1 else "spread"
    params["thickness"] = thickness  # also allowed by daal_v1, which pins this very value
    num_classes, _, dim = state["loss.loss.vertices"].shape
    loss_fn = build_loss(loss_cfg["name"], num_classes, dim, params).loss
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy note: said below instead
        loss_fn.load_state_dict(
            {
                k.removeprefix("loss.loss."): v
                for k, v in state.items()
                if k.startswith("loss.loss.")
            }
        )
    sigma, margins = loss_fn.sigma_perp[loss_fn.seen], loss_fn.margins()[loss_fn.seen]
    written = "before DAAL v2" if version is None else f"version {int(version)}"
    print(
        f"{path}: loss {loss_cfg['name']!r}, thickness={thickness!r} (statistics {written}), "
        f"kappa={loss_fn.kappa}, {int(loss_fn.seen.sum())} of {num_classes} classes seen"
    )
    print(f"  sigma_perp min/mean/max: {sigma.min():.3f} / {sigma.mean():.3f} / {sigma.max():.3f}")
    print(
        f"  margins    min/mean/max: {margins.min():.4f} / {margins.mean():.4f} / {margins.max():.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--checkpoint", default=None, help="a DAAL run's checkpoint to inspect")
    parser.add_argument("--thickness", default="spread", choices=["spread", "rms_distance"])
    args = parser.parse_args()
    for start in ("random", "centroids"):
        run(start, args.steps, args.thickness)
    if args.checkpoint:
        trained_statistics(args.checkpoint)


if __name__ == "__main__":
    main()
