"""run.json: what reproduces a run (seed, config, versions, git state, machine), kept on resume."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from daalml.config import Config


def package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _git(*args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None


def _git_state() -> tuple[str | None, bool | None]:
    """(commit, uncommitted changes?) of the daalml source tree, when it is a git checkout.

    An installed copy inside some other repository (a venv in a project) reports None: the
    package's own file must be tracked by the repository found.
    """
    tracked = _git("ls-files", "--error-unmatch", Path(__file__).name)
    if tracked is None or tracked.returncode != 0:
        return None, None
    head = _git("rev-parse", "HEAD")
    commit = head.stdout.strip() if head is not None and head.returncode == 0 else ""
    if not commit:
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    dirty = bool(status.stdout.strip()) if status is not None and status.returncode == 0 else None
    return commit, dirty


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_info(cfg: Config) -> dict[str, Any]:
    """What reproduces a run: seed, resolved config, package versions, git commit, machine."""
    packages = ["daalml", "torch", "torchvision", "lightning", "pytorch-metric-learning", "numpy"]
    commit, dirty = _git_state()
    return {
        "seed": cfg.train.seed,
        "deterministic": cfg.train.deterministic,
        "config": cfg.to_dict(),
        "versions": {name: package_version(name) for name in packages},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "git_dirty": dirty,
        "command": list(sys.argv),
        "started": _now(),
    }


def record_run(path: Path, cfg: Config, resumed_at: tuple[int, int] | None) -> None:
    """Write run.json; a resume keeps the first record and appends its own to ``resumes``."""
    info = run_info(cfg)
    if resumed_at is not None:
        try:
            first = json.loads(path.read_text())
        except (OSError, ValueError):
            first = None
        if isinstance(first, dict):
            epoch, batches = resumed_at
            entry = {"epoch": epoch, "batches_done": batches, **info}
            first["resumes"] = [*first.get("resumes", []), entry]
            info = first
    write_json(path, info)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically: a reader sees the old file or the new one, whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
