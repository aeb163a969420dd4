"""The alert tracker: one message per status change, and the firing gauge for every alert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streams import metrics
from streams.alerts import AlertTracker

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


def firing_gauge(name: str) -> float:
    value = metrics.REGISTRY.get_sample_value("pantau_alerts_firing", {"alert": name})
    assert value is not None, f"no series for {name}"
    return value


def test_once_per_change_with_stable_fingerprint() -> None:
    tracker = AlertTracker("ops.alerts", names=("t_low_balance",))
    assert firing_gauge("t_low_balance") == 0
    labels = {"merchant": "m-1"}
    first = tracker.update("t_low_balance", labels, True, at=T0, value=9e6, threshold=1e7)
    assert [o.value["status"] for o in first] == ["firing"]
    assert first[0].key == "t_low_balance/m-1" == first[0].value["fingerprint"]
    assert tracker.update("t_low_balance", labels, True, at=T0 + timedelta(minutes=1)) == []
    assert firing_gauge("t_low_balance") == 1
    other = tracker.update("t_low_balance", {"merchant": "m-2"}, True, at=T0)
    assert len(other) == 1 and firing_gauge("t_low_balance") == 2
    resolved = tracker.update(
        "t_low_balance", labels, False, at=T0 + timedelta(minutes=5), value=2e7
    )
    assert len(resolved) == 1
    r = resolved[0].value
    assert r["status"] == "resolved" and r["started_at"] == "2026-11-21T03:00:00.000Z"
    assert r["at"] == "2026-11-21T03:05:00.000Z" and r["value"] == 2e7
    assert firing_gauge("t_low_balance") == 1
    assert tracker.update("t_low_balance", labels, False, at=T0) == []


def test_restored_state_counts_as_firing() -> None:
    first = AlertTracker("ops.alerts")
    first.update("t_restored", {"channel": "BCA"}, True, at=T0)
    before = firing_gauge("t_restored")
    AlertTracker("ops.alerts", state=dict(first.state))
    assert firing_gauge("t_restored") == before + 1
