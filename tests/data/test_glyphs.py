"""Tests for the built-in glyphs dataset and the SmallCNN backbone trained on it."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from daalml.data import glyphs
from daalml.data.glyphs import (
    CHARACTER_GROUPS,
    GlyphData,
    GlyphSplit,
    GlyphTensorDataset,
    builtin_fonts,
    default_cache_dir,
    find_lookalikes,
    load_glyphs,
)
from daalml.errors import DaalmlError
from daalml.models.backbones import Backbone
from daalml.models.small_cnn import SmallCNN

# With matplotlib's fonts: 210 candidates, 35 look-alikes dropped, 175 classes split 88/87.
EXPECTED_CLASSES = 175
BUILTIN_FAMILIES = {"sans", "serif", "mono", "stix", "cm"}


def _font_path(stem: str) -> Path:
    return next(f.path for f in builtin_fonts() if f.stem == stem)


@pytest.fixture(scope="module")
def full_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("glyphs_cache")


@pytest.fixture(scope="module")
def full(full_cache: Path) -> GlyphData:
    """The default dataset, rendered once for the module."""
    return load_glyphs(cache_dir=full_cache)


def _small(cache: Path, **kwargs: object) -> GlyphData:
    params: dict[str, object] = {"max_classes": 6, "samples_per_font": 1, "cache_dir": cache}
    params.update(kwargs)
    return load_glyphs(**params)  # type: ignore[arg-type]


def _assert_same(a: GlyphData, b: GlyphData) -> None:
    for sa, sb in ((a.train, b.train), (a.test, b.test)):
        assert torch.equal(sa.images, sb.images)
        assert torch.equal(sa.labels, sb.labels)
        assert (sa.fonts, sa.families, sa.class_names) == (sb.fonts, sb.families, sb.class_names)
    assert a.dropped_lookalikes == b.dropped_lookalikes


def test_builtin_fonts_cover_the_matplotlib_families() -> None:
    fonts = builtin_fonts()
    stems = {f.stem for f in fonts}
    assert {"DejaVuSans", "DejaVuSerif-Italic", "DejaVuSansMono-Bold", "STIXGeneral"} <= stems
    assert {"cmr10", "cmtt10", "cmti10"} <= stems
    # placeholder / symbol-only fonts are left out on purpose
    assert not stems & {"LastResortHE-Regular", "cmex10", "cmsy10", "DejaVuSansDisplay"}
    assert {f.family for f in fonts} == BUILTIN_FAMILIES


def test_default_dataset_shapes_and_class_count(full: GlyphData) -> None:
    train, test = full.train, full.test
    assert train.num_classes + test.num_classes == EXPECTED_CLASSES
    assert (train.num_classes, test.num_classes) == (88, 87)
    for split in (train, test):
        n = len(split)
        assert split.images.shape == (n, 1, 32, 32)
        assert split.images.dtype == torch.float32
        assert float(split.images.min()) >= 0.0 and float(split.images.max()) <= 1.0
        assert split.labels.dtype == torch.int64
        assert sorted(set(split.labels.tolist())) == list(range(split.num_classes))
        assert len(split.fonts) == len(split.families) == n
        assert set(split.families) == BUILTIN_FAMILIES
        assert len(set(split.class_names)) == split.num_classes
        counts = Counter(split.labels.tolist())
        assert min(counts.values()) >= 8  # enough for m-per-class batches
        # every class comes in several fonts (the sub-clusters the dataset is about)
        fonts_per_class = Counter(c for c, _ in set(_char_fonts(split)))
        assert min(fonts_per_class.values()) >= 3
        # each image shows a glyph centred by its bounding box (up to the random shift)
        for image in split.images[::7, 0]:
            rows, cols = torch.nonzero(image > 0.5, as_tuple=True)
            assert rows.numel() > 0
            for coords in (rows, cols):
                middle = (float(coords.min()) + float(coords.max())) / 2
                assert abs(middle - 15.5) <= 3.0
    assert len(train) + len(test) > 5000


def test_split_is_class_disjoint_and_mixes_scripts(full: GlyphData) -> None:
    train, test = set(full.train.class_names), set(full.test.class_names)
    assert not train & test
    latin = set(CHARACTER_GROUPS["latin_upper"] + CHARACTER_GROUPS["latin_lower"])
    cyrillic = set(CHARACTER_GROUPS["cyrillic_upper"] + CHARACTER_GROUPS["cyrillic_lower"])
    for names in (train, test):
        assert names & latin and names & cyrillic


def test_lookalikes_are_detected_and_removed(full: GlyphData) -> None:
    dropped = dict(full.dropped_lookalikes)
    kept = set(full.train.class_names) | set(full.test.class_names)
    # Greek Alpha and Cyrillic A are dropped in favour of Latin A, and so on
    assert dropped["Α"] == "A" and dropped["А"] == "A"
    assert dropped["Ο"] == "O" and dropped["О"] == "O" and dropped["о"] == "o"
    assert dropped["с"] == "c" and dropped["р"] == "p"
    # non-Latin pairs are found as well: Cyrillic Ge is Greek Gamma, Cyrillic ka is kappa
    assert dropped["Г"] == "Γ" and dropped["к"] == "κ"
    assert "A" in kept and "Γ" in kept and "κ" in kept
    assert not kept & set(dropped)
    assert all(keep in kept for keep in dropped.values())
    # shapes that differ are kept: Lambda is not A, Cyrillic Zhe has no twin, Theta is not O
    assert {"Λ", "Ж", "Θ", "0", "l", "I"} <= kept
    assert len(full.dropped_lookalikes) == 210 - EXPECTED_CLASSES


def test_find_lookalikes_decides_from_pixels() -> None:
    rng = np.random.default_rng(0)
    a, b, c = ((rng.random((16, 16)) * 255).astype(np.uint8) for _ in range(3))
    near_a = a.copy()
    near_a[0, 0] = 255 - near_a[0, 0]  # one pixel off: still the same glyph
    # "y" matches "x" in 2 of 3 fonts, "z" matches "x" in 1 of 3 and "y" in 1 of 3.
    clean = {
        "f1": {"x": a, "y": near_a, "z": a},
        "f2": {"x": a, "y": a, "z": b},
        "f3": {"x": a, "y": b, "z": c},
    }
    kept, dropped = find_lookalikes(clean, ["x", "y", "z"])
    assert kept == ["x", "z"]
    assert dropped == [("y", "x")]
    # preference follows the order given
    kept, dropped = find_lookalikes(clean, ["y", "x", "z"])
    assert kept == ["y", "z"] and dropped == [("x", "y")]
    # a stricter share keeps all three
    kept, dropped = find_lookalikes(clean, ["x", "y", "z"], font_share=0.9)
    assert kept == ["x", "y", "z"] and dropped == []


def test_missing_glyphs_are_skipped(full: GlyphData) -> None:
    pairs = {(c, f) for split in (full.train, full.test) for c, f in _char_fonts(split)}
    # Computer Modern fonts have no Greek/Cyrillic; STIX italic lacks n-ary summation
    assert not any(f.startswith("cm") and c in "ΓΣαЖж" for c, f in pairs)
    assert ("∑", "STIXGeneral") in pairs and ("∑", "STIXGeneralItalic") not in pairs
    # a character a font lacks renders as its .notdef box and is skipped even if listed
    font = next(f for f in builtin_fonts() if f.stem == "DejaVuSans")
    clean = glyphs._clean_renderings([font], {"DejaVuSans": ["A", "\u4e00"]}, 32)
    assert set(clean["DejaVuSans"]) == {"A"}


def _char_fonts(split: GlyphSplit) -> list[tuple[str, str]]:
    return [
        (split.class_names[y], f) for y, f in zip(split.labels.tolist(), split.fonts, strict=True)
    ]


def test_same_seed_same_tensors_other_seed_differs(tmp_path: Path) -> None:
    first = _small(tmp_path / "a", seed=1, progress=True)
    again = _small(tmp_path / "b", seed=1)
    _assert_same(first, again)
    other = _small(tmp_path / "c", seed=2)
    assert first.dropped_lookalikes == other.dropped_lookalikes  # look-alikes ignore the seed
    chosen = set(first.train.class_names + first.test.class_names)
    assert chosen != set(other.train.class_names + other.test.class_names)


def test_augmentation_depends_on_seed_font_char_and_index() -> None:
    fonts = [f for f in builtin_fonts() if f.stem in ("DejaVuSans", "cmr10")]
    drawable = {"DejaVuSans": {"A", "Ж"}, "cmr10": {"A"}}

    def render(seed: int) -> list[np.ndarray]:
        samples = glyphs._render_all(fonts, drawable, {"A", "Ж"}, seed, 32, 2)
        assert [(c, f) for c, f, _, _ in samples] == [
            ("A", "DejaVuSans"),
            ("A", "DejaVuSans"),
            ("Ж", "DejaVuSans"),
            ("Ж", "DejaVuSans"),
            ("A", "cmr10"),
            ("A", "cmr10"),
        ]
        return [img for _, _, _, img in samples]

    one, same, two = render(1), render(1), render(2)
    assert all(np.array_equal(a, b) for a, b in zip(one, same, strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(one, two, strict=True))
    assert not np.array_equal(one[0], one[1])  # two samples of one (font, char) differ


def test_cache_hit_is_identical_and_fast(
    full: GlyphData, full_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = list(full_cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"  # no temp files left behind

    def no_render(*args: object, **kwargs: object) -> GlyphData:
        raise AssertionError("cache miss: rendered again")

    monkeypatch.setattr(glyphs, "_build", no_render)
    start = time.perf_counter()
    cached = load_glyphs(cache_dir=full_cache)
    assert time.perf_counter() - start < 2.0
    _assert_same(full, cached)


def test_damaged_cache_is_rebuilt(tmp_path: Path) -> None:
    data = _small(tmp_path)
    (cache_file,) = tmp_path.iterdir()
    cache_file.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match=r"glyphs cache file .*\.pt: unusable"):
        rebuilt = _small(tmp_path)
    _assert_same(data, rebuilt)
    assert cache_file.stat().st_size > 1000


def test_default_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DAALML_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "glyphs"
    monkeypatch.delenv("DAALML_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "daalml" / "glyphs"


def test_image_size_changes_resolution_not_classes(tmp_path: Path) -> None:
    base = _small(tmp_path / "a")
    small = _small(tmp_path / "b", image_size=24)
    assert small.train.images.shape[1:] == (1, 24, 24)
    assert small.train.class_names == base.train.class_names
    assert small.test.class_names == base.test.class_names


def test_user_font_file_is_rendered(tmp_path: Path) -> None:
    font = tmp_path / "MyGlyphFont.ttf"
    shutil.copyfile(_font_path("DejaVuSerif-Bold"), font)
    data = _small(tmp_path / "cache", font_files=[font], max_classes=4)
    for split in (data.train, data.test):
        user = [i for i, f in enumerate(split.fonts) if f == "MyGlyphFont"]
        assert {split.families[i] for i in user} == {"user"}
        assert {int(split.labels[i]) for i in user} == set(range(split.num_classes))
    without = _small(tmp_path / "cache", max_classes=4)
    assert "MyGlyphFont" not in without.train.fonts + without.test.fonts
    assert len(list((tmp_path / "cache").iterdir())) == 2  # font list is part of the key
    # a directory of fonts works too
    from_dir = _small(tmp_path / "cache", font_files=[tmp_path], max_classes=4)
    _assert_same(data, from_dir)


def test_bad_font_files_raise(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ttf"
    with pytest.raises(DaalmlError, match=r"nope\.ttf: does not exist"):
        load_glyphs(font_files=[missing], cache_dir=tmp_path)
    junk = tmp_path / "Junk.ttf"
    junk.write_text("hello")
    with pytest.raises(DaalmlError, match=r"Junk\.ttf: not a readable TrueType/OpenType"):
        load_glyphs(font_files=[junk], cache_dir=tmp_path)
    clash = tmp_path / "DejaVuSans.ttf"
    shutil.copyfile(_font_path("DejaVuSans"), clash)
    with pytest.raises(DaalmlError, match=r"DejaVuSans\.ttf: name 'DejaVuSans' is already used"):
        load_glyphs(font_files=[clash], cache_dir=tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DaalmlError, match=r"font directory .*empty: no \.ttf or \.otf"):
        load_glyphs(font_files=[empty], cache_dir=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 8}, "image_size=8"),
        ({"samples_per_font": 0}, "samples_per_font=0"),
        ({"max_classes": 1}, "max_classes=1"),
        ({"seed": -1}, "seed=-1"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, int], message: str, tmp_path: Path) -> None:
    with pytest.raises(DaalmlError, match=message):
        load_glyphs(cache_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


def test_tensor_dataset_items(full: GlyphData) -> None:
    ds = GlyphTensorDataset(full.test, mean=(0.5,), std=(0.5,))
    assert len(ds) == len(full.test)
    assert torch.equal(ds.labels, full.test.labels)
    image, label = ds[3]
    assert image.shape == (1, 32, 32) and isinstance(label, int)
    assert torch.allclose(image, full.test.images[3] * 2 - 1)
    flipped = GlyphTensorDataset(full.test, transform=lambda x: x.flip(-1))
    assert torch.equal(flipped[3][0], full.test.images[3].flip(-1))
    with pytest.raises(DaalmlError, match="both mean and std"):
        GlyphTensorDataset(full.test, mean=(0.5,))


def test_small_cnn_is_a_backbone() -> None:
    torch.manual_seed(0)
    net = SmallCNN()
    assert isinstance(net, Backbone)
    assert (net.name, net.feature_dim, net.mean, net.std) == ("small_cnn", 128, (0.5,), (0.5,))
    images = torch.rand(4, 1, 32, 32)
    features = net(images)
    assert features.shape == (4, 128)
    features.pow(2).mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    assert torch.equal(net(images), net(images))
    assert net(torch.rand(2, 1, 24, 24)).shape == (2, 128)
    wide = SmallCNN(in_channels=3, feature_dim=64)
    assert wide(torch.rand(2, 3, 32, 32)).shape == (2, 64) and wide.mean == (0.5, 0.5, 0.5)
    with pytest.raises(DaalmlError, match="small_cnn"):
        net(torch.rand(2, 3, 32, 32))
    with pytest.raises(DaalmlError, match="feature_dim=0"):
        SmallCNN(feature_dim=0)
