"""Image decoding: RGB conversion, broken-file errors and the parallel integrity check."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageFile

from daalml.data.images import check_images, load_rgb
from daalml.data.records import ImageRecord
from daalml.errors import DaalmlError
from tests.data.builders import write_image


def _truncated(path: Path) -> Path:
    """A JPEG cut in the middle of its scan data."""
    Image.effect_noise((64, 64), 50).convert("RGB").save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16", "1"])
def test_load_rgb_converts_modes(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"img_{mode.replace(';', '')}.{'tiff' if mode in ('CMYK', 'I;16') else 'png'}"
    Image.new(mode, (5, 4)).save(path)
    image = load_rgb(path)
    assert image.mode == "RGB"
    assert image.size == (5, 4)


def test_load_rgb_palette_with_transparency(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    path = tmp_path / "p.png"
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.save(path, transparency=b"\x00\xff" + b"\xff" * 254)
    rgb = load_rgb(path)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (255, 0, 0)
    assert not [w for w in recwarn if "Palette" in str(w.message)]


def test_load_rgb_truncated_names_file(tmp_path: Path) -> None:
    path = _truncated(tmp_path / "cut.jpg")
    with pytest.raises(DaalmlError, match=rf"^cannot read image {path}: .*truncated"):
        load_rgb(path)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES


@pytest.mark.parametrize("content", [b"", b"this is not an image"])
def test_load_rgb_not_an_image(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    with pytest.raises(DaalmlError, match=rf"^cannot read image {path}: "):
        load_rgb(path)


def test_load_rgb_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DaalmlError, match=r"cannot read image .*absent.png"):
        load_rgb(tmp_path / "absent.png")


def _records(tmp_path: Path) -> tuple[list[ImageRecord], list[Path]]:
    records = [
        ImageRecord(write_image(tmp_path / f"ok_{i}.jpg", 8, i), i % 2, f"c{i % 2}")
        for i in range(6)
    ]
    cut = _truncated(tmp_path / "cut.jpg")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"junk")
    records.insert(2, ImageRecord(cut, 0, "c0"))
    records.insert(5, ImageRecord(junk, 1, "c1"))
    return records, [cut, junk]


def test_check_images_separates_broken(tmp_path: Path) -> None:
    records, bad = _records(tmp_path)
    good, broken = check_images(records, strict=False)
    assert good == [r for r in records if r.path not in bad]
    assert [p for p, _ in broken] == bad
    assert "truncated" in broken[0][1]
    assert all(reason for _, reason in broken)


def test_check_images_strict_raises_on_first_broken(tmp_path: Path) -> None:
    records, bad = _records(tmp_path)
    with pytest.raises(DaalmlError, match=rf"^cannot read image {bad[0]}: .*truncated"):
        check_images(records, strict=True)
    good, broken = check_images([r for r in records if r.path not in bad], strict=True)
    assert len(good) == 6 and broken == []


def test_check_images_with_progress(tmp_path: Path) -> None:
    records, bad = _records(tmp_path)
    good, broken = check_images(records, strict=False, progress=True)
    assert len(good) == 6
    assert [p for p, _ in broken] == bad
