"""Health windows: mergeable latency histograms, merging partitions, consecutive failures across
partitions, redelivery, the watermark, dead-letter rate, views."""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pytest

from models.inputs import Transaction
from streams import metrics
from streams.core import Out, Record
from streams.health import EDGES_MS, HealthObserver, HealthStage, latency_bin, quantile
from streams.payments import PaymentsStage
from streams.pipeline import Pipeline, internal_record
from streams.settings import Settings

TOPICS = Settings().topics
START = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


def tx(
    i: int,
    at: datetime,
    channel: str = "BCA",
    status: str = "success",
    code: str | None = None,
    latency: int | None = 200,
    method: str = "virtual_account",
) -> Transaction:
    return Transaction.model_validate(
        {
            "transaction_id": f"trx-{i}",
            "merchant_id": "m-1",
            "customer_id": f"c-{i % 97}",
            "amount": "10000.00",
            "currency": "IDR",
            "method": method,
            "channel": channel,
            "status": status,
            "error_code": code,
            "latency_ms": latency,
            "created_at": at.isoformat(),
        }
    )


def feed(stage: HealthStage, outs: Sequence[Out]) -> list[Out]:
    """Hand an observer's deltas to the stage as it would read them from Kafka."""
    records = [internal_record(o) for o in outs if o.topic == TOPICS.health_deltas]
    return stage.process(records) if records else []


def traffic(
    minutes: int, seed: int = 7, outage: tuple[float, float] | None = None
) -> list[Transaction]:
    """Three VA channels at ~6 attempts/s; BCA fails hard during `outage` (minutes)."""
    rnd = random.Random(seed)
    out = []
    for i in range(minutes * 60 * 6):
        at = START + timedelta(seconds=i / 6 + rnd.random() * 0.1)
        channel = rnd.choice(["BCA", "MANDIRI", "BNI"])
        status, code, latency = "success", None, rnd.randint(80, 600)
        minute = i / 360
        if channel == "BCA" and outage and outage[0] <= minute < outage[1] and rnd.random() < 0.95:
            status, code, latency = "failed", rnd.choice(["503", "504", "TIMEOUT"]), 5000
        elif rnd.random() < 0.03:
            status, code = "failed", rnd.choice(["INSUFFICIENT_FUNDS", "409", "WEIRD"])
        out.append(tx(i, at, channel, status, code, latency))
    return out


def run(
    txs: Sequence[Transaction],
    workers: int = 1,
    batch: int = 200,
    seed: int = 1,
    lag: timedelta = timedelta(0),
    stage: HealthStage | None = None,
) -> tuple[HealthStage, list[Out]]:
    """Spread transactions over `workers` observers (as partitions keyed by customer would), in
    batches; their deltas reach one health stage interleaved. Workers progress side by side (the
    next batch is the one whose first event is earliest, ties broken at random), within the
    allowed lateness of each other, as consumers of one topic do; worker 0 runs `lag` behind."""
    observers = [HealthObserver(TOPICS, source=f"worker-{i}") for i in range(workers)]
    stage = stage or HealthStage(TOPICS)
    shares: list[list[Transaction]] = [[] for _ in range(workers)]
    for t in txs:
        shares[zlib.crc32(t.customer_id.encode()) % workers].append(t)
    rnd = random.Random(seed)
    cursors = [0] * workers
    outs: list[Out] = []
    while any(c < len(s) for c, s in zip(cursors, shares, strict=True)):
        ready = [i for i in range(workers) if cursors[i] < len(shares[i])]
        w = min(
            ready,
            key=lambda i: (
                shares[i][cursors[i]].created_at - (lag if i == 0 else timedelta(0)),
                rnd.random(),
            ),
        )
        chunk = shares[w][cursors[w] : cursors[w] + batch]
        cursors[w] += len(chunk)
        outs.extend(feed(stage, observers[w].observe(chunk)))
    outs.extend(stage.close())
    return stage, outs


def of(outs: Sequence[Out], topic: str) -> list[dict[str, Any]]:
    return [o.value for o in outs if o.topic == topic]


# ---- latency histogram ---------------------------------------------------------------------------


