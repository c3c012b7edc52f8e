"""Seconds per training epoch, read back from the log of a `daalml train` or `daalml benchmark`.

    daalml benchmark ... > run.log 2>&1
    python benchmarks/epoch_times.py run.log

A run's epoch time is the elapsed time its progress bar shows at the first ``n/n`` reading
of each epoch (the training steps, before validation adds to the bar). Prints the count,
minimum, quartiles and maximum over every epoch of every run in the log; asserts nothing.
Useful where a long benchmark shared the machine: the spread shows how much the load moved.
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

_FULL_BAR = re.compile(r"Epoch (\d+): 100%\|[^|]*\| (\d+)/\2 \[(?:(\d+):)?(\d+):(\d+)<")


def epoch_seconds(log: str) -> list[int]:
    """One figure per epoch: the first full-bar reading after the epoch number changes."""
    times: list[int] = []
    last: str | None = None
    for match in _FULL_BAR.finditer(log.replace("\r", "\n")):
        epoch = match.group(1)
        if epoch != last:
            hours, minutes, seconds = (int(g or 0) for g in match.group(3, 4, 5))
            times.append(3600 * hours + 60 * minutes + seconds)
        last = epoch
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    args = parser.parse_args()
    times = epoch_seconds(args.log.read_text(errors="replace"))
    if len(times) < 2:
        raise SystemExit(f"{args.log}: fewer than 2 finished epochs found in this log")
    q1, median, q3 = statistics.quantiles(times, n=4)
    print(
        f"{len(times)} epochs: min {min(times)} s, quartiles {q1:.0f} / {median:.0f} / {q3:.0f} s,"
        f" max {max(times)} s"
    )


if __name__ == "__main__":
    main()
