"""Two checkouts of daalml timed against each other, in alternating processes.

    python benchmarks/bench_versions.py OLD_SRC NEW_SRC [--sizes 20000] [--rounds 6]
        [--calls 3] [--what full|knn] [--dim 512] [--per-class 50]

OLD_SRC and NEW_SRC are the ``src`` folders of two checkouts (``git worktree add ../old REV``
makes one). A shared 2-core machine drifts by 5-10% between runs minutes apart, more than
a change of a few percent: each round runs one process per checkout, in turns (the order
flips every round), and each process times ``--calls`` calls after a warm-up on 4096
points, on the benchmarks' clustered unit vectors (``bench_data.py``): ``retrieval_metrics`` (``full``) or the
leave-one-out ``knn`` for the largest class's k (``knn``; its scores and indices compared
by a hash). Prints each checkout's commit,
the median and range of all its calls and the ratio new / old, and checks that both gave
the same results. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = """
import hashlib, json, sys, time
import numpy as np, torch
from bench_data import clustered
from daalml.metrics import knn, retrieval_metrics
n, dim, per_class, calls, what = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

def run(x, y):
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    if what == "full":
        out = retrieval_metrics(xt, yt)
        return {key: out[key] for key in sorted(out) if isinstance(out[key], float | int)}
    k = int(np.bincount(y).max()) - 1
    scores, indices = knn(xt, xt, k, exclude_self=True)
    return hashlib.sha256(scores.numpy().tobytes() + indices.numpy().tobytes()).hexdigest()

run(*clustered(4096, dim, per_class, 1))
x, y = clustered(n, dim, per_class, 0)
times = []
for _ in range(calls):
    start = time.perf_counter()
    result = run(x, y)
    times.append(time.perf_counter() - start)
print(json.dumps({"times": times, "result": result}))
"""


def commit_of(src: Path) -> str:
    """The short commit of the checkout that holds ``src``, "-dirty" if it has uncommitted
    changes (or "?" outside git)."""
    done = subprocess.run(
        ["git", "-C", str(src), "describe", "--always", "--dirty"], capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "?"


def one_process(src: Path, n: int, args: argparse.Namespace) -> dict:
    """One child process importing daalml from ``src``: its call times and result."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(HERE)])}
    argv = [str(n), str(args.dim), str(args.per_class), str(args.calls), args.what]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], env=env, capture_output=True, text=True
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        sys.exit(f"{src}: the timed process failed:\n{done.stderr.strip()}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old_src", type=Path)
    parser.add_argument("new_src", type=Path)
    parser.add_argument("--sizes", default="20000")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--what", choices=("full", "knn"), default="full")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--per-class", type=int, default=50)
    args = parser.parse_args()
    trees = {"old": args.old_src.resolve(), "new": args.new_src.resolve()}
    for name, src in trees.items():
        if not (src / "daalml" / "__init__.py").is_file():
            sys.exit(f"{src}: not a src folder holding daalml/ ({name})")
    print(f"{args.what}: {args.rounds} rounds of one process per checkout, in turns, "
          f"{args.calls} calls each")
    print("\n| N | checkout | commit | s (median of all calls) | range | new / old | same results |")
    print("|---:|---|---|---:|---|---:|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        times: dict[str, list[float]] = {name: [] for name in trees}
        results: dict[str, object] = {}
        for r in range(args.rounds):
            for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
                out = one_process(trees[name], n, args)
                times[name] += out["times"]
                results[name] = out["result"]
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        same = results["old"] == results["new"]
        for name, src in trees.items():
            ratio = f"{medians['new'] / medians['old']:.3f}" if name == "new" else ""
            print(f"| {n} | {name} | {commit_of(src)} | {medians[name]:.3f} |"
                  f" {min(times[name]):.2f}-{max(times[name]):.2f} | {ratio} | {same} |")


if __name__ == "__main__":
    main()
