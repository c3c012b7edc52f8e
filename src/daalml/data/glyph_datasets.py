"""The ``glyphs`` dataset as the registry builds it: rendered splits, validation characters.

Its images are greyscale renderings in [0, 1], fed to the model without normalisation at their
rendered size (:func:`glyph_preprocessing`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from daalml.data.glyphs import GlyphSplit, GlyphTensorDataset, load_glyphs
from daalml.data.preprocessing import Preprocessing
from daalml.data.registry import BuiltDatasets
from daalml.errors import DaalmlError

if TYPE_CHECKING:
    from daalml.config import Config


def build_glyph_datasets(cfg: Config, cache_dir: Path) -> BuiltDatasets:
    """The glyph renderings of ``cfg`` (train, test, and validation characters when asked)."""
    glyphs = load_glyphs(
        seed=cfg.train.seed,
        image_size=cfg.data.glyph_image_size,
        samples_per_font=cfg.data.glyph_samples_per_font,
        max_classes=cfg.data.glyph_max_classes,
        font_files=cfg.data.font_files,
        cache_dir=cache_dir / "glyphs",
        progress=True,
    )
    train, val = glyphs.train, None
    if cfg.train.val_classes:
        train, val = carve_glyph_validation(train, cfg.train.val_classes)
    return BuiltDatasets(
        train=GlyphTensorDataset(train),
        num_train_classes=int(train.labels.max()) + 1,
        test=GlyphTensorDataset(glyphs.test),
        val=GlyphTensorDataset(val) if val is not None else None,
        train_eval=GlyphTensorDataset(train),
        families=list(glyphs.test.families),
    )


def carve_glyph_validation(split: GlyphSplit, val_classes: int) -> tuple[GlyphSplit, GlyphSplit]:
    """Hold out the last ``val_classes`` classes of a glyph split (relabelled)."""
    num_classes = int(split.labels.max()) + 1
    if num_classes - val_classes < 2:
        raise DaalmlError(
            f"train.val_classes={val_classes} leaves {num_classes - val_classes} training "
            f"classes of {num_classes}; at least 2 must remain"
        )
    cut = num_classes - val_classes

    def part(mask: torch.Tensor, offset: int) -> GlyphSplit:
        index = mask.nonzero().squeeze(1).tolist()
        return GlyphSplit(
            images=split.images[mask],
            labels=split.labels[mask] - offset,
            fonts=[split.fonts[i] for i in index],
            families=[split.families[i] for i in index],
            class_names=split.class_names[offset : offset + (cut if offset == 0 else val_classes)],
        )

    return part(split.labels < cut, 0), part(split.labels >= cut, cut)


def glyph_preprocessing(cfg: Config, channels: int) -> Preprocessing:
    """Rendered in [0, 1] and fed without normalisation, at ``data.glyph_image_size``."""
    mode = "L" if channels == 1 else "RGB"
    size = cfg.data.glyph_image_size
    return Preprocessing(size, None, (0.0,) * channels, (1.0,) * channels, mode)
