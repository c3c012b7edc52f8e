"""How far the workers of a pipelined tiled search have swept and how many blocks its main
thread has finished (:mod:`daalml.evaluation.knn_heaps`), so that each thread waits only for
what it is about to read or reuse, never for a whole sweep to end."""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable

__all__ = ["Stopped", "SweepProgress"]

_OPEN: weakref.WeakSet[SweepProgress] = weakref.WeakSet()
"""The searches whose workers run: stopped and joined at the interpreter's exit."""


class Stopped(Exception):
    """A worker's wait ended by :meth:`SweepProgress.stop`."""


class SweepProgress:
    """How far each worker has swept and this thread has finished blocks, so that each waits
    only for what it reads: a worker for the block whose per-worker buffers it is about to
    reuse, this thread for every worker to be past the sweep of the block it finishes.
    :meth:`stop` ends every wait; a worker's failure stops the search and is raised here."""

    def __init__(self, workers: int) -> None:
        self._change = threading.Condition()
        self._swept = [0] * workers
        self._finished = 0
        self._stopped = False
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []

    def start(self, fn: Callable[[int], None], name: str) -> None:
        """Run ``fn(w)`` for each worker w in a thread of its own (see :meth:`run`).

        Daemon threads, stopped and joined by :meth:`close` or, for a search left open in a
        variable that lives until the interpreter exits, by an ``atexit`` hook: the exit
        joins non-daemon threads first, which would wait forever for blocks that no one
        finishes, and daemon threads still running C++ code when the interpreter is torn
        down can abort the process."""
        self._threads = [
            threading.Thread(target=self.run, args=(fn, w), name=f"{name}-{w}", daemon=True)
            for w in range(len(self._swept))
        ]
        _OPEN.add(self)
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Stop the workers and wait for them to leave (each ends its current part first)."""
        self.stop()
        for thread in self._threads:
            thread.join()
        _OPEN.discard(self)

    def run(self, fn: Callable[[int], None], w: int) -> None:
        """``fn(w)``, a worker's sweeps: ended early by :meth:`stop`; its failure stops the
        search and is raised by :meth:`wait_swept`."""
        try:
            fn(w)
        except Stopped:
            return
        except BaseException as error:
            with self._change:
                self._error = self._error or error
            self.stop()

    def swept(self, w: int, sweeps: int) -> None:
        with self._change:
            self._swept[w] = sweeps
            self._change.notify_all()

    def finished(self, blocks: int) -> None:
        with self._change:
            self._finished = blocks
            self._change.notify_all()

    def wait_finished(self, blocks: int) -> None:
        """Until ``blocks`` blocks are finished; :class:`Stopped` once stopped."""
        with self._change:
            self._change.wait_for(lambda: self._finished >= blocks or self._stopped)
            if self._stopped:
                raise Stopped

    def wait_swept(self, sweeps: int) -> None:
        """Until every worker is past ``sweeps`` sweeps; raises a worker's failure."""
        with self._change:
            self._change.wait_for(lambda: min(self._swept) >= sweeps or self._stopped)
            if self._error is not None:
                raise self._error
            if min(self._swept) < sweeps:
                raise RuntimeError("the tiled search was stopped")

    def stop(self) -> None:
        with self._change:
            self._stopped = True
            self._change.notify_all()


@atexit.register
def _close_open_searches() -> None:
    for progress in list(_OPEN):
        progress.close()