def test_histogram_quantiles_are_within_the_bin_error() -> None:
    rnd = np.random.default_rng(3)
    samples = rnd.lognormal(mean=5.5, sigma=0.8, size=20_000)
    hist = [0] * (len(EDGES_MS) + 1)
    for s in samples:
        hist[latency_bin(float(s))] += 1
    for q in (0.5, 0.95, 0.99):
        exact = float(np.quantile(samples, q))
        got = quantile(hist, q)
        assert got is not None
        assert abs(got - exact) / exact < 0.06, (q, got, exact)


def test_histograms_merge_by_addition() -> None:
    a = [0] * (len(EDGES_MS) + 1)
    b = [0] * (len(EDGES_MS) + 1)
    for v in range(100, 200):
        a[latency_bin(v)] += 1
    for v in range(900, 1000):
        b[latency_bin(v)] += 1
    merged = [x + y for x, y in zip(a, b, strict=True)]
    p95 = quantile(merged, 0.95)
    assert p95 is not None and 880 < p95 < 1010
    assert quantile([0] * len(a), 0.5) is None


# ---- merging partitions --------------------------------------------------------------------------


def _comparable(outs: Sequence[Out]) -> tuple[list[Any], list[Any], list[Any]]:
    return of(outs, TOPICS.health), of(outs, TOPICS.failover), of(outs, TOPICS.alerts)


def test_many_partitions_and_workers_give_the_same_answer_as_one() -> None:
    txs = traffic(40, outage=(10, 22))
    _, single = run(txs, workers=1, batch=500)
    # 20 attempts per batch and worker span about 13 s of event time, within the 30 s lateness.
    _, spread = run(txs, workers=4, batch=20, seed=5)
    health1, failover1, alerts1 = _comparable(single)
    health4, failover4, alerts4 = _comparable(spread)
    assert failover1 == failover4
    assert alerts1 == alerts4
    assert health1 == health4
    actions = [(s["channel"], s["action"]) for s in failover1]
    assert actions == [("BCA", "failover"), ("BCA", "probe"), ("BCA", "restore")]


