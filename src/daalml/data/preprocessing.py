"""The one description of evaluation preprocessing: what a trained model wants as its input.

Built from a run's config and backbone; used to embed image files and stored with exported models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torchvision import transforms as T

if TYPE_CHECKING:  # read as attributes: data/ imports neither the config nor models at run time
    from daalml.config import Config
    from daalml.models.backbones import Backbone


@dataclass(frozen=True)
class Preprocessing:
    """How a checkpoint's model wants its input images (also stored with exported models).

    ``resize`` set: resize the short side to it, then centre-crop ``image_size``; ``None``:
    resize the whole image to ``image_size`` x ``image_size``. Pixels are scaled to [0, 1], then
    normalised per channel as ``(x - mean) / std``; ``mode`` is the PIL colour mode (RGB or L).
    """

    image_size: int
    resize: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mode: str = "RGB"

    @property
    def channels(self) -> int:
        """Input channels of the model (3 for RGB, 1 for L)."""
        return len(self.mean)

    def transform(self) -> T.Compose:
        """PIL image -> normalised (C, H, W) float tensor."""
        steps: list[Any] = [T.Grayscale(1)] if self.mode == "L" else []
        if self.resize is None:
            steps.append(T.Resize((self.image_size, self.image_size)))
        else:
            steps += [T.Resize(self.resize), T.CenterCrop(self.image_size)]
        steps += [T.ToTensor(), T.Normalize(list(self.mean), list(self.std))]
        return T.Compose(steps)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Preprocessing:
        """The description :meth:`to_dict` wrote (in a checkpoint or an export's metadata)."""
        return cls(
            int(saved["image_size"]),
            None if saved["resize"] is None else int(saved["resize"]),
            tuple(float(v) for v in saved["mean"]),
            tuple(float(v) for v in saved["std"]),
            str(saved.get("mode", "RGB")),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able description, input layout included."""
        return {
            "input_shape": ["batch", self.channels, self.image_size, self.image_size],
            "layout": "NCHW float32",
            "mode": self.mode,
            "resize": self.resize,
            "image_size": self.image_size,
            "scale": "pixels / 255",
            "mean": list(self.mean),
            "std": list(self.std),
        }


def preprocessing_for(cfg: Config, backbone: Backbone) -> Preprocessing:
    """The evaluation preprocessing of a run: its eval transform, or its dataset's own form."""
    from daalml.data.registry import dataset_entry  # the registry's entries build these

    channels = backbone.in_chans
    mode = "L" if channels == 1 else "RGB"
    own = dataset_entry(cfg.data.dataset).preprocessing
    if own is not None:
        return own(cfg, channels)
    return Preprocessing(
        cfg.data.image_size, cfg.data.resize, tuple(backbone.mean), tuple(backbone.std), mode
    )
