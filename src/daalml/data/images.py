"""Image decoding with clear errors, and a parallel integrity check for whole datasets.

Truncated files are reported rather than silently padded: PIL's global ``LOAD_TRUNCATED_IMAGES``
is left untouched, so a broken download fails loudly once, before training starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from daalml.data.records import ImageRecord
from daalml.errors import DaalmlError

_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def load_rgb(path: str | Path) -> Image.Image:
    """Fully decode ``path`` and return it as an RGB image; raise naming the file if broken."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "P" and "transparency" in image.info:
                # Palette transparency must go through RGBA, or PIL warns and may miscolour.
                return image.convert("RGBA").convert("RGB")
            return image.convert("RGB")
    except _DECODE_ERRORS as err:
        raise DaalmlError(f"cannot read image {path}: {err}") from err


def _problem(path: Path) -> str | None:
    """Why ``path`` cannot be decoded, or ``None`` when it decodes fully."""
    try:
        with Image.open(path) as image:
            image.load()
    except _DECODE_ERRORS as err:
        return str(err) or type(err).__name__
    return None


def check_images(
    records: Sequence[ImageRecord], *, strict: bool, progress: bool = False
) -> tuple[list[ImageRecord], list[tuple[Path, str]]]:
    """Decode every image in a thread pool; return the good records and ``(path, reason)`` pairs.

    With ``strict`` the first broken image (in record order) raises instead. ``progress`` shows a
    rich progress bar.
    """
    good: list[ImageRecord] = []
    broken: list[tuple[Path, str]] = []
    with ThreadPoolExecutor(thread_name_prefix="daalml-check") as pool:
        results: Iterator[str | None] = pool.map(_problem, [r.path for r in records])
        if progress:
            from rich.console import Console
            from rich.progress import track

            results = iter(
                track(
                    results,
                    total=len(records),
                    description="Checking images",
                    transient=True,
                    console=Console(stderr=True),  # stdout stays for results (e.g. --json)
                )
            )
        try:
            for record, problem in zip(records, results, strict=True):
                if problem is None:
                    good.append(record)
                elif strict:
                    raise DaalmlError(f"cannot read image {record.path}: {problem}")
                else:
                    broken.append((record.path, problem))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return good, broken
