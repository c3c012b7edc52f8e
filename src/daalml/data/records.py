"""Image records and dataset splits, plus the small readers the layout loaders share.

Every loader turns its annotation files into ``ImageRecord`` lists; the helpers here keep the
error messages uniform (one line, naming the file, the line and what is wrong).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daalml.errors import DaalmlError


@dataclass(frozen=True)
class ImageRecord:
    """One image: where it is, its label (contiguous within its split) and its class name."""

    path: Path
    label: int
    class_name: str


@dataclass
class DatasetSplits:
    """Class-disjoint train and test sets of one dataset (In-Shop also keeps query/gallery)."""

    name: str
    root: Path
    train: list[ImageRecord]
    test: list[ImageRecord]
    query: list[ImageRecord] | None = None
    gallery: list[ImageRecord] | None = None

    @property
    def num_train_classes(self) -> int:
        """Number of distinct training labels."""
        return len({r.label for r in self.train})

    @property
    def num_test_classes(self) -> int:
        """Number of distinct test labels."""
        return len({r.label for r in self.test})

    def check_class_disjoint(self) -> None:
        """Raise if a class or an image appears in both train and test (the DML protocol forbids it)."""
        shared = {r.class_name for r in self.train} & {r.class_name for r in self.test}
        if shared:
            example = sorted(shared)[0]
            raise DaalmlError(
                f"{self.name} at {self.root}: {len(shared)} classes are in both train and test "
                f"(e.g. {example!r}); the splits must be class-disjoint"
            )
        shared_paths = {r.path for r in self.train} & {r.path for r in self.test}
        if shared_paths:
            example_path = sorted(shared_paths)[0]
            raise DaalmlError(
                f"{self.name} at {self.root}: image {example_path} is in both train and test"
            )


def require_root(root: str | Path) -> Path:
    """Return ``root`` as an absolute path, or raise if it does not exist."""
    path = Path(root).expanduser().absolute()
    if not path.exists():
        raise DaalmlError(f"dataset root does not exist: {path}")
    return path


def require_files(root: Path, layout: str, names: tuple[str, ...]) -> None:
    """Raise naming the first layout file missing under ``root``."""
    if not root.is_dir():
        raise DaalmlError(f"{layout} layout expected at {root}: not a directory")
    for name in names:
        if not (root / name).is_file():
            raise DaalmlError(f"{layout} layout expected at {root}: missing {name}")


def read_lines(path: Path) -> list[str]:
    """Read a UTF-8 annotation file as lines, naming the file if it cannot be read."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DaalmlError(f"cannot read {path}: {err}") from err


def read_rows(path: Path, n_columns: int, *, skip: int = 0) -> list[tuple[int, list[str]]]:
    """Whitespace-split the non-blank lines of ``path`` after ``skip`` lines; check column counts.

    Returns ``(line_number, fields)`` pairs, line numbers 1-based as an editor shows them.
    """
    lines = read_lines(path)
    rows: list[tuple[int, list[str]]] = []
    for number, line in enumerate(lines[skip:], start=skip + 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != n_columns:
            raise DaalmlError(
                f"{path} line {number}: expected {n_columns} columns, got {len(fields)}"
            )
        rows.append((number, fields))
    return rows


def parse_int(value: str, path: Path, line: int, what: str) -> int:
    """Parse an integer id from an annotation file, naming the file and line if it is not one."""
    try:
        return int(value)
    except ValueError:
        raise DaalmlError(f"{path} line {line}: {what} {value!r} is not an integer") from None


def require_image(image: Path, source: Path, line: int) -> Path:
    """Raise if an image listed at ``source`` line ``line`` is missing on disk."""
    if not image.is_file():
        raise DaalmlError(f"{source} line {line}: listed image not found: {image}")
    return image
