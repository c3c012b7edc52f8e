"""SweepProgress on its own: the waits of the pipelined tiled search, its stop and its errors
(the search's use of it is tested in test_knn_backends.py)."""

from __future__ import annotations

import threading

import pytest

from daalml.evaluation.sweep_progress import _OPEN, Stopped, SweepProgress

pytestmark = pytest.mark.timeout(60)


def test_wait_swept_returns_once_every_worker_is_past_the_sweep() -> None:
    progress = SweepProgress(2)
    progress.swept(0, 3)
    returned = threading.Event()

    def waiter() -> None:
        progress.wait_swept(2)
        returned.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert not returned.wait(0.2)  # worker 1 has swept nothing yet
    progress.swept(1, 1)
    assert not returned.wait(0.2)  # worker 1 is past sweep 1 only
    progress.swept(1, 2)
    assert returned.wait(10)
    thread.join()


def test_wait_finished_returns_at_the_block_and_raises_stopped_after_stop() -> None:
    progress = SweepProgress(1)
    progress.wait_finished(0)  # nothing to wait for
    progress.finished(2)
    progress.wait_finished(2)
    outcome: list[str] = []

    def waiter() -> None:
        try:
            progress.wait_finished(3)
            outcome.append("returned")
        except Stopped:
            outcome.append("stopped")

    thread = threading.Thread(target=waiter)
    thread.start()
    thread.join(0.2)
    assert thread.is_alive()
    progress.stop()
    thread.join(10)
    assert outcome == ["stopped"]


def test_wait_swept_after_a_stop_raises_rather_than_returning_short() -> None:
    progress = SweepProgress(2)
    progress.swept(0, 1)
    progress.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        progress.wait_swept(1)
    progress.swept(1, 1)
    progress.wait_swept(1)  # every worker past it: stopped or not, nothing is missing


def test_a_worker_failure_stops_the_others_and_is_raised_to_the_waiter() -> None:
    progress = SweepProgress(2)
    others: list[str] = []

    def work(w: int) -> None:
        if w == 0:
            raise ValueError("tile 3 failed")
        try:
            progress.wait_finished(1)  # never finished: only the stop ends it
        except Stopped:
            others.append("stopped")
            raise

    progress.start(work, "daalml-test-sweeps")
    with pytest.raises(ValueError, match="tile 3 failed"):
        progress.wait_swept(1)
    progress.close()
    assert others == ["stopped"]


def test_start_runs_named_daemon_threads_and_close_joins_them() -> None:
    progress = SweepProgress(3)
    seen: dict[int, tuple[str, bool]] = {}
    release = threading.Event()

    def work(w: int) -> None:
        thread = threading.current_thread()
        seen[w] = (thread.name, thread.daemon)
        release.wait(10)
        progress.swept(w, 1)

    progress.start(work, "daalml-test-sweeps")
    assert progress in _OPEN
    release.set()
    progress.wait_swept(1)
    progress.close()
    assert seen == {w: (f"daalml-test-sweeps-{w}", True) for w in range(3)}
    assert progress not in _OPEN
    assert not any(t.name.startswith("daalml-test-sweeps") for t in threading.enumerate())