def test_a_worker_lagging_past_the_lateness_holds_judgement_back() -> None:
    """Worker 0 reads a minute behind the others (twice the allowed lateness, e.g. catching up
    after a restart): the stage waits for it, and judges exactly as with one worker."""
    txs = traffic(40, outage=(10, 22))
    _, single = run(txs, workers=1, batch=500)
    _, lagging = run(txs, workers=3, batch=20, seed=2, lag=timedelta(seconds=60))
    health1, failover1, alerts1 = _comparable(single)
    health3, failover3, alerts3 = _comparable(lagging)
    assert (failover1, alerts1) == (failover3, alerts3)
    assert [s["action"] for s in failover1] == ["failover", "probe", "restore"]

    # A worker the stage has not heard from yet cannot hold it back: compare from the time
    # every worker has reported (the first minutes).
    def settled(snaps: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
        return sorted(
            (s["at"], s["channel"], s["windows"]) for s in snaps if s["at"] >= "2026-11-21T03:02"
        )

    assert settled(health1) == settled(health3)


def test_a_silent_worker_stops_holding_the_watermark_back() -> None:
    stage = HealthStage(TOPICS)
    gone, alive = HealthObserver(TOPICS, source="gone"), HealthObserver(TOPICS, source="alive")
    feed(stage, gone.observe([tx(1, _at(0))]))
    feed(stage, alive.observe([tx(2, _at(1))]))
    # "gone" sends nothing more: for 2 minutes of event time it holds the watermark back ...
    assert of(feed(stage, alive.observe([tx(3, _at(100))])), TOPICS.health) == []
    # ... then it is left out and the buckets are judged.
    snaps = of(feed(stage, alive.observe([tx(4, _at(125))])), TOPICS.health)
    assert snaps and snaps[-1]["at"] == "2026-11-21T03:01:30.000Z"


def test_the_slowest_partition_of_a_worker_sets_its_progress() -> None:
    obs = HealthObserver(TOPICS)
    obs.positions({0: _at(50), 1: _at(20), 2: _at(45)})
    assert obs.progress() == int(_at(20).timestamp() * 1000)
    obs.positions({1: _at(48)})
    assert obs.progress() == int(_at(45).timestamp() * 1000)
    obs.positions({0: _at(300)})  # partitions 1 and 2 silent for over 2 minutes: left out
    assert obs.progress() == int(_at(300).timestamp() * 1000)


def test_windows_count_every_class() -> None:
    at = START
    txs = [
        tx(1, at, status="success"),
        tx(2, at + timedelta(seconds=1), status="pending", latency=None),
        tx(3, at + timedelta(seconds=2), status="failed", code="503"),
        tx(4, at + timedelta(seconds=3), status="failed", code="INSUFFICIENT_FUNDS"),
        tx(5, at + timedelta(seconds=4), status="failed", code="409"),
        tx(6, at + timedelta(seconds=5), status="failed", code="WHO_KNOWS"),
    ]
    _, outs = run(txs)
    snap = of(outs, TOPICS.health)[0]
    w = snap["windows"]["1m"]
    assert (w["attempts"], w["successes"], w["provider_errors"]) == (6, 1, 1)
    assert (w["declines"], w["merchant_errors"], w["unknown_errors"]) == (1, 1, 1)
    assert w["provider_error_rate"] == pytest.approx(1 / 6, abs=1e-6)
    assert w["latency_p50_ms"] is not None


# ---- consecutive provider failures across partitions ---------------------------------------------


def _at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("worker_a", "worker_b", "expected"),
    [
        # A succeeded at 5 s; failures after it, on both workers, count: 5.5, 6, 7, 8.
        ([(5.0, "ok"), (6.0, "503"), (7.0, "503")], [(4.0, "503"), (5.5, "503"), (8.0, "504")], 4),
        # B's decline at 7.5 s ends the run (the provider answered): only 8 and 9 count.
        ([(1.0, "503"), (2.0, "503"), (9.0, "503")], [(7.5, "402"), (8.0, "TIMEOUT")], 2),
        # Unknown codes neither break nor extend a run.
        ([(1.0, "ok"), (2.0, "503")], [(3.0, "WHO_KNOWS"), (4.0, "503")], 2),
        # A bucket without any success adds all its failures to the previous bucket's tail.
        ([(1.0, "ok"), (2.0, "503"), (12.0, "503"), (13.0, "503")], [(15.0, "504")], 4),
        # Nothing failed after the last success.
        ([(1.0, "503"), (2.0, "503")], [(3.0, "ok")], 0),
    ],
)
def test_consecutive_failures_follow_event_time_across_workers(
    worker_a: list[tuple[float, str]], worker_b: list[tuple[float, str]], expected: int
) -> None:
    def make(events: list[tuple[float, str]], base: int) -> list[Transaction]:
        return [
            tx(
                base + i,
                _at(s),
                status="success" if c == "ok" else "failed",
                code=None if c == "ok" else c,
            )
            for i, (s, c) in enumerate(events)
        ]

    a, b = HealthObserver(TOPICS), HealthObserver(TOPICS)
    stage = HealthStage(TOPICS)
    # B's deltas arrive first, A's later: arrival order must not matter.
    feed(stage, b.observe(make(worker_b, 100)))
    feed(stage, a.observe(make(worker_a, 0)))
    boundary = int(_at(20).timestamp() * 1000)
    assert stage._consecutive(stage.channels["BCA"], boundary) == expected


# ---- redelivery, watermark, lateness -------------------------------------------------------------


def test_redelivered_attempts_are_counted_once() -> None:
    txs = [tx(i, _at(i)) for i in range(5)] + [tx(9, _at(6), status="failed", code="503")]
    before = metrics.DUPLICATE_ATTEMPTS._value.get()
    obs = HealthObserver(TOPICS)
    stage = HealthStage(TOPICS)
    feed(stage, obs.observe(txs))
    feed(stage, obs.observe(txs[2:]))  # the consumer crashed before committing: redelivered
    # ... but a retry (same id, later created_at) is a new attempt.
    retry = tx(9, _at(8), status="success")
    feed(stage, obs.observe([retry]))
    outs = stage.close()
    w = of(outs, TOPICS.health)[-1]["windows"]["1m"]
    assert w["attempts"] == 7
    assert w["provider_errors"] == 1
    assert metrics.DUPLICATE_ATTEMPTS._value.get() - before == 4


