"""Health snapshots built as JSON equal the contract's own dump, byte for byte, and the gauges
follow the snapshots."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from models.common import iso_utc
from models.inputs import Transaction
from models.outputs import ChannelHealth, ChannelState
from rules.failover import MachineState, Observation
from streams import metrics
from streams.health import (
    NBINS,
    NCOUNTS,
    RING,
    HealthObserver,
    HealthStage,
    _dt,
    _Eval,
    _machine_dict,
    _snapshot,
    _window,
    window_stats,
)
from streams.pipeline import internal_record
from streams.settings import Settings

TOPICS = Settings().topics
START = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)

COUNTS = st.lists(st.integers(0, 3_000), min_size=NCOUNTS, max_size=NCOUNTS)
BINS = st.lists(st.one_of(st.just(0), st.integers(0, 40)), min_size=NBINS, max_size=NBINS)


def _row(counts: list[int], bins: list[int]) -> np.ndarray:
    return np.asarray(counts + bins, dtype=np.int64)


@settings(max_examples=400, deadline=None)
@given(COUNTS, BINS)
def test_window_json_is_the_contracts_dump(counts: list[int], bins: list[int]) -> None:
    row = _row(counts, bins)
    got = _window(row)
    expected = window_stats(row)
    assert orjson.dumps(got.json) == orjson.dumps(expected.model_dump(mode="json"))
    assert got.attempts == expected.attempts
    assert got.provider_errors == expected.provider_errors
    assert got.provider_error_rate == expected.provider_error_rate
    assert got.decline_rate == expected.decline_rate
    assert got.latency_p50_ms == expected.latency_p50_ms
    assert got.latency_p95_ms == expected.latency_p95_ms
    assert got.latency_p99_ms == expected.latency_p99_ms


STATES = st.sampled_from([s.value for s in ChannelState])
TIMES = st.integers(1_700_000_000_000, 1_900_000_000_000)  # ms


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["BCA", "OVO", "X-NEW"]),
    st.one_of(st.none(), st.sampled_from(["virtual_account", "ewallet"])),
    STATES,
    st.one_of(TIMES.map(lambda ms: ms / 1000), st.floats(1.7e9, 1.9e9)),
    TIMES.map(lambda ms: ms - ms % 10_000),
    st.integers(0, 500),
    st.lists(st.tuples(COUNTS, BINS), min_size=1, max_size=6),
)
def test_snapshot_json_is_the_contracts_dump(
    channel: str,
    method: str | None,
    state: str,
    since: float,
    boundary: int,
    consecutive: int,
    rows: list[tuple[list[int], list[int]]],
) -> None:
    names = ["1m", "5m", "1h", "ewallet/1m", "ewallet/5m", "ewallet/1h"][: len(rows)]
    windows = {n: _window(_row(*r)) for n, r in zip(names, rows, strict=True)}
    obs = Observation(at=boundary / 1000, consecutive_failures=consecutive)
    ev = _Eval(channel, method, windows, obs)
    at = _dt(boundary)
    got = _snapshot(ev, state, since, iso_utc(at), {n: w.json for n, w in windows.items()})
    expected = ChannelHealth(
        channel=channel,
        method=method,
        state=ChannelState(state),
        since=_dt(since * 1000),
        consecutive_provider_failures=consecutive,
        windows={n: window_stats(_row(*r)) for n, r in zip(names, rows, strict=True)},
        at=at,
    )
    assert orjson.dumps(got) == orjson.dumps(expected.model_dump(mode="json"))


@settings(max_examples=200, deadline=None)
@given(
    st.builds(
        MachineState,
        state=STATES,
        since=st.floats(0, 2e9),
        incident_since=st.one_of(st.none(), st.floats(0, 2e9)),
        latency_breach_since=st.one_of(st.none(), st.floats(0, 2e9)),
        failed_over_at=st.one_of(st.none(), st.floats(0, 2e9)),
        restored_at=st.one_of(st.none(), st.floats(0, 2e9)),
        cooldown_s=st.one_of(st.none(), st.floats(1, 4000)),
        evidence_from=st.floats(0, 2e9),
        failed_probes=st.integers(0, 9),
        transitions=st.integers(0, 99),
    )
)
def test_machine_dict_is_to_dict(state: MachineState) -> None:
    got = _machine_dict(state)
    assert got == state.to_dict()
    assert list(got) == list(state.to_dict())
    assert MachineState.from_dict(dict(got)) == state


def _tx(i: int, at: datetime, channel: str, method: str, failed: bool) -> Transaction:
    return Transaction.model_validate(
        {"transaction_id": f"trx-{i}", "merchant_id": "m-1", "customer_id": f"c-{i % 31}",
         "amount": "10000.00", "currency": "IDR", "method": method, "channel": channel,
         "status": "failed" if failed else "success", "error_code": "503" if failed else None,
         "latency_ms": 4000 if failed else 100 + i % 700, "created_at": at.isoformat()}
    )  # fmt: skip


_SAMPLES: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}


def _read_gauges() -> None:
    """Every sample of the registry, read once (a lookup per sample walks the whole registry)."""
    _SAMPLES.clear()
    for family in metrics.REGISTRY.collect():
        if family.name.startswith(GAUGE_FAMILIES):
            for sample in family.samples:
                _SAMPLES[(sample.name, frozenset(sample.labels.items()))] = sample.value


GAUGE_FAMILIES = (
    "pantau_channel_state",
    "pantau_consecutive_provider_failures",
    "pantau_provider_error_ratio",
    "pantau_decline_ratio",
    "pantau_window_attempts",
    "pantau_latency_quantile_seconds",
)


def _gauge(name: str, **labels: str) -> float | None:
    return _SAMPLES.get((name, frozenset(labels.items())))


def test_gauges_follow_every_snapshot_window() -> None:
    """Twenty minutes of two channels (one with two methods, one failing for a while): after
    every evaluation the gauges hold the figures of that channel's latest snapshot."""
    rng = random.Random(5)
    observer = HealthObserver(TOPICS, source="w")
    stage = HealthStage(TOPICS)
    checked = 0
    states: set[str] = set()
    for second in range(0, 20 * 60, 5):
        at = START + timedelta(seconds=second)
        batch = []
        for j in range(4):
            channel, method = rng.choice(
                [("BRI", "virtual_account"), ("BRI", "direct_debit"), ("OVO", "ewallet")]
            )
            failing = channel == "OVO" and 300 <= second < 700 and rng.random() < 0.9
            batch.append(_tx(second * 10 + j, at, channel, method, failing))
        records = [internal_record(o) for o in observer.observe(batch)]
        snaps = [o.value for o in stage.process(records) if o.topic == TOPICS.health]
        latest = {s["channel"]: s for s in snaps}
        if latest:
            _read_gauges()
        for channel, snap in latest.items():
            checked += 1
            state = stage.machines[channel]["state"]
            states.add(state)
            for value in ChannelState:
                expected = 1.0 if value.value == state else 0.0
                assert _gauge("pantau_channel_state", channel=channel, state=value.value) == (
                    expected
                )
            assert (
                _gauge("pantau_consecutive_provider_failures", channel=channel)
                == (snap["consecutive_provider_failures"])
            )
            for name, w in snap["windows"].items():
                labels = {"channel": channel, "window": name}
                assert _gauge("pantau_provider_error_ratio", **labels) == w["provider_error_rate"]
                assert _gauge("pantau_decline_ratio", **labels) == w["decline_rate"]
                assert _gauge("pantau_window_attempts", **labels) == w["attempts"]
                p95 = _gauge("pantau_latency_quantile_seconds", quantile="0.95", **labels)
                if w["latency_p95_ms"] is not None:
                    assert p95 == w["latency_p95_ms"] / 1000
    assert checked > 200
    assert {"healthy", "failed_over"} <= states  # the state gauges moved with the machine


def test_failure_runs_stay_bounded_and_consecutive_failures_survive_pruning() -> None:
    """Two and a half hours of one attempt per bucket (a run in every bucket), then provider
    failures: the runs kept stay within 1.5 hours' worth and the failures are still counted."""
    observer = HealthObserver(TOPICS, source="w")
    stage = HealthStage(TOPICS)
    sizes = []
    for k in range(900 + 6):
        at = START + timedelta(seconds=10 * k + 1)
        failing = k >= 900 or 880 <= k < 886  # an earlier run of failures, then successes
        deltas = observer.observe([_tx(k, at, "BNI", "virtual_account", failing)])
        records = [internal_record(o) for o in deltas]
        stage.process(records)
        sizes.append(len(stage.channels["BNI"].runs))
    snaps = [o.value for o in stage.close() if o.topic == TOPICS.health]
    assert max(sizes) <= RING + RING // 2 + 1
    assert sizes[-1] < 900 - 10  # pruned
    assert snaps[-1]["consecutive_provider_failures"] == 6
