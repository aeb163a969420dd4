"""Settlement: matching callbacks to transactions, delays, missing callbacks, bounded waiting,
and the settlement and signature-failure alerts firing and resolving once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.inputs import Callback, Transaction
from streams import metrics
from streams import signatures as sig
from streams.alert_windows import quantile
from streams.core import Out, Record
from streams.pipeline import internal_record
from streams.settings import Settings
from streams.settlement import (
    CallbacksStage,
    SettlementFeed,
    SettlementRules,
    SettlementStage,
    build_verifier,
    load_settlement_rules,
)
from streams.topics import Topics
from tests.unit.judging import judged

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
TOPICS = Topics()
FEED = SettlementFeed(TOPICS)


def rules(va_deadline_s: float = 7200, **alerts: Any) -> SettlementRules:
    data: dict[str, Any] = {
        "deadlines_s": {"default": 3600, "virtual_account": va_deadline_s, "card": None},
        "early_callbacks": {"max_waiting": 3, "max_wait_s": 600},
        "alerts": {
            "settlement_delay_high": {"p95_s": 14400, "window_s": 3600, "min_samples": 5},
            "callbacks_missing": {"threshold": 2, "window_s": 3600},
            "callback_signature_failures": {"threshold": 5, "window_s": 300},
        },
    }
    data["alerts"].update(alerts)
    return SettlementRules.model_validate(data)


def transaction(tx_id: str, at: datetime, *, channel: str = "MANDIRI", status: str = "pending",
                method: str = "virtual_account") -> Record:  # fmt: skip
    tx = Transaction.model_validate(
        {"transaction_id": tx_id, "merchant_id": "m-1", "customer_id": "c-1", "amount": "50000",
         "currency": "IDR", "method": method, "channel": channel, "status": status,
         "created_at": at.isoformat()}
    )  # fmt: skip
    [out] = FEED.observe([tx])
    return internal_record(out)


def callback(tx_id: str, settled: datetime, *, status: str = "settled",
             received: datetime | None = None, provider: str = "xendit") -> Record:  # fmt: skip
    value = {
        "kind": "callback", "provider": provider, "callback_id": f"cb-{tx_id}",
        "transaction_id": tx_id, "status": status, "provider_status": "PAID", "amount": "50000",
        "settled_at": settled.isoformat(), "received_at": (received or settled).isoformat(),
    }  # fmt: skip
    return internal_record(Out(TOPICS.settlement, tx_id, value))


def alerts(outs: list[Out]) -> list[tuple[str, str]]:
    return [(o.value["fingerprint"], o.value["status"]) for o in outs if o.topic == TOPICS.alerts]


def run(stage: SettlementStage | CallbacksStage, *records: Record) -> list[Out]:
    """Process and tick, the samples judged."""
    return judged(stage, stage.process(list(records)) + stage.tick())


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_delay_is_measured_per_channel_and_method() -> None:
    stage = SettlementStage(TOPICS, rules())
    labels = {"channel": "BRI", "method": "virtual_account"}
    before = sample("pantau_settlement_delay_seconds_sum", **labels)
    count = sample("pantau_settlement_delay_seconds_count", **labels)
    run(stage, transaction("t1", T0, channel="BRI"))
    assert "t1" in stage.awaiting
    run(stage, callback("t1", T0 + timedelta(minutes=25)))
    assert "t1" not in stage.awaiting
    assert sample("pantau_settlement_delay_seconds_sum", **labels) - before == 1500
    assert sample("pantau_settlement_delay_seconds_count", **labels) - count == 1
    # The same callback again (a redelivery past the dedupe) measures nothing more.
    run(stage, callback("t1", T0 + timedelta(minutes=25)))
    assert sample("pantau_settlement_delay_seconds_count", **labels) - count == 1


def test_a_callback_before_its_transaction_waits() -> None:
    stage = SettlementStage(TOPICS, rules())
    run(stage, callback("t2", T0 + timedelta(minutes=3)))
    assert "t2" in stage.early and not stage.awaiting
    run(stage, transaction("t2", T0))
    assert not stage.early and "t2" not in stage.awaiting and "t2" in stage.recent
    assert stage.delay_log.of("MANDIRI|virtual_account")[-1][1] == 180


def test_waiting_is_bounded_in_count_and_time() -> None:
    stage = SettlementStage(TOPICS, rules())
    unmatched = sample("pantau_callbacks_unmatched_total", provider="xendit")
    run(stage, *[callback(f"e{i}", T0 + timedelta(seconds=i)) for i in range(5)])
    assert list(stage.early) == ["e2", "e3", "e4"]  # the oldest went first
    assert sample("pantau_callbacks_unmatched_total", provider="xendit") - unmatched == 2
    # Ten minutes of event time later the rest are dropped too.
    run(stage, transaction("other", T0 + timedelta(minutes=12)))
    assert not stage.early
    assert sample("pantau_callbacks_unmatched_total", provider="xendit") - unmatched == 5
    # Their transactions arriving now wait for a new callback like any other.
    run(stage, transaction("e4", T0 + timedelta(minutes=12)))
    assert "e4" in stage.awaiting


def test_missing_callbacks_fire_and_resolve_once() -> None:
    stage = SettlementStage(TOPICS, rules())
    missing = sample("pantau_callbacks_missing_total", channel="OVO", method="ewallet")
    outs = run(
        stage, *[transaction(f"m{i}", T0, channel="OVO", method="ewallet") for i in range(3)]
    )
    # A failed attempt and a method without callbacks are not awaited.
    outs += run(stage, transaction("f1", T0, channel="OVO", method="ewallet", status="failed"))
    outs += run(stage, transaction("c1", T0, channel="VISA", method="card", status="success"))
    assert set(stage.awaiting) == {"m0", "m1", "m2"}
    assert alerts(outs) == []
    # One settles in time; the other two pass their 1 h deadline: 2 is not above the threshold.
    outs += run(stage, callback("m0", T0 + timedelta(minutes=5)))
    outs += run(stage, transaction("x", T0 + timedelta(hours=1, minutes=1), channel="BCA"))
    assert sample("pantau_callbacks_missing_total", channel="OVO", method="ewallet") - missing == 2
    assert alerts(outs) == []
    outs += run(stage, *[transaction(f"n{i}", T0 + timedelta(minutes=30), channel="OVO",
                                     method="ewallet") for i in range(2)])  # fmt: skip
    outs += run(stage, transaction("y", T0 + timedelta(hours=1, minutes=35), channel="BCA"))
    assert alerts(outs) == [("callbacks_missing/OVO", "firing")]
    # A callback arriving after its deadline still measures the (long) delay.
    run(stage, callback("m1", T0 + timedelta(hours=1, minutes=40)))
    assert stage.delay_log.of("OVO|ewallet")[-1][1] == 6000
    # An hour after the last deadline, the window is clear: resolved, once.
    for minutes in (150, 160, 170):
        outs += run(
            stage, transaction(f"z{minutes}", T0 + timedelta(minutes=minutes), channel="BCA")
        )
    assert alerts(outs) == [
        ("callbacks_missing/OVO", "firing"),
        ("callbacks_missing/OVO", "resolved"),
    ]


def test_settlement_delay_high_fires_and_resolves_once() -> None:
    stage = SettlementStage(TOPICS, rules(va_deadline_s=86400))
    outs: list[Out] = []
    # Normal: 20-minute settlements.
    for i in range(10):
        at = T0 + timedelta(minutes=i)
        outs += run(stage, transaction(f"a{i}", at), callback(f"a{i}", at + timedelta(minutes=20)))
    assert alerts(outs) == []
    # Late: five hours.
    for i in range(10):
        at = T0 + timedelta(minutes=30 + i)
        outs += run(stage, transaction(f"b{i}", at))
    for i in range(10):
        at = T0 + timedelta(minutes=30 + i)
        outs += run(stage, callback(f"b{i}", at + timedelta(hours=5)))
    assert alerts(outs) == [("settlement_delay_high/MANDIRI/virtual_account", "firing")]
    [firing] = [o.value for o in outs if o.topic == TOPICS.alerts]
    assert firing["value"] == 5 * 3600 and firing["threshold"] == 14400
    # Back to normal for over an hour: the slow ones leave the window.
    for i in range(12):
        at = T0 + timedelta(hours=6, minutes=10 * i)
        outs += run(stage, transaction(f"c{i}", at), callback(f"c{i}", at + timedelta(minutes=10)))
    assert alerts(outs) == [
        ("settlement_delay_high/MANDIRI/virtual_account", "firing"),
        ("settlement_delay_high/MANDIRI/virtual_account", "resolved"),
    ]


def test_a_waiting_callback_outlasts_callbacks_running_ahead_of_transactions() -> None:
    """Callbacks and transaction facts come by different paths; callbacks far ahead in event
    time (the payments stage busy or restarting) do not give up on one waiting for its
    transaction: only transactions past its wait do."""
    stage = SettlementStage(TOPICS, rules())
    run(stage, callback("w1", T0 + timedelta(minutes=1)))
    run(stage, *[callback(f"ahead{i}", T0 + timedelta(hours=3, seconds=i)) for i in range(2)])
    assert "w1" in stage.early
    sent = stage.process([transaction("w1", T0)])
    assert "w1" not in stage.early and stage.recent["w1"]["missed"] is False
    [delay] = [o.value for o in sent if o.value.get("alert") == "settlement_delay_high"]
    assert delay["samples"] == [[(T0 + timedelta(minutes=1)).timestamp(), 60, "w1"]]
    run(stage, callback("w2", T0 + timedelta(hours=3, minutes=1)))
    run(stage, transaction("late", T0 + timedelta(hours=3, minutes=20)))
    assert "w2" not in stage.early  # the transactions are past its wait: unmatched


def test_a_duplicate_callback_waits_once() -> None:
    """Midtrans' capture and settlement are one fact (same provider, transaction and status):
    should the callbacks stage's dedup memory let the second through (after a takeover), the
    transaction still waits with one."""
    first = callback("d2", T0 + timedelta(minutes=1))
    value = orjson.loads(first.value)
    second = Record(first.topic, orjson.dumps({**value, "callback_id": "cb-other"}), first.key)
    refund = callback("d2", T0 + timedelta(minutes=2), status="refunded")
    stage = SettlementStage(TOPICS, rules())
    run(stage, first, second, first, refund)
    assert [f["status"] for f in stage.early["d2"]["facts"]] == ["settled", "refunded"]


def test_refund_and_failure_are_final_without_a_delay() -> None:
    stage = SettlementStage(TOPICS, rules())
    run(stage, transaction("r1", T0), transaction("r2", T0))
    run(stage, callback("r1", T0 + timedelta(minutes=1), status="failed"))
    run(stage, callback("r2", T0 + timedelta(minutes=1), status="pending"))
    assert "r1" not in stage.awaiting and "r2" in stage.awaiting
    assert not stage.delay_log.of("MANDIRI|virtual_account")


def test_state_survives_a_restart() -> None:
    state: dict[str, Any] = {}
    stage = SettlementStage(TOPICS, rules(), state=state)
    run(stage, transaction("s1", T0, channel="DANA", method="ewallet"))
    state = orjson.loads(orjson.dumps(state))  # JSON-able, as a changelog would keep it
    again = SettlementStage(TOPICS, rules(), state=state)
    before = sample("pantau_callbacks_missing_total", channel="DANA", method="ewallet")
    run(again, transaction("late", T0 + timedelta(hours=2), channel="BCA"))
    assert sample("pantau_callbacks_missing_total", channel="DANA", method="ewallet") - before == 1


def test_quantile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert quantile(values, 0.95) == 95 and quantile(values, 0.5) == 50
    assert quantile([7.0], 0.95) == 7
    with pytest.raises(ValueError):
        quantile([], 0.5)


def test_shipped_rules_load() -> None:
    shipped = load_settlement_rules()
    assert shipped.alerts.settlement_delay_high.p95_s == 4 * 3600
    assert shipped.deadline_for("virtual_account") == timedelta(hours=4)
    assert shipped.deadline_for("something_new") == timedelta(hours=1)


def test_bad_rules_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "settlement.yaml"
    path.write_text("alerts:\n  callbacks_missing:\n    threshold: -1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"settlement\.yaml: alerts\.callbacks_missing\.threshold"):
        load_settlement_rules(path)


# ---- the callbacks stage's burst alert ---------------------------------------------------------


def _signed(i: int, at: datetime, secret: str) -> Record:
    body = {"transaction_id": f"trx-{i}", "status": "settled", "amount": "1000.00"}
    value = sig.build_callback(
        "generic", body, secret, callback_id=f"cb-{i}", received_at=at, source_ip="10.1.2.3"
    )
    Callback.model_validate(value)
    return Record(topic=TOPICS.callbacks, value=orjson.dumps(value), offset=i)


def test_signature_failure_burst_fires_and_resolves_once() -> None:
    verifier = build_verifier(Settings(callback_secrets={"generic": ["right"]}))
    stage = CallbacksStage(TOPICS, verifier, rules())
    outs: list[Out] = []
    before = sample(
        "pantau_callback_verification_failures_total",
        provider="generic",
        reason="signature_mismatch",
    )
    for i in range(4):
        outs += run(stage, _signed(i, T0 + timedelta(seconds=i), "wrong"))
    assert alerts(outs) == []
    outs += run(stage, _signed(4, T0 + timedelta(seconds=4), "wrong"))
    assert alerts(outs) == [("callback_signature_failures/generic", "firing")]
    # More forgeries change nothing; trusted callbacks flow meanwhile.
    for i in range(5, 20):
        outs += run(stage, _signed(i, T0 + timedelta(seconds=i), "wrong"))
    ok = stage.process([_signed(99, T0 + timedelta(seconds=30), "right")])
    assert [o.topic for o in ok if o.topic != TOPICS.alert_samples] == [TOPICS.settlement]
    assert sum(1 for o in outs if o.topic == TOPICS.deadletter) == 20
    assert (
        sample(
            "pantau_callback_verification_failures_total",
            provider="generic",
            reason="signature_mismatch",
        )
        - before
        == 20
    )
    # Five quiet minutes of event time later: resolved, once.
    for i in range(3):
        at = T0 + timedelta(minutes=6 + i)
        outs += run(stage, _signed(100 + i, at, "right"))
    assert alerts(outs) == [
        ("callback_signature_failures/generic", "firing"),
        ("callback_signature_failures/generic", "resolved"),
    ]


def test_a_redelivered_callback_sends_its_fact_again_and_a_duplicate_does_not() -> None:
    """The dedup memory names the record that carried a fact first: that record again (Kafka
    redelivering it after a crash, its state already logged) sends the same fact again; another
    record with the same fact is a duplicate. Live, it and the failure counts are kept per
    partition for the changelog."""
    verifier = build_verifier(Settings(callback_secrets={"generic": ["right"]}))
    stage = CallbacksStage(TOPICS, verifier, rules())
    durable = stage.journal_state()
    ok = _signed(1, T0, "right")
    first = Record(ok.topic, ok.value, ok.key, partition=3, offset=10)
    again = Record(ok.topic, ok.value, ok.key, partition=3, offset=10)
    other = Record(ok.topic, ok.value, ok.key, partition=3, offset=11)
    sent = [o for o in stage.process([first]) if o.topic == TOPICS.settlement]
    assert len(sent) == 1
    assert [o.value for o in stage.process([again])] == [sent[0].value]
    assert stage.process([other]) == []
    bad = _signed(2, T0, "wrong")
    stage.process([Record(bad.topic, bad.value, bad.key, partition=5, offset=0)])
    assert durable.changes() == {
        3: {"seen/generic|trx-1|settled": [T0.timestamp(), 3, 10]},
        5: {f"failures/5/generic@{int(T0.timestamp()) // 10}": [[T0.timestamp(), 1, "5/0"]]},
    }


def test_delay_runs_to_the_callback_not_the_providers_clock() -> None:
    stage = SettlementStage(TOPICS, rules())
    run(stage, transaction("d1", T0, channel="PERMATA"))
    # The provider says it settled after 5 minutes but only tells us five hours later.
    run(stage, callback("d1", T0 + timedelta(minutes=5), received=T0 + timedelta(hours=5)))
    assert stage.delay_log.of("PERMATA|virtual_account")[-1][1] == 5 * 3600


def test_a_failed_attempt_absorbs_its_callback_and_a_retry_is_awaited() -> None:
    stage = SettlementStage(TOPICS, rules())
    unmatched = sample("pantau_callbacks_unmatched_total", provider="xendit")
    run(stage, transaction("f2", T0, channel="OVO", method="ewallet", status="failed"))
    run(stage, callback("f2", T0 + timedelta(seconds=3), status="failed"))
    # Its own failure, or a retry's not read yet: it waits, awaiting nothing.
    assert "f2" in stage.early and "f2" not in stage.awaiting
    run(stage, transaction("f2", T0 + timedelta(minutes=1), channel="OVO", method="ewallet",
                           status="success"))  # fmt: skip
    assert "f2" in stage.awaiting and "f2" not in stage.early  # received before the retry
    run(stage, callback("f2", T0 + timedelta(minutes=1, seconds=4)))
    assert "f2" not in stage.awaiting and stage.delay_log.of("OVO|ewallet")[-1][1] == 4
    run(stage, transaction("later", T0 + timedelta(hours=2), channel="BCA"))
    assert sample("pantau_callbacks_unmatched_total", provider="xendit") == unmatched


@pytest.mark.parametrize("outcome", ["settled", "failed"])
@pytest.mark.parametrize("settled_at", [0, 1, 2])
def test_a_retrys_callback_counts_wherever_it_arrives(settled_at: int, outcome: str) -> None:
    """Transaction facts and callbacks reach pantau.settlement by different paths: the retry's
    callback (its settlement, or its expiry) may come before the failed attempt, between it and
    the retry, or after both. The state ends the same whichever."""
    failed = transaction("r9", T0, channel="OVO", method="ewallet", status="failed")
    retry = transaction("r9", T0 + timedelta(minutes=1), channel="OVO", method="ewallet",
                        status="pending")  # fmt: skip
    final = callback("r9", T0 + timedelta(minutes=1, seconds=4), status=outcome)
    order = [failed, retry]
    order.insert(settled_at, final)
    stage = SettlementStage(TOPICS, rules())
    for record in order:
        run(stage, record)
    assert not stage.early and not stage.awaiting
    assert stage.recent["r9"]["final_at"] == (T0 + timedelta(minutes=1, seconds=4)).timestamp()
    assert not stage.recent["r9"].get("failed")
    delays = [d for _, d, _ in stage.delay_log.of("OVO|ewallet")]
    assert delays == ([4] if outcome == "settled" else [])


def test_memory_is_bounded_in_count() -> None:
    data = rules().model_dump()
    data["duplicates"] = {"max_remembered": 3, "remember_s": 1e9}
    bounded = SettlementRules.model_validate(data)
    stage = SettlementStage(TOPICS, bounded)
    for i in range(6):
        at = T0 + timedelta(minutes=i)
        run(stage, transaction(f"b{i}", at), callback(f"b{i}", at + timedelta(seconds=5)))
    assert list(stage.recent) == ["b3", "b4", "b5"]  # the oldest are forgotten first
    verifier = build_verifier(Settings(callback_secrets={"generic": ["right"]}))
    callbacks = CallbacksStage(TOPICS, verifier, bounded)
    for i in range(6):
        callbacks.process([_signed(i, T0 + timedelta(seconds=i), "right")])
    assert len(callbacks.seen) == 3 and "generic|trx-5|settled" in callbacks.seen


def test_a_redelivered_transaction_keeps_one_timer() -> None:
    stage = SettlementStage(TOPICS, rules())
    for _ in range(3):
        run(stage, transaction("v1", T0))
    assert stage._deadlines == [(stage.awaiting["v1"]["deadline"], "v1")]
    run(stage, transaction("v1", T0 + timedelta(minutes=1)))  # a later attempt: a new deadline
    assert len(stage._deadlines) == 2 and len(stage.awaiting) == 1