def test_dedup_memory_is_bounded() -> None:
    obs = HealthObserver(TOPICS, dedup_size=10)
    obs.observe([tx(i, _at(i)) for i in range(50)])
    assert len(obs._seen) == 10 and len(obs._order) == 10
    # An old identity has been forgotten: seen again, it counts again.
    deltas = obs.observe([tx(0, _at(0))])
    assert any(d.value.get("n", [0])[0] == 1 for d in deltas)


def test_snapshots_wait_for_the_watermark() -> None:
    obs = HealthObserver(TOPICS)
    stage = HealthStage(TOPICS, lateness=timedelta(seconds=30))
    assert feed(stage, obs.observe([tx(1, _at(1))])) == []
    # 35 s later the watermark (latest - 30 s) is 6 s: the bucket [0, 10) is still open.
    assert of(feed(stage, obs.observe([tx(2, _at(36))])), TOPICS.health) == []
    # At 41 s the watermark passes 10 s: exactly one snapshot, for the boundary 10 s.
    snaps = of(feed(stage, obs.observe([tx(3, _at(41))])), TOPICS.health)
    assert [s["at"] for s in snaps] == ["2026-11-21T03:00:10.000Z"]
    assert snaps[0]["windows"]["1m"]["attempts"] == 1


def test_a_late_delta_still_counts_in_the_longer_windows() -> None:
    obs = HealthObserver(TOPICS)
    stage = HealthStage(TOPICS)
    feed(stage, obs.observe([tx(i, _at(i * 5)) for i in range(30)]))  # 0..145 s
    late = HealthObserver(TOPICS)  # another worker, lagging by two minutes
    feed(stage, late.observe([tx(100, _at(3), status="failed", code="500")]))
    snaps = of(stage.close(), TOPICS.health)
    assert snaps[-1]["windows"]["5m"]["provider_errors"] == 1
    assert snaps[-1]["windows"]["5m"]["attempts"] == 31


def test_replay_batch_size_does_not_change_outputs() -> None:
    txs = traffic(30, seed=11, outage=(8, 16))
    _, small = run(txs, batch=25)
    _, large = run(txs, batch=1000)
    assert _comparable(small) == _comparable(large)


# ---- dead letters, views -------------------------------------------------------------------------


def test_deadletter_rate_alert_fires_and_resolves_once() -> None:
    settings = Settings()
    obs = HealthObserver(TOPICS)
    stage = HealthStage(TOPICS)
    pipeline = Pipeline(settings, [PaymentsStage(TOPICS, observers=[obs]), stage])
    outs: list[Out] = []
    for second in range(0, 1500, 2):
        value = tx(second, _at(second)).model_dump(mode="json")
        records = [Record(TOPICS.transactions, orjson.dumps(value), key=b"c")]
        if 300 <= second < 500:  # a producer sends garbage for 200 s
            records.append(
                Record(
                    TOPICS.transactions, b'{"amount": "lots"}', key=b"c", partition=0, offset=second
                )
            )
        pipeline.process(records, outs.append)
        if second == 400:  # redelivered: dead letters count once, as the records do
            pipeline.process(records, outs.append)
        pipeline.tick(outs.append)
    pipeline.close(outs.append)
    alerts = [a for a in of(outs, TOPICS.alerts) if a["alert"] == "deadletter_rate_high"]
    assert [a["status"] for a in alerts] == ["firing", "resolved"]
    assert alerts[0]["fingerprint"] == "deadletter_rate_high/payments.transactions"
    fired = datetime.fromisoformat(alerts[0]["at"])
    assert _at(300) < fired < _at(500)
    assert alerts[0]["value"] > 0.05


def test_views_show_the_latest_snapshot_and_state() -> None:
    stage, _ = run(traffic(20, outage=(10, 40)))
    view = stage.channels_view()
    assert set(view["channels"]) == {"BCA", "MANDIRI", "BNI"}
    assert view["channels"]["BCA"]["state"] == "failed_over"
    assert view["channels"]["MANDIRI"]["state"] == "healthy"
    bca = stage.channel_view("bca")
    assert bca is not None
    assert bca["state"] == "failed_over"
    assert bca["last_signal"]["action"] == "failover"
    assert bca["last_signal"]["alternatives"][0] in {"MANDIRI", "BNI"}
    assert bca["probe_ratio"] == 0.05
    assert {a["alert"] for a in bca["alerts"]} >= {"channel_failed_over", "api_error_rate_high"}
    assert stage.channel_view("NOPE") is None
    assert orjson.loads(orjson.dumps(view)) == view  # JSON as it is


