"""Garbage-collector settings for long runs that hold much state (workers, replays)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Python collects its youngest generation every 700 new container objects and, every 100 of
# those, walks every tracked object: with feature state of many small dicts and lists that full
# walk took a quarter of a replay. State and startup objects live for the run; collections of
# what a batch leaves behind are still frequent enough at these thresholds.
THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Raise the collection thresholds, and move everything alive now (modules, the model, the
    rule pack) out of the collector's sight: call once, after start-up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


@contextmanager
def tuned_gc() -> Iterator[None]:
    """`tune_gc` for a block (benchmarks), then the collector as it was."""
    before = gc.get_threshold()
    tune_gc()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
