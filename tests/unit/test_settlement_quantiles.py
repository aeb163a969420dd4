"""Settlement delay quantiles: the judge's sorted window equals its samples', each counted once."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from models.inputs import Transaction
from streams import metrics
from streams.alert_windows import _Subject, quantile, sorted_quantile
from streams.core import Out, Record
from streams.pipeline import internal_record
from streams.settlement import SettlementFeed, SettlementRules, SettlementStage
from streams.topics import Topics
from tests.unit.judging import judge_of, judged

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
TOPICS = Topics()
FEED = SettlementFeed(TOPICS)

# Operations on one subject's window: add a sample (time, delay, id from a small set, so ids
# repeat), or move the window's start forward.
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 60), st.integers(0, 40), st.integers(0, 15)),
        st.tuples(st.just("expire"), st.integers(0, 60), st.just(0), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_a_subjects_window_is_its_samples_counted_once(
    ops: list[tuple[str, int, int, int]],
) -> None:
    subject = _Subject("settlement_delay_high", {"channel": "BRI", "method": "virtual_account"})
    kept: dict[str, tuple[float, float]] = {}  # id → (time, delay): the model
    start = -1.0
    for op, at, delay, ident in ops:
        if op == "add" and at > start:
            added = subject.add(float(at), float(delay), f"t{ident}")
            assert added == (f"t{ident}" not in kept)
            kept.setdefault(f"t{ident}", (float(at), float(delay)))
        elif op == "expire":
            start = max(start, float(at))
            subject.expire(start)
            kept = {k: v for k, v in kept.items() if v[0] > start}
        assert subject.ids == set(kept)
        assert subject.values == sorted(v[1] for v in kept.values())


def test_sorted_quantile_is_the_nearest_rank_of_unsorted_values() -> None:
    rng = random.Random(3)
    for n in (1, 2, 19, 20, 21, 100, 1001):
        values = [float(rng.randrange(0, 50_000)) for _ in range(n)]
        for q in (0.5, 0.95, 0.99):
            assert sorted_quantile(sorted(values), q) == quantile(values, q)


def _transaction(tx_id: str, at: datetime, channel: str) -> Record:
    tx = Transaction.model_validate(
        {"transaction_id": tx_id, "merchant_id": "m-1", "customer_id": "c-1", "amount": "50000",
         "currency": "IDR", "method": "virtual_account", "channel": channel,
         "status": "pending", "created_at": at.isoformat()}
    )  # fmt: skip
    [out] = FEED.observe([tx])
    return internal_record(out)


def _callback(tx_id: str, at: datetime) -> Record:
    value = {
        "kind": "callback", "provider": "xendit", "callback_id": f"cb-{tx_id}",
        "transaction_id": tx_id, "status": "settled", "provider_status": "PAID",
        "amount": "50000", "settled_at": at.isoformat(), "received_at": at.isoformat(),
    }  # fmt: skip
    return internal_record(Out(TOPICS.settlement, tx_id, value))


def _p95(channel: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(
        "pantau_settlement_delay_quantile_seconds",
        {"channel": channel, "method": "virtual_account", "quantile": "0.95"},
    )


def test_judged_quantiles_and_alerts_match_the_samples_sent() -> None:
    """Three hours of settlements with delays rising past the threshold and falling back: after
    every batch the p95 gauge is the nearest rank of the samples sent within the window, and the
    stage restarted from its JSON state halfway, sending its window again, counts nothing twice:
    each alert fires and resolves once."""
    rules = SettlementRules.model_validate(
        {"alerts": {"settlement_delay_high": {"p95_s": 1800, "window_s": 900, "min_samples": 5}}}
    )
    rng = random.Random(11)
    state: dict[str, Any] = {}
    stage = SettlementStage(TOPICS, rules, state=state)
    judge = judge_of(stage)
    sent: dict[str, tuple[str, float, float]] = {}  # tx id → channel, settled, delay
    fired: list[tuple[str, str]] = []
    for minute in range(180):
        at = T0 + timedelta(minutes=minute)
        slow = 60 <= minute < 100
        batch = []
        for j in range(rng.randrange(1, 4)):
            channel = ("BRI", "PERMATA")[j % 2]
            tx_id = f"t{minute}-{j}"
            delay = rng.randrange(2000, 4000) if slow else rng.randrange(10, 900)
            created = at - timedelta(seconds=delay)
            batch += [_transaction(tx_id, created, channel), _callback(tx_id, at)]
            sent[tx_id] = (channel, at.timestamp(), float(delay))
        outs = judged(stage, stage.process(batch) + stage.tick(), judge)
        fired += [(o.value["fingerprint"], o.value["status"]) for o in outs]
        start = judge.clock.watermark.timestamp() - 900
        for channel in ("BRI", "PERMATA"):
            window = [d for c, t, d in sent.values() if c == channel and t > start]
            if window:
                assert _p95(channel) == quantile(window, 0.95)
        if minute == 90:  # a restart from the changelogged state: its window is sent again
            state = orjson.loads(orjson.dumps(state))
            restarted = SettlementStage(TOPICS, rules, state=state)
            restarted.clock = stage.clock
            restarted.delay_log.resend(None)
            assert restarted.delay_log.pending
            stage = restarted  # the same judge goes on
    for channel in ("BRI", "PERMATA"):
        fingerprint = f"settlement_delay_high/{channel}/virtual_account"
        assert fired.count((fingerprint, "firing")) == 1
        assert fired.count((fingerprint, "resolved")) == 1
