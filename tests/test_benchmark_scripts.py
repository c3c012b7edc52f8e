"""The benchmark scripts still run (tiny sizes, CPU); their figures are never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_gpu_check_runs_on_cpu_with_a_tiny_model(tmp_path):
    out = tmp_path / "gpu.json"
    stdout = _run(
        "bench_gpu.py",
        "--device", "cpu", "--backbone", "small_cnn", "--batch", "8", "--image-size", "32",
        "--steps", "2", "--precisions", "32-true,bf16-mixed",
        "--loss-batch", "16", "--loss-classes", "10", "--loss-repeats", "3",
        "--json", str(out),
    )  # fmt: skip
    assert "| bf16-mixed | True |" in stdout
    payload = json.loads(out.read_text())
    assert payload["device"] == "CPU"
    assert [(r["precision"], r["channels_last"]) for r in payload["training"]] == [
        ("32-true", False),
        ("32-true", True),
        ("bf16-mixed", False),
        ("bf16-mixed", True),
    ]
    assert all(r["pipeline_images_per_s"] > 0 for r in payload["training"])
    assert payload["loss_table"][2].startswith("| 16 | 10 |")


def test_loss_benchmark_prints_one_row_per_size():
    stdout = _run("bench_loss.py", "--batch", "8,16", "--classes", "5", "--repeats", "3")
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and "ms" not in line]
    assert [row.split("|")[1:3] for row in rows] == [[" 8 ", " 5 "], [" 16 ", " 5 "]]


def test_epoch_times_reads_each_epoch_once_from_a_progress_bar_log(tmp_path):
    bar = "Epoch {e}: 100%|##########| 23/23 [{t}<00:00,  0.52it/s, v_num=0]"
    runs = [["00:15", "00:17"], ["00:09", "01:02", "1:00:05"]]  # two runs in one log
    lines = []
    for run in runs:
        for e, t in enumerate(run):
            lines += [f"Epoch {e}:  50%|#####| 12/23 [00:05<00:05]", bar.format(e=e, t=t)]
            lines.append(bar.format(e=e, t=t).replace(t, "00:59"))  # validation: same epoch
    log = tmp_path / "run.log"
    log.write_text("\r".join(lines))
    stdout = _run("epoch_times.py", str(log))
    assert stdout.startswith("5 epochs: min 9 s,") and stdout.rstrip().endswith("max 3605 s")


def test_metrics_benchmark_names_the_kernels_and_the_caps_that_emulate_an_older_cpu(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_metrics

    for name in bench_metrics.ISA_CAPS:
        monkeypatch.delenv(name, raising=False)
    assert bench_metrics.kernel_description().startswith("torch kernels ")
    assert "capped" not in bench_metrics.kernel_description()
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("NUMBA_CPU_NAME", "haswell")
    assert bench_metrics.kernel_description().endswith(
        "; capped by MKL_ENABLE_INSTRUCTIONS=AVX2, OPENBLAS_CORETYPE=Haswell, NUMBA_CPU_NAME=haswell"
    )


def test_metrics_benchmark_ratios_give_each_round_s_own_range(monkeypatch):
    """Median over median, and the spread of the ratios of times taken in the same round
    (not of the medians: a drifting machine moves both sides of a round)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_metrics

    assert bench_metrics.ratio_cell([1.0], [4.0]) == "0.25"
    assert bench_metrics.ratio_cell([1.0, 3.0, 2.0], [2.0, 4.0, 8.0]) == "0.50 (rounds 0.25-0.75)"


def test_floor_sample_benchmark_prints_one_row_per_fraction():
    stdout = _run(
        "bench_floor_sample.py", "--sizes", "5000", "--dim", "16", "--repeats", "1",
        "--fractions", "16,64",
    )  # fmt: skip
    rows = [line for line in stdout.splitlines() if line.startswith("| 5000 |")]
    assert [row.split("|")[3].strip() for row in rows] == ["16", "19"]  # 64 clamped: 5000 // 256
    assert all(row.rstrip().endswith("| True |") for row in rows)


def test_versions_benchmark_times_two_checkouts_in_turns_and_compares_results(tmp_path):
    src = BENCHMARKS.parent / "src"
    stdout = _run(
        "bench_versions.py", str(src), str(src), "--sizes", "1500", "--dim", "16",
        "--rounds", "2", "--calls", "1", "--what", "knn",
    )  # fmt: skip
    rows = [line.split("|") for line in stdout.splitlines() if line.startswith("| 1500 |")]
    assert [row[2].strip() for row in rows] == ["old", "new"]
    assert all(row[-2].strip() == "True" for row in rows)  # the same neighbours
    assert float(rows[1][6]) > 0  # new / old
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_versions.py"), str(tmp_path), str(src)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "not a src folder holding daalml/ (old)" in done.stderr