def test_metrics_follow_the_channels() -> None:
    run(traffic(20, outage=(10, 40)))
    text = metrics.exposition().decode()
    assert 'pantau_channel_state{channel="BCA",state="failed_over"} 1.0' in text
    assert 'pantau_channel_state{channel="MANDIRI",state="healthy"} 1.0' in text
    assert (
        'pantau_transactions_total{channel="BCA",error_class="provider",'
        'method="virtual_account",status="failed"}'
    ) in text
    assert 'pantau_provider_error_ratio{channel="BCA",window="5m"}' in text
    assert "pantau_attempt_latency_seconds_bucket" in text


def test_redelivered_dead_letters_count_once() -> None:
    obs = HealthObserver(TOPICS)
    obs.observe([tx(1, _at(1))])
    bad = [Record(TOPICS.transactions, b"{}", partition=2, offset=n) for n in range(3)]

    def dead(records: list[Record]) -> list[Out]:
        # The payments stage hands a batch's dead letters over, then calls observe.
        assert obs.rejected(records) == []
        return obs.observe([])

    first = dead(bad)
    assert [(d.key, d.value["records"], d.value["dead"]) for d in first] == [("*", 3, 3)]
    assert first[0].value["src"] == {"2": 2}
    assert dead(bad) == []  # the same offsets again
    assert dead([Record(TOPICS.transactions, b"{}", partition=3, offset=0)]) != []


def test_unknown_channels_share_one_metrics_label_and_are_capped() -> None:
    from rules.health import load_health_rules

    rules = load_health_rules().model_copy(update={"max_channels": 3})
    obs = HealthObserver(TOPICS, rules)
    stage = HealthStage(TOPICS, rules)
    before = metrics.exposition().decode().count('channel="other"')
    made_up = [tx(i, _at(i), channel=f"MERCHANT_{i:03d}") for i in range(6)]
    feed(stage, obs.observe([tx(100, _at(0)), *made_up]))
    text = metrics.exposition().decode()
    assert "MERCHANT_0" not in text
    assert text.count('channel="other"') > before
    # The health stage tracks at most max_channels; the rest are left out (and named once).
    assert set(stage.channels) == {"BCA", "MERCHANT_000", "MERCHANT_001"}
    assert stage.dropped == {f"MERCHANT_{i:03d}" for i in range(2, 6)}
    # Tracked unknown channels still get their snapshots and views.
    feed(stage, obs.observe([tx(200, _at(60))]))
    assert stage.channel_view("MERCHANT_000") is not None


def test_a_channel_with_two_methods_has_windows_per_method() -> None:
    txs = [tx(i, _at(i), channel="BRI") for i in range(10)]
    txs += [
        tx(100 + i, _at(i), channel="BRI", method="direct_debit", status="failed", code="503")
        for i in range(4)
    ]
    _, outs = run(txs)
    snap = of(outs, TOPICS.health)[-1]
    w = snap["windows"]
    assert (w["1m"]["attempts"], w["1m"]["provider_errors"]) == (14, 4)
    assert w["virtual_account/1m"]["attempts"] == 10
    assert w["virtual_account/1m"]["provider_errors"] == 0
    assert (w["direct_debit/1m"]["attempts"], w["direct_debit/1m"]["provider_errors"]) == (4, 4)
    assert snap["method"] == "virtual_account"  # the channel's main method
    # A channel with one method has just the three windows.
    _, single = run([tx(i, _at(i)) for i in range(5)])
    assert set(of(single, TOPICS.health)[-1]["windows"]) == {"1m", "5m", "1h"}


# ---- resuming from gateway.failover (restarts, rebalances) ---------------------------------------


def _signal(
    channel: str, action: str, state: str, at: datetime, method: str = "virtual_account"
) -> dict[str, Any]:
    return {
        "schema_version": 1, "channel": channel, "method": method, "action": action,
        "state": state, "reason": "consecutive_provider_failures", "figures": {},
        "alternatives": [], "probe_ratio": 0.05, "at": at.isoformat(),
        "since": at.isoformat(), "rules_version": "x",
    }  # fmt: skip


