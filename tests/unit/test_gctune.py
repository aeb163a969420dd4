"""The collector settings for long runs: raised thresholds, start-up objects frozen, restorable."""

from __future__ import annotations

import gc

from streams.gctune import THRESHOLDS, tuned_gc


def test_tuned_gc_raises_the_thresholds_freezes_start_up_and_restores() -> None:
    before = gc.get_threshold()
    assert before != THRESHOLDS
    with tuned_gc():
        assert gc.get_threshold() == THRESHOLDS
        assert gc.get_freeze_count() > 1000  # the modules and objects alive at the call
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
