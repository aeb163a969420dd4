"""Test helper: a sending stage's alert samples judged as the alert-windows stage would."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from streams.alert_windows import WindowedAlerts
from streams.core import Out
from streams.pipeline import internal_record

_JUDGES: weakref.WeakKeyDictionary[Any, WindowedAlerts] = weakref.WeakKeyDictionary()


def judge_of(stage: Any) -> WindowedAlerts:
    """The judge of a sending stage's samples (one per stage, made on first use)."""
    judge = _JUDGES.get(stage)
    if judge is None:
        judge = _JUDGES[stage] = WindowedAlerts(
            stage.topics, stage.rules.alerts, lateness=stage.clock.lateness
        )
    return judge


def judged(stage: Any, outs: Sequence[Out], judge: WindowedAlerts | None = None) -> list[Out]:
    """The stage's outputs with its samples replaced by what the judge (the stage's own unless
    given) sends for them, judged as at the end of a replay."""
    topic = stage.topics.alert_samples
    judge = judge or judge_of(stage)
    kept = [o for o in outs if o.topic != topic]
    samples = [internal_record(o) for o in outs if o.topic == topic]
    # The judge waits for a later message to judge a moment; here, the batch is the moment.
    return kept + (judge.process(samples) if samples else []) + judge.close()
