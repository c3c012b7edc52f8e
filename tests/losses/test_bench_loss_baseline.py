"""bench_loss.py --baseline-src: another tree's DAALLoss timed in the same turns (tiny sizes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_loss.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_baseline_columns_against_this_very_tree():
    done = _run(
        "--batch", "8", "--classes", "5", "--dim", "8", "--repeats", "3",
        "--baseline-src", str(ROOT / "src"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert table[0].endswith("| baseline DAAL ms | DAAL / baseline |")
    assert table[2].startswith("| 8 | 5 |") and len(table[2].split("|")) == 13


def test_baseline_without_a_package_is_an_error(tmp_path):
    done = _run("--batch", "8", "--classes", "5", "--dim", "8", "--baseline-src", str(tmp_path))
    assert done.returncode != 0
    assert f"--baseline-src {tmp_path}" in done.stderr
