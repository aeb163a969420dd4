"""The demo's live view: what it counts and shows from the output topics (no broker needed)."""

from __future__ import annotations

import io

from rich.console import Console

from streams.demo import DemoView
from streams.topics import Topics

T = Topics()


def _view() -> DemoView:
    return DemoView(topics=T, broker_url="kafka://127.0.0.1:1", metrics_url="m", views_url="v")


def _text(view: DemoView) -> str:
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(view.render())
    return console.export_text()


def test_channels_count_attempts_failures_and_take_their_state_from_health() -> None:
    view = _view()
    for i in range(10):
        status = "failed" if i < 3 else "success"
        view.observe(T.enriched, {"channel": "BCA", "status": status, "latency_ms": 100 * (i + 1)})
    view.observe(T.health, {"channel": "BCA", "state": "degraded"})
    view.observe(T.failover, {"channel": "OVO", "state": "failed_over"})
    row = view.channels["BCA"]
    assert (row.attempts, row.failed, row.state) == (10, 3, "degraded")
    assert view.channels["OVO"].state == "failed_over"
    text = _text(view)
    assert "30.0%" in text and "1000 ms" in text and "failed_over" in text


def test_alerts_show_while_firing_and_leave_when_resolved() -> None:
    view = _view()
    firing = {
        "alert": "api_error_rate_high",
        "fingerprint": "api_error_rate_high/BCA",
        "status": "firing",
        "severity": "critical",
        "labels": {"channel": "BCA"},
        "value": 0.81,
        "threshold": 0.05,
        "started_at": "2026-11-21T03:00:00Z",
    }
    view.observe(T.alerts, firing)
    assert "api_error_rate_high" in _text(view)
    view.observe(T.alerts, {**firing, "status": "resolved"})
    assert view.alerts == {}
    assert "no alerts firing" in _text(view)
    assert view.counts[T.alerts] == 2


def test_decisions_dead_letters_and_the_summary() -> None:
    view = _view()
    view.produced = 5
    view.observe(
        T.decisions,
        {
            "transaction_id": "trx-1",
            "action": "review",
            "score": 71.5,
            "channel": "VISA",
            "reasons": ["8 card attempts in 10 min"],
        },
    )
    view.observe(T.deadletter, {"reason": "currency: only IDR is supported for now (got USD)"})
    view.observe(T.deadletter, b"not a dict")
    text = _text(view)
    assert "trx-1" in text and "review" in text and "8 card attempts" in text
    assert "currency: only IDR" in text
    summary = view.summary()
    assert "produced 5 inputs; saw 3 outputs" in summary
    assert "1 decisions" in summary and "2 dead letters" in summary
    assert view.first_output_s is not None


def test_the_view_fits_the_terminal_and_prefers_flagged_decisions() -> None:
    view = _view()
    for i in range(18):
        for _ in range(20 - i):
            view.observe(T.enriched, {"channel": f"CH{i:02d}", "status": "success"})
    for i in range(6):
        view.observe(T.decisions, {"transaction_id": f"trx-ok-{i}", "action": "approve"})
    view.observe(T.decisions, {"transaction_id": "trx-flag", "action": "decline", "score": 90})
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(view.render(height=30))
    text = console.export_text()
    assert len(text.splitlines()) <= 30
    assert "CH00" in text and "more channels" in text and "CH17" not in text
    assert "trx-flag" in text and "trx-ok-5" not in text
    assert "approve 6 · decline 1" in text
