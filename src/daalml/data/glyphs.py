"""Built-in multi-modal dataset ``glyphs``: characters rendered in every font matplotlib ships.

Each class is one character (Latin, digits, Greek, Cyrillic, a few symbols); its samples are
renderings in many fonts (DejaVu Sans/Serif/Mono in all styles, STIX, Computer Modern, plus any
font files the user passes), lightly augmented. A letter in serif, mono and italic forms distinct
sub-clusters of one class, which is what makes it a good small testbed for metric learning.

Classes that look the same as a preferred class (Latin A, Greek Alpha, Cyrillic A) are found by
comparing clean renderings font by font and dropped. The split is class-disjoint: a seeded
shuffle of the kept characters, first half train, second (unseen) half test. Renderings are
cached on disk so a second call starts at once.

With matplotlib's 22 usable fonts and the defaults: 210 candidates, 35 look-alikes dropped,
175 classes (88 train, 87 test), ~6300 images of 32x32, 28-44 per class; rendering takes a
few seconds. Within a split, samples are ordered by class, then font.

One cohesive thing over 400 lines: the renderer of one dataset (fonts, look-alikes, cache).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from daalml.errors import DaalmlError

__all__ = [
    "CANDIDATES",
    "CHARACTER_GROUPS",
    "GlyphData",
    "GlyphFont",
    "GlyphSplit",
    "GlyphTensorDataset",
    "builtin_fonts",
    "default_cache_dir",
    "find_lookalikes",
    "load_glyphs",
]

# Candidate characters in order of preference: when two look alike, the earlier one is kept.
CHARACTER_GROUPS: dict[str, str] = {
    "latin_upper": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "latin_lower": "abcdefghijklmnopqrstuvwxyz",
    "digits": "0123456789",
    "greek_upper": "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ",
    "greek_lower": "αβγδεζηθικλμνξοπρσςτυφχψω",
    "cyrillic_upper": "АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ",
    "cyrillic_lower": "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
    "symbols": "&@#%$§¶€£¥?!+=<>*~∞∂∇√∫∑∏≈≠≤≥±×÷©",
}
CANDIDATES: str = "".join(CHARACTER_GROUPS.values())
_ALNUM_ASCII = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")

# matplotlib's fonts/ttf files used: (file name prefix, family), and the Computer Modern text
# fonts, whose cmap is only trusted for ASCII letters and digits (other slots hold TeX's own
# encoding). Left out on purpose: DejaVu*Display (a few glyphs only), LastResortHE (a
# placeholder box for every character), STIXNonUni*/STIXSiz* (no Unicode letters), cmex10 and
# cmsy10 (their letter slots hold symbols).
_BUILTIN_FAMILIES: tuple[tuple[str, str], ...] = (
    ("DejaVuSansMono", "mono"),
    ("DejaVuSans", "sans"),
    ("DejaVuSerif", "serif"),
    ("STIXGeneral", "stix"),
)
_CM_STEMS = frozenset({"cmb10", "cmmi10", "cmr10", "cmss10", "cmti10", "cmtt10"})

_FORMAT_VERSION = 1  # bump when rendering or augmentation code changes (invalidates caches)
_OVERSAMPLE = 4  # render at 4x and box-downsample: fine sub-pixel steps for thickness changes
_BOLDER_STROKE = 2  # outline width at 4x, so +0.5 output pixel per side
_THIN_KEEP = 0.6  # thinning (3x3 min filter at 4x) is skipped where it would erase more ink
_EM_FRACTION = 0.75  # font em size relative to the image side (capitals fill about 55%)
_FIT_FRACTION = 0.94  # a glyph larger than this fraction of the side is shrunk to fit
_LOOKALIKE_SIZE = 32  # look-alikes are judged at this size, so classes do not depend on image_size
_LOOKALIKE_DISTANCE = 0.02  # distance (see find_lookalikes) below which two renderings match
_LOOKALIKE_FONT_SHARE = 0.5  # ... in at least this share of the fonts drawing both
MIN_SAMPLES_PER_CLASS = 8
MIN_FONTS_PER_CLASS = 3


@dataclass
class GlyphSplit:
    """One side of the class-disjoint split; images are float32 in [0, 1], glyph bright on black."""

    images: torch.Tensor  # (N, 1, S, S) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64, contiguous 0..n_classes-1 within the split
    fonts: list[str]  # font file stem of each sample, e.g. "DejaVuSerif-Italic"
    families: list[str]  # coarse font group of each sample: sans/serif/mono/stix/cm/user
    class_names: list[str]  # the character of each class index

    @property
    def num_classes(self) -> int:
        """Number of classes (characters) in this split."""
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.labels.numel())


@dataclass
class GlyphData:
    """Train and test splits (disjoint characters) and the look-alikes that were dropped."""

    train: GlyphSplit
    test: GlyphSplit
    dropped_lookalikes: list[tuple[str, str]]  # (dropped char, kept char it looks like)


@dataclass(frozen=True)
class GlyphFont:
    """A font file to render with: its stem names it, its family groups it for plots."""

    path: Path
    family: str

    @property
    def stem(self) -> str:
        """File name without extension, used as the font's name."""
        return self.path.stem


