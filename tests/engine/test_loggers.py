"""The progress bar closes its bars when training fails (through Lightning's public properties)."""

from __future__ import annotations

from types import SimpleNamespace

from daalml.engine.loggers import ProgressBar


class _Bar(SimpleNamespace):
    def close(self) -> None:
        self.closed = True


def test_a_failed_run_closes_the_bars_it_has_and_skips_the_missing_ones() -> None:
    progress = ProgressBar(leave=True)
    progress.on_exception(None, None, RuntimeError("boom"))  # type: ignore[arg-type]  # no bars yet
    shown, hidden = _Bar(disable=False, closed=False), _Bar(disable=True, closed=False)
    progress.train_progress_bar = shown  # type: ignore[assignment]
    progress.val_progress_bar = hidden  # type: ignore[assignment]
    progress.on_exception(None, None, RuntimeError("boom"))  # type: ignore[arg-type]
    assert shown.closed and not hidden.closed
