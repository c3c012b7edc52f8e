"""Image files named by a folder (class sub-folders, or flat) or by a list file, with labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from daalml.errors import DaalmlError


@dataclass
class ImageList:
    """Image files, with labels when the source gave classes (``class_names[label]``)."""

    paths: list[Path]
    labels: list[int] | None = None
    class_names: list[str] | None = None


def is_image(path: Path) -> bool:
    """A visible file with an extension torchvision's ``ImageFolder`` accepts."""
    return (
        path.is_file() and path.suffix.lower() in IMG_EXTENSIONS and not path.name.startswith(".")
    )


def label_order(names: set[str]) -> list[str]:
    """Integers in numeric order (so "10" follows "9"), other names as strings."""
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)


def class_folders(root: Path) -> dict[str, list[Path]]:
    """Each visible sub-folder of ``root`` (sorted by name) -> its images below it, sorted;
    folders without images are kept, with an empty list (the callers say what they do)."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {f.name: sorted(p for p in f.rglob("*") if is_image(p)) for f in folders}


def _from_folder(root: Path) -> ImageList:
    per_class = {name: found for name, found in class_folders(root).items() if found}
    loose = sorted(p for p in root.iterdir() if is_image(p))
    if per_class and loose:
        raise DaalmlError(
            f"image folder {root}: holds both loose images ({loose[0].name}) and class folders "
            f"({next(iter(per_class))}); use one or the other"
        )
    if not per_class:
        if not loose:
            raise DaalmlError(f"image folder {root}: no images ({', '.join(IMG_EXTENSIONS)})")
        return ImageList(paths=loose)
    names = list(per_class)
    paths = [p for name in names for p in per_class[name]]
    labels = [label for label, name in enumerate(names) for _ in per_class[name]]
    return ImageList(paths=paths, labels=labels, class_names=names)


def _split_line(line: str, base: Path) -> tuple[str, str | None]:
    """``path``, ``path<TAB>label`` or ``path,label`` (a whole line naming a file is a path)."""
    if "\t" in line:
        path, label = line.split("\t", 1)
        return path.strip(), label.strip()
    if "," in line and not (base / line).is_file():
        path, label = line.rsplit(",", 1)
        return path.strip(), label.strip()
    return line, None


def _from_list_file(path: Path) -> ImageList:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DaalmlError(f"cannot read image list {path}: {err}") from err
    rows: list[tuple[int, Path, str | None]] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        rel, label = _split_line(line, path.parent)
        image = (path.parent / Path(rel).expanduser()).resolve()
        if not image.is_file():
            raise DaalmlError(f"image list {path} line {number}: image not found: {image}")
        if label == "":
            raise DaalmlError(f"image list {path} line {number}: empty label after the path")
        rows.append((number, image, label))
    if not rows:
        raise DaalmlError(f"image list {path}: lists no images")
    labelled = [label is not None for _, _, label in rows]
    if any(labelled) and not all(labelled):
        number = rows[labelled.index(not labelled[0])][0]
        raise DaalmlError(
            f"image list {path} line {number}: some lines have a label and some do not; "
            "label every line or none"
        )
    paths = [image for _, image, _ in rows]
    if not labelled[0]:
        return ImageList(paths=paths)
    names = label_order({str(label) for _, _, label in rows})
    index = {name: i for i, name in enumerate(names)}
    return ImageList(paths=paths, labels=[index[str(lab)] for _, _, lab in rows], class_names=names)


def list_images(source: str | Path) -> ImageList:
    """The images of a folder (class sub-folders, or flat) or of a list file.

    A list file has one image path per line (relative to the file's folder), optionally
    followed by a tab or a comma and a class label; blank lines and ``#`` comments are skipped.
    Class sub-folders (images searched recursively, classes in sorted order) and labelled list
    files give labels; flat folders and unlabelled lists do not.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return _from_folder(path.resolve())
    if path.is_file():
        return _from_list_file(path)
    raise DaalmlError(f"images {path}: no such folder or list file")