class GlyphTensorDataset(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """(image, label) items of a GlyphSplit, optionally normalized and transformed.

    Renderings are already augmented, so ``transform`` is only for extra on-the-fly changes.
    ``mean``/``std`` (e.g. a backbone's) normalize after the transform.
    """

    def __init__(
        self,
        split: GlyphSplit,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if (mean is None) != (std is None):
            raise DaalmlError("GlyphTensorDataset: give both mean and std, or neither")
        self.split = split
        self.transform = transform
        self._mean = None if mean is None else torch.tensor(mean).view(-1, 1, 1)
        self._std = None if std is None else torch.tensor(std).view(-1, 1, 1)

    @property
    def labels(self) -> torch.Tensor:
        """Labels of all items, for samplers such as PML's MPerClassSampler."""
        return self.split.labels

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.split.images[index]
        if self.transform is not None:
            image = self.transform(image)
        if self._mean is not None and self._std is not None:
            image = (image - self._mean) / self._std
        return image, int(self.split.labels[index])

    @property
    def class_names(self) -> list[str]:
        """The character of each label value."""
        return list(self.split.class_names)

    def picture(self, index: int) -> np.ndarray:
        """Item ``index`` as an (H, W, 3) uint8 image (the rendering, grey in three channels)."""
        grey = (self.split.images[index].clamp(0, 1) * 255).round().to(torch.uint8)
        array = grey.permute(1, 2, 0).numpy()
        return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def default_cache_dir() -> Path:
    """``$DAALML_CACHE/glyphs`` if that variable is set, else ``~/.cache/daalml/glyphs``."""
    root = os.environ.get("DAALML_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "daalml"
    return base / "glyphs"


def builtin_fonts() -> list[GlyphFont]:
    """The usable fonts in matplotlib's own ``fonts/ttf`` directory, sorted by file name."""
    try:
        import matplotlib
    except ImportError as exc:
        raise DaalmlError("glyphs dataset needs matplotlib: pip install 'daalml[viz]'") from exc
    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts: list[GlyphFont] = []
    for path in sorted(font_dir.glob("*.ttf")):
        family = _builtin_family(path.stem)
        if family is not None:
            fonts.append(GlyphFont(path, family))
    if not fonts:
        raise DaalmlError(f"matplotlib font directory {font_dir}: no usable .ttf fonts found")
    return fonts


def _builtin_family(stem: str) -> str | None:
    if "Display" in stem:
        return None
    if stem in _CM_STEMS:
        return "cm"
    for prefix, family in _BUILTIN_FAMILIES:
        if stem.startswith(prefix):
            return family
    return None


def _user_fonts(font_files: Iterable[str | Path]) -> list[GlyphFont]:
    fonts: list[GlyphFont] = []
    for entry in font_files:
        path = Path(entry).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in {".ttf", ".otf"})
            if not found:
                raise DaalmlError(f"glyphs font directory {path}: no .ttf or .otf files in it")
            fonts.extend(GlyphFont(p.resolve(), "user") for p in found)
        elif path.is_file():
            fonts.append(GlyphFont(path.resolve(), "user"))
        else:
            raise DaalmlError(f"glyphs font file {path}: does not exist")
    return fonts


def _check_unique_stems(fonts: Sequence[GlyphFont]) -> None:
    seen: dict[str, Path] = {}
    for font in fonts:
        if font.stem in seen:
            raise DaalmlError(
                f"glyphs font file {font.path}: name {font.stem!r} is already used by "
                f"{seen[font.stem]}; rename one of them"
            )
        seen[font.stem] = font.path


def _coverage(font: GlyphFont, candidates: str) -> list[str]:
    """Candidate characters the font maps to a real glyph (cmap lookup via fontTools)."""
    from fontTools.ttLib import TTFont

    try:
        with TTFont(str(font.path), lazy=True, fontNumber=0) as tt:
            cmap = tt.getBestCmap() or {}
    except Exception as exc:  # fontTools raises many types for a broken or non-font file
        raise DaalmlError(
            f"glyphs font file {font.path}: not a readable TrueType/OpenType font ({exc})"
        ) from exc
    allowed = _ALNUM_ASCII if font.stem in _CM_STEMS else None
    return [
        ch
        for ch in candidates
        if cmap.get(ord(ch), ".notdef") != ".notdef" and (allowed is None or ch in allowed)
    ]


def _open_font(font: GlyphFont, size: int) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(str(font.path), size, layout_engine=ImageFont.Layout.BASIC)
    except OSError as exc:
        raise DaalmlError(f"glyphs font file {font.path}: not a loadable font ({exc})") from exc


def _draw(font: ImageFont.FreeTypeFont, ch: str, stroke: int = 0) -> Image.Image | None:
    """The character's ink cropped to its bounding box, or None if it draws nothing."""
    left, top, right, bottom = font.getbbox(ch, stroke_width=stroke)
    if right <= left or bottom <= top:
        return None
    pad = 2
    img = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(img).text(
        (pad - left, pad - top), ch, font=font, fill=255, stroke_width=stroke, stroke_fill=255
    )
    box = img.getbbox()
    return img.crop(box) if box else None


@dataclass(frozen=True)
class _Aug:
    """Augmentation parameters of one sample; the identity gives the clean rendering."""

    scale: float = 1.0
    angle: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)  # in output pixels
    thickness: int = 0  # -1 thinner (min filter), 0 as drawn, +1 bolder (stroke)
    noise: float = 0.0  # std of additive Gaussian noise in [0, 1] units

    @staticmethod
    def sample(rng: np.random.Generator) -> _Aug:
        """Light random augmentation: scale, rotation, shift, stroke thickness, noise."""
        return _Aug(
            scale=float(rng.uniform(0.85, 1.1)),
            angle=float(rng.uniform(-10.0, 10.0)),
            shift=(float(rng.uniform(-1.5, 1.5)), float(rng.uniform(-1.5, 1.5))),
            thickness=int(rng.choice([-1, 0, 0, 1])),
            noise=float(rng.uniform(0.0, 0.05)),
        )


def _thinner(glyph: Image.Image) -> Image.Image:
    """Erode the strokes, unless that would erase hairlines (thin fonts stay as drawn)."""
    thin = glyph.filter(ImageFilter.MinFilter(3))
    box = thin.getbbox()
    ink = np.asarray(glyph, dtype=np.float32).sum()
    if box is None or np.asarray(thin, dtype=np.float32).sum() < _THIN_KEEP * ink:
        return glyph
    return thin.crop(box)


def _render(
    font: ImageFont.FreeTypeFont,
    ch: str,
    size: int,
    aug: _Aug,
    rng: np.random.Generator | None = None,
) -> np.ndarray | None:
    """One (size, size) uint8 rendering, glyph centred by its bounding box; None if empty."""
    glyph = _draw(font, ch, stroke=_BOLDER_STROKE if aug.thickness > 0 else 0)
    if glyph is None:
        return None
    if aug.thickness < 0:
        glyph = _thinner(glyph)
    if aug.scale != 1.0:
        w, h = glyph.size
        glyph = glyph.resize(
            (max(1, round(w * aug.scale)), max(1, round(h * aug.scale))), Image.Resampling.BICUBIC
        )
    if aug.angle != 0.0:
        rotated = glyph.rotate(aug.angle, resample=Image.Resampling.BICUBIC, expand=True)
        box = rotated.getbbox()
        glyph = rotated.crop(box) if box else glyph
    side = size * _OVERSAMPLE
    limit = _FIT_FRACTION * side
    w, h = glyph.size
    if max(w, h) > limit:
        factor = limit / max(w, h)
        glyph = glyph.resize(
            (max(1, int(w * factor)), max(1, int(h * factor))), Image.Resampling.LANCZOS
        )
        w, h = glyph.size
    x = round((side - w) / 2 + aug.shift[0] * _OVERSAMPLE)
    y = round((side - h) / 2 + aug.shift[1] * _OVERSAMPLE)
    canvas = Image.new("L", (side, side), 0)
    canvas.paste(glyph, (min(max(x, 0), side - w), min(max(y, 0), side - h)))
    out = np.asarray(canvas.reduce(_OVERSAMPLE), dtype=np.float32) / 255.0
    if aug.noise > 0.0 and rng is not None:
        out = out + rng.normal(0.0, aug.noise, out.shape).astype(np.float32)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def _clean_renderings(
    fonts: Sequence[GlyphFont], coverage: dict[str, list[str]], size: int
) -> dict[str, dict[str, np.ndarray]]:
    """Unaugmented rendering of every drawable (font, char); missing glyphs are skipped.

    Besides the cmap check, a rendering identical to the font's .notdef box (what a character
    it lacks draws) or with no ink counts as missing.
    """
    clean: dict[str, dict[str, np.ndarray]] = {}
    identity = _Aug()
    for font in fonts:
        pil_font = _open_font(font, _font_px(size))
        notdef = _render(pil_font, "\U0010fffd", size, identity)
        per_char: dict[str, np.ndarray] = {}
        for ch in coverage[font.stem]:
            img = _render(pil_font, ch, size, identity)
            if img is None or (notdef is not None and np.array_equal(img, notdef)):
                continue
            per_char[ch] = img
        clean[font.stem] = per_char
    return clean


def _font_px(size: int) -> int:
    return max(4, round(_EM_FRACTION * size * _OVERSAMPLE))


def find_lookalikes(
    clean: dict[str, dict[str, np.ndarray]],
    order: Sequence[str],
    *,
    distance: float = _LOOKALIKE_DISTANCE,
    font_share: float = _LOOKALIKE_FONT_SHARE,
) -> tuple[list[str], list[tuple[str, str]]]:
    """Split ``order`` into kept characters and (dropped, kept) look-alike pairs.

    ``clean`` maps font -> char -> clean rendering. Two characters look alike when their
    renderings a, b differ by less than ``distance`` in at least ``font_share`` of the fonts
    drawing both, with the distance ``|a - b|^2 / (|a|^2 + |b|^2)``: 0 for identical images,
    1 for disjoint ink, one matrix product per font. Characters are visited in ``order``
    (preference); one that looks like an already kept character is dropped.
    """
    index = {ch: i for i, ch in enumerate(order)}
    n = len(order)
    matches = np.zeros((n, n), dtype=np.int64)
    shared = np.zeros((n, n), dtype=np.int64)
    for per_char in clean.values():
        chars = [ch for ch in order if ch in per_char]
        if len(chars) < 2:
            continue
        idx = np.array([index[ch] for ch in chars])
        flat = np.stack([per_char[ch] for ch in chars]).reshape(len(chars), -1)
        flat = flat.astype(np.float32) / np.float32(255.0)
        gram = flat @ flat.T
        norms = np.diag(gram)
        dist = 1.0 - 2.0 * gram / np.maximum(norms[:, None] + norms[None, :], 1e-12)
        shared[np.ix_(idx, idx)] += 1
        matches[np.ix_(idx, idx)] += dist < distance
    kept: list[int] = []
    dropped: list[tuple[str, str]] = []
    for i in range(n):
        twin = next(
            (k for k in kept if shared[i, k] > 0 and matches[i, k] >= font_share * shared[i, k]),
            None,
        )
        if twin is None:
            kept.append(i)
        else:
            dropped.append((order[i], order[twin]))
    return [order[i] for i in kept], dropped


def load_glyphs(
    *,
    seed: int = 0,
    image_size: int = 32,
    samples_per_font: int = 2,
    font_files: Sequence[str | Path] = (),
    cache_dir: Path | None = None,
    max_classes: int | None = None,
    progress: bool = False,
) -> GlyphData:
    """Render (or load from the disk cache) the glyphs dataset.

    Every kept character is rendered ``samples_per_font`` times, with seeded light
    augmentation, in each font that draws it: matplotlib's fonts plus ``font_files`` (files or
    directories of .ttf/.otf, family "user"). Look-alikes are dropped (see ``find_lookalikes``),
    then the characters are shuffled with ``seed``, cut to ``max_classes`` and split in half:
    first half train, rest test. Same arguments and font files give identical tensors.
    """
    _check_args(seed, image_size, samples_per_font, max_classes)
    fonts = builtin_fonts() + _user_fonts(font_files)
    _check_unique_stems(fonts)
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    key = _cache_key(fonts, seed, image_size, samples_per_font, max_classes)
    cache_file = cache_dir / f"glyphs-{key[:20]}.pt"
    cached = _read_cache(cache_file, key)
    if cached is not None:
        return cached
    data = _build(fonts, seed, image_size, samples_per_font, max_classes, progress)
    _write_cache(cache_file, key, data)
    return data


def _check_args(seed: int, image_size: int, samples_per_font: int, max_classes: int | None) -> None:
    if not 16 <= image_size <= 256:
        raise DaalmlError(f"glyphs image_size={image_size}: must be between 16 and 256")
    if samples_per_font < 1:
        raise DaalmlError(f"glyphs samples_per_font={samples_per_font}: must be at least 1")
    if max_classes is not None and max_classes < 2:
        raise DaalmlError(f"glyphs max_classes={max_classes}: need at least 2 (one per split)")
    if seed < 0:
        raise DaalmlError(f"glyphs seed={seed}: must be non-negative")


def _cache_key(
    fonts: Sequence[GlyphFont],
    seed: int,
    image_size: int,
    samples_per_font: int,
    max_classes: int | None,
) -> str:
    import PIL
    from PIL import features

    spec = {
        "format": _FORMAT_VERSION,
        "seed": seed,
        "image_size": image_size,
        "samples_per_font": samples_per_font,
        "max_classes": max_classes,
        "candidates": CANDIDATES,
        "render": [_OVERSAMPLE, _BOLDER_STROKE, _THIN_KEEP, _EM_FRACTION, _FIT_FRACTION],
        "lookalike": [_LOOKALIKE_SIZE, _LOOKALIKE_DISTANCE, _LOOKALIKE_FONT_SHARE],
        "min_class": [MIN_SAMPLES_PER_CLASS, MIN_FONTS_PER_CLASS],
        "fonts": [(f.path.name, f.path.stat().st_size, f.family) for f in fonts],
        "pillow": PIL.__version__,
        "freetype": features.version("freetype2"),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _build(
    fonts: Sequence[GlyphFont],
    seed: int,
    image_size: int,
    samples_per_font: int,
    max_classes: int | None,
    progress: bool,
) -> GlyphData:
    coverage = {font.stem: _coverage(font, CANDIDATES) for font in fonts}
    for font in fonts:
        if font.family == "user" and not coverage[font.stem]:
            raise DaalmlError(f"glyphs font file {font.path}: draws none of the characters")
    clean = _clean_renderings(fonts, coverage, _LOOKALIKE_SIZE)
    min_fonts = max(MIN_FONTS_PER_CLASS, math.ceil(MIN_SAMPLES_PER_CLASS / samples_per_font))
    n_fonts = {ch: sum(ch in per_char for per_char in clean.values()) for ch in CANDIDATES}
    order = [ch for ch in CANDIDATES if n_fonts[ch] >= min_fonts]
    kept, dropped = find_lookalikes(clean, order)
    rng = np.random.default_rng(seed)
    chosen = [kept[i] for i in rng.permutation(len(kept))]
    if max_classes is not None:
        chosen = chosen[:max_classes]
    if len(chosen) < 2:
        names = ", ".join(f.stem for f in fonts)
        raise DaalmlError(f"glyphs fonts ({names}): fewer than 2 characters drawable")
    half = (len(chosen) + 1) // 2
    rank = {ch: i for i, ch in enumerate(CANDIDATES)}
    train_chars = sorted(chosen[:half], key=rank.__getitem__)
    test_chars = sorted(chosen[half:], key=rank.__getitem__)
    drawable = {stem: set(per_char) for stem, per_char in clean.items()}
    render = _progress_fonts(fonts, progress)
    samples = _render_all(render, drawable, set(chosen), seed, image_size, samples_per_font)
    return GlyphData(
        train=_make_split(samples, train_chars),
        test=_make_split(samples, test_chars),
        dropped_lookalikes=dropped,
    )


def _progress_fonts(fonts: Sequence[GlyphFont], progress: bool) -> Iterable[GlyphFont]:
    if not progress:
        return fonts
    from rich.console import Console
    from rich.progress import track

    return track(
        fonts, description="Rendering glyphs", transient=True, console=Console(stderr=True)
    )


_Sample = tuple[str, str, str, np.ndarray]  # (char, font stem, family, image)


def _render_all(
    fonts: Iterable[GlyphFont],
    drawable: dict[str, set[str]],
    chars: set[str],
    seed: int,
    image_size: int,
    samples_per_font: int,
) -> list[_Sample]:
    """Augmented renderings; each sample's RNG depends only on (seed, font, char, k)."""
    samples: list[_Sample] = []
    for font in fonts:
        pil_font = _open_font(font, _font_px(image_size))
        font_id = zlib.crc32(font.stem.encode())
        for ch in CANDIDATES:
            if ch not in chars or ch not in drawable[font.stem]:
                continue
            for k in range(samples_per_font):
                rng = np.random.default_rng([seed, font_id, ord(ch), k])
                img = _render(pil_font, ch, image_size, _Aug.sample(rng), rng)
                if img is not None:
                    samples.append((ch, font.stem, font.family, img))
    return samples


def _make_split(samples: Sequence[_Sample], class_names: list[str]) -> GlyphSplit:
    label_of = {ch: i for i, ch in enumerate(class_names)}
    mine = sorted((s for s in samples if s[0] in label_of), key=lambda s: (label_of[s[0]], s[1]))
    images = np.stack([s[3] for s in mine])[:, None]
    return GlyphSplit(
        images=torch.from_numpy(images).float().div_(255.0),
        labels=torch.tensor([label_of[s[0]] for s in mine], dtype=torch.int64),
        fonts=[s[1] for s in mine],
        families=[s[2] for s in mine],
        class_names=class_names,
    )


def _split_to_dict(split: GlyphSplit) -> dict[str, object]:
    return {
        "images": split.images.mul(255.0).round_().to(torch.uint8),
        "labels": split.labels,
        "fonts": list(split.fonts),
        "families": list(split.families),
        "class_names": list(split.class_names),
    }


def _split_from_dict(raw: dict[str, object]) -> GlyphSplit:
    images = raw["images"]
    labels = raw["labels"]
    assert isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor)
    return GlyphSplit(
        images=images.float().div_(255.0),
        labels=labels,
        fonts=list(raw["fonts"]),  # type: ignore[call-overload]
        families=list(raw["families"]),  # type: ignore[call-overload]
        class_names=list(raw["class_names"]),  # type: ignore[call-overload]
    )


def _read_cache(path: Path, key: str) -> GlyphData | None:
    """The cached data, or None if absent or unusable (then warned about and rebuilt)."""
    if not path.is_file():
        return None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        if raw.get("key") != key:
            raise ValueError("written for other parameters or fonts")
        return GlyphData(
            train=_split_from_dict(raw["train"]),
            test=_split_from_dict(raw["test"]),
            dropped_lookalikes=[(a, b) for a, b in raw["dropped_lookalikes"]],
        )
    except Exception as exc:  # torch/zip/pickle raise many types for a damaged file
        warnings.warn(f"glyphs cache file {path}: unusable ({exc}); rendering again", stacklevel=3)
        return None


def _write_cache(path: Path, key: str, data: GlyphData) -> None:
    """Save atomically: write a temp file in the same directory, then os.replace it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DaalmlError(f"glyphs cache dir {path.parent}: cannot create it ({exc})") from exc
    payload = {
        "key": key,
        "train": _split_to_dict(data.train),
        "test": _split_to_dict(data.test),
        "dropped_lookalikes": [list(pair) for pair in data.dropped_lookalikes],
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise DaalmlError(f"glyphs cache file {path}: cannot write it ({exc})") from exc
