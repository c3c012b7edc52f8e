"""Configs shipped inside the package (``daalml/configs/*.yaml``), addressable by name.

``daalml train cub200_vgg19_daal`` works from any directory once daalml is installed: a config
argument that is not an existing file, has no directory part and no ``.yaml``/``.yml`` suffix is
looked up among the shipped configs. A real file always wins. The repository's top-level
``configs/`` is a link to the same folder, so ``configs/NAME.yaml`` paths keep working there.
"""

from __future__ import annotations

from pathlib import Path

from daalml.errors import DaalmlError

__all__ = ["CONFIG_DIR", "resolve_config", "shipped_config", "shipped_configs"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
_SUFFIXES = (".yaml", ".yml")


def _description(path: Path) -> str:
    """The config's first comment line: its one-line description ('' when it has none)."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            text = line.strip()
            if text.startswith("#"):
                return text.lstrip("#").strip()
            if text:
                return ""
    return ""


def shipped_configs() -> dict[str, str]:
    """Name -> one-line description of every shipped config, sorted by name."""
    return {p.stem: _description(p) for p in sorted(CONFIG_DIR.glob("*.yaml"))}


def _is_bare_name(text: str) -> bool:
    path = Path(text)
    return len(path.parts) == 1 and path.suffix.lower() not in _SUFFIXES


def resolve_config(config: str | Path) -> Path:
    """The YAML file ``config`` means: an existing path as given, else a shipped config's file.

    A bare name (no directory, no .yaml) that is neither a file nor a shipped config raises a
    one-line DaalmlError listing the shipped names; a missing path is left to the YAML reader.
    """
    path = Path(config)
    if path.exists() or not _is_bare_name(str(config)):
        return path
    return shipped_config(str(config), not_a_file=True)


def shipped_config(name: str, *, not_a_file: bool = False) -> Path:
    """The file of the shipped config ``name``; a one-line DaalmlError listing them if none."""
    path = CONFIG_DIR / f"{name}.yaml"
    if _is_bare_name(name) and path.is_file():
        return path
    names = ", ".join(shipped_configs()) or "none"
    what = "no such file and no shipped config" if not_a_file else "no shipped config"
    raise DaalmlError(f"config {name!r}: {what} of that name (shipped: {names})")
