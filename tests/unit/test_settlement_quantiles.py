"""Settlement delay quantiles from the sorted cache equal those of the state's own samples."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from models.inputs import Transaction
from streams import metrics
from streams.alerts import AlertTracker
from streams.core import Out, Record
from streams.pipeline import internal_record
from streams.settlement import (
    SettlementFeed,
    SettlementRules,
    SettlementStage,
    SortedDelays,
    quantile,
    sorted_quantile,
)
from streams.topics import Topics

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
TOPICS = Topics()
FEED = SettlementFeed(TOPICS)
KEYS = ("BRI|virtual_account", "OVO|ewallet")

# Operations on one key's samples: append a delay, cut n samples from the front, read.
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(KEYS), st.integers(0, 40).map(float)),
        st.tuples(st.just("cut"), st.sampled_from(KEYS), st.integers(0, 5)),
        st.tuples(st.just("read"), st.sampled_from(KEYS), st.just(0)),
        st.tuples(st.just("restore"), st.sampled_from(KEYS), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_sorted_delays_follow_the_samples(ops: list[tuple[str, str, Any]]) -> None:
    cache = SortedDelays()
    state: dict[str, list[list[float]]] = {}
    for i, (op, key, arg) in enumerate(ops):
        samples = state.setdefault(key, [])
        cached = key in cache.sorted
        if op == "add":
            samples.append([float(i), arg])
            cache.added(key, arg, samples)
        elif op == "cut":
            cache.cut(key, samples[:arg])
            state[key] = samples[arg:]
        elif op == "restore":  # a sample added behind the cache's back: it notices
            state[key] = [*samples, [float(i), 7.0]]
        expected = sorted(s[1] for s in state[key])
        if cached and op != "restore" and state[key]:  # kept up to date, not rebuilt
            assert cache.sorted[key] == expected
        assert cache.of(key, state[key]) == expected


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


def test_stage_quantiles_and_alerts_match_the_window_as_stored() -> None:
    """Three hours of settlements with delays rising past the threshold and falling back: after
    every tick the p95 gauge is the nearest rank of the samples the state holds, and the stage
    restarted from its JSON state halfway carries on with the same quantiles and alerts."""
    rules = SettlementRules.model_validate(
        {"alerts": {"settlement_delay_high": {"p95_s": 1800, "window_s": 900, "min_samples": 5}}}
    )
    rng = random.Random(11)
    state: dict[str, Any] = {}
    firing: dict[str, Any] = {}
    stage = SettlementStage(TOPICS, rules, state=state, alerts=AlertTracker(TOPICS.alerts, firing))
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
        stage.process(batch)
        outs = stage.tick()
        fired += [(o.value["fingerprint"], o.value["status"]) for o in outs]
        for channel in ("BRI", "PERMATA"):
            samples = stage.delays.get(f"{channel}|virtual_account")
            if samples:
                assert _p95(channel) == quantile([s[1] for s in samples], 0.95)
        if minute == 90:  # a restart from the changelogged state: the cache starts empty
            state = orjson.loads(orjson.dumps(state))
            tracker = AlertTracker(TOPICS.alerts, orjson.loads(orjson.dumps(firing)))
            restarted = SettlementStage(TOPICS, rules, state=state, alerts=tracker)
            restarted.clock = stage.clock
            restarted._next_evaluation = stage._next_evaluation
            stage = restarted
    for channel in ("BRI", "PERMATA"):
        fingerprint = f"settlement_delay_high/{channel}/virtual_account"
        assert fired.count((fingerprint, "firing")) == 1
        assert fired.count((fingerprint, "resolved")) == 1
