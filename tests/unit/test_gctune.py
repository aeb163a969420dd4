"""The collector settings for long runs: raised thresholds, start-up objects frozen, restorable."""

from __future__ import annotations

import gc

from streams.gctune import THRESHOLDS, tuned_gc


def test_tuned_gc_raises_the_thresholds_freezes_start_up_and_restores() -> None:
    # An in-process `pantau replay` (CliRunner) of another test may have tuned this process.
    saved = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    try:
        with tuned_gc():
            assert gc.get_threshold() == THRESHOLDS
            assert gc.get_freeze_count() > 1000  # the modules and objects alive at the call
        assert gc.get_threshold() == (700, 10, 10)
        assert gc.get_freeze_count() == 0
    finally:
        gc.set_threshold(*saved)