def _state_stage(stage: HealthStage, signals: list[dict[str, Any]]) -> None:
    from streams.health import FailoverStateStage

    reader = FailoverStateStage(TOPICS, stage)
    assert reader.broadcast and reader.consumes == (TOPICS.failover,)
    records = [Record(TOPICS.failover, orjson.dumps(s), key=s["channel"].encode()) for s in signals]
    assert reader.process(records) == []


def test_a_restarted_worker_carries_on_from_the_last_signal() -> None:
    """BCA was failed over when its worker restarted; the new worker reads gateway.failover from
    the beginning and, seeing healthy traffic, probes and restores it instead of staying silent
    (which would leave routers routing around BCA forever)."""
    stage = HealthStage(TOPICS)
    _state_stage(
        stage,
        [
            _signal("BCA", "degrade", "degraded", _at(-600)),
            _signal("BCA", "failover", "failed_over", _at(-590)),
            _signal("BCA", "degrade", "degraded", _at(-600)),  # an older one, read again: no-op
        ],
    )
    assert stage.machines["BCA"]["state"] == "failed_over"
    _, outs = run([tx(i, _at(i / 2)) for i in range(1200)], stage=stage)
    actions = [s["action"] for s in of(outs, TOPICS.failover)]
    assert actions == ["probe", "restore"]


def test_a_workers_own_judgement_wins_over_signals_it_reads() -> None:
    stage = HealthStage(TOPICS)
    _, outs = run(traffic(12, outage=(2, 20)), stage=stage)
    assert [s["action"] for s in of(outs, TOPICS.failover)] == ["failover"]
    _state_stage(stage, [_signal("BCA", "restore", "healthy", _at(5000))])
    assert stage.machines["BCA"]["state"] == "failed_over"


def test_alternatives_include_channels_other_workers_judge() -> None:
    stage = HealthStage(TOPICS)
    _state_stage(
        stage,
        [
            _signal("PERMATA", "restore", "healthy", _at(-100)),
            _signal("CIMB", "failover", "failed_over", _at(-100)),
            _signal("OVO", "restore", "healthy", _at(-100), method="ewallet"),
        ],
    )
    _, outs = run(traffic(6, outage=(2, 20)), stage=stage)
    failover = of(outs, TOPICS.failover)[0]
    assert failover["channel"] == "BCA"
    # MANDIRI and BNI judged here (ranked by health), then PERMATA (healthy elsewhere).
    assert failover["alternatives"][:2] in (["MANDIRI", "BNI"], ["BNI", "MANDIRI"])
    assert failover["alternatives"][2:] == ["PERMATA"]


def test_redelivered_deltas_are_merged_once() -> None:
    obs = HealthObserver(TOPICS)
    stage = HealthStage(TOPICS)
    records = [internal_record(o) for o in obs.observe([tx(i, _at(i)) for i in range(6)])]
    for offset, record in enumerate(records):
        record.partition, record.offset = 3, offset
    stage.process(records)
    stage.process(records[1:])  # the worker died before committing: redelivered
    later = internal_record(obs.observe([tx(9, _at(9))])[0])
    later.partition, later.offset = 3, len(records)
    stage.process([later])
    w = of(stage.close(), TOPICS.health)[-1]["windows"]["1m"]
    assert w["attempts"] == 7


def test_a_channel_not_heard_from_is_not_judged() -> None:
    """BCA's deltas stop (its partition went to another worker): after 2 minutes of event time
    this stage stops judging it, so it cannot contradict the new owner; MANDIRI goes on."""
    obs = HealthObserver(TOPICS)
    stage = HealthStage(TOPICS)
    feed(stage, obs.observe([tx(i, _at(i), channel="BCA") for i in range(60)]))
    outs = []
    for s in range(60, 600, 5):
        outs += feed(stage, obs.observe([tx(1000 + s, _at(s), channel="MANDIRI")]))
    last = {}
    for snap in of(outs, TOPICS.health):
        last[snap["channel"]] = snap["at"]
    assert last["BCA"] <= "2026-11-21T03:03:00.000Z" < last["MANDIRI"]
