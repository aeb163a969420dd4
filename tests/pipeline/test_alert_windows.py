"""Settlement and callback alerts judged over every worker's samples: thresholds hold whatever the
number of workers, and a judge rebuilt by another worker re-sends what its predecessor sent."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson

from models.features import partition_of
from streams import metrics
from streams.alert_windows import WindowedAlerts, WindowedAlertShards
from streams.core import Out, Record
from streams.pipeline import internal_record
from streams.settings import Settings
from streams.settlement import (
    CallbacksStage,
    SettlementRules,
    SettlementStage,
    build_verifier,
    load_settlement_rules,
)
from streams.signatures import build_callback
from streams.statelog import AlertWindowsRebuilder
from streams.topics import Topics
from tests.pipeline.test_settlement_takeover import Worker, batches, settlement_facts
from tests.unit.test_settlement import callback, transaction

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
TOPICS = Topics()
RULES = SettlementRules.model_validate(
    {
        "deadlines_s": {"default": 3600},
        "alerts": {
            "callbacks_missing": {"threshold": 4, "window_s": 3600},
            "callback_signature_failures": {"threshold": 5, "window_s": 300},
        },
    }
)


def _transaction(tx_id: str, at: datetime, channel: str = "OVO") -> Record:
    return transaction(tx_id, at, channel=channel, method="ewallet")


def _forgery(i: int, at: datetime, partition: int) -> Record:
    body = {"transaction_id": f"trx-{i}", "status": "settled", "amount": "1000.00"}
    value = build_callback(
        "generic", body, "wrong", callback_id=f"cb-{i}", received_at=at, source_ip="10.1.2.3"
    )
    return Record(TOPICS.callbacks, orjson.dumps(value), partition=partition, offset=i)


def _samples(outs: list[Out]) -> list[Record]:
    return [internal_record(o) for o in outs if o.topic == TOPICS.alert_samples]


def _fired(outs: list[Out]) -> list[tuple[str, str]]:
    return [(o.value["fingerprint"], o.value["status"]) for o in outs if o.topic == TOPICS.alerts]


def test_two_workers_together_reach_a_threshold_neither_reaches_alone() -> None:
    """Each of two workers sees three missed callbacks and three forgeries: at or under the
    thresholds (more than 4 missing, 5 forgeries), so judged per worker nothing fires. Judged
    over both workers' samples, both alerts fire, once."""
    verifier = build_verifier(Settings(callback_secrets={"generic": ["right"]}))
    sent: list[list[Record]] = []
    for worker in range(2):
        settlement = SettlementStage(TOPICS, RULES, samples_partitions=4)
        callbacks = CallbacksStage(TOPICS, verifier, RULES, samples_partitions=4)
        outs = settlement.process(
            [_transaction(f"w{worker}-{i}", T0 + timedelta(seconds=i)) for i in range(3)]
        )
        # An hour later the deadlines are past: three misses each.
        outs += settlement.process(
            [_transaction(f"w{worker}-late", T0 + timedelta(hours=1, minutes=2), "BCA")]
        )
        outs += settlement.tick()
        outs += callbacks.process(
            [_forgery(10 * worker + i, T0 + timedelta(hours=1, minutes=2, seconds=i), worker)
             for i in range(3)]
        )  # fmt: skip
        outs += callbacks.tick()
        sent.append(_samples(outs))
    for alone in sent:
        judge = WindowedAlerts(TOPICS, RULES.alerts)
        assert _fired(judge.process(alone) + judge.close()) == []
    judge = WindowedAlerts(TOPICS, RULES.alerts)
    both = judge.process(sent[0]) + judge.process(sent[1]) + judge.close()
    assert sorted(_fired(both)) == [
        ("callback_signature_failures/generic", "firing"),
        ("callbacks_missing/OVO", "firing"),
    ]
    [missing] = [o.value for o in both if o.value.get("alert") == "callbacks_missing"]
    assert missing["value"] == 6
    # Every sample sent again (a successor's re-send after a takeover) counts nothing twice.
    again = judge.process(sent[0] + sent[1]) + judge.close()
    assert _fired(again) == []
    assert len(judge.subjects["callbacks_missing/OVO"].ids) == 6


def _samples_by_partition(partitions: int) -> dict[int, list[Record]]:
    """The alert samples of six simulated hours of settlement (delays rising, callbacks going
    missing), on the partitions Kafka's default partitioner gives their keys."""
    parts = settlement_facts()
    worker = Worker({})
    outs: list[Out] = []
    start = dict.fromkeys(parts, 0)
    for batch in batches(parts, start, {p: len(v) for p, v in parts.items()}):
        outs += worker.run(batch)
    by_partition: dict[int, list[Record]] = {p: [] for p in range(partitions)}
    for out in outs:
        if out.topic != TOPICS.alert_samples:
            continue
        # A progress beat names its partition; samples go by their key.
        p = out.partition if out.key is None else partition_of(out.key, partitions)
        assert p is not None
        r = internal_record(out)
        by_partition[p].append(Record(r.topic, r.value, r.key, p, len(by_partition[p])))
    return by_partition


def _judge() -> WindowedAlerts:
    """A judge quicker to fire than the shipped rules, so that the run fires and resolves often."""
    rules = load_settlement_rules().model_copy(deep=True)
    rules.alerts.callbacks_missing.threshold = 2
    rules.alerts.callbacks_missing.window_s = 1200
    rules.alerts.settlement_delay_high.p95_s = 1800
    rules.alerts.settlement_delay_high.min_samples = 5
    return WindowedAlerts(TOPICS, rules.alerts)


def _alerts(outs: list[Out]) -> list[Any]:
    return [o.value for o in outs if o.topic == TOPICS.alerts]


def test_a_rebuilt_judge_sends_what_its_predecessor_sent_whatever_the_batches() -> None:
    """A judge is a function of its partition's messages in order: one fed message by message,
    and one rebuilt from the first half at once (outputs discarded, as a takeover does) then
    fed the rest in batches of 7, send the same alerts for the rest."""
    parts = _samples_by_partition(Settings().partitions)
    resent = 0
    for records in parts.values():
        one_by_one = _judge()
        per_record = [_alerts(one_by_one.process([r])) for r in records]
        half = len(records) // 3
        rebuilt = _judge()
        rebuilt.process(records[:half])
        rest: list[Any] = []
        for i in range(half, len(records), 7):
            rest += _alerts(rebuilt.process(records[i : i + 7]))
        want = [a for alerts in per_record[half:] for a in alerts]
        assert rest == want
        resent += len(want)
    assert resent >= 10  # the rest fires and resolves


def test_a_judge_handed_over_takes_its_metrics_off_this_worker() -> None:
    """Its firing alerts leave `pantau_alerts_firing` and its delay quantiles are no longer
    exported here: the worker that takes the partition over exports them."""

    def firing() -> float:
        value = metrics.REGISTRY.get_sample_value(
            "pantau_alerts_firing", {"alert": "callbacks_missing"}
        )
        return value or 0.0

    def p95() -> float | None:
        labels = {"channel": "HANDOVER", "method": "ewallet", "quantile": "0.95"}
        return metrics.REGISTRY.get_sample_value("pantau_settlement_delay_quantile_seconds", labels)

    shards = WindowedAlertShards(lambda: WindowedAlerts(TOPICS, RULES.alerts))
    before = firing()
    settlement = SettlementStage(TOPICS, RULES, samples_partitions=1)
    outs = settlement.process([_transaction(f"h{i}", T0) for i in range(5)])
    outs += settlement.process(
        [_transaction("s1", T0, "HANDOVER"), callback("s1", T0 + timedelta(minutes=7))]
    )
    outs += settlement.process([_transaction("h-late", T0 + timedelta(hours=1, minutes=2), "BCA")])
    outs += settlement.tick()
    records = [
        Record(r.topic, r.value, r.key, partition=3, offset=i) for i, r in enumerate(_samples(outs))
    ]
    shards.process(records)
    assert _fired(shards.shards[3].close()) == [("callbacks_missing/OVO", "firing")]
    assert firing() == before + 1
    assert p95() == 420
    assert shards.drop(3) and not shards.drop(3)
    assert firing() == before
    assert p95() is None


class _Reader:
    """A samples partition as PartitionReader.read gives it, in fetches of 50 messages."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records

    async def read(self, topic: str, partition: int, stop: int | None = None) -> Any:
        upto = [r for r in self.records if stop is None or (r.offset or 0) < stop]
        for i in range(0, len(upto), 50):
            yield [
                SimpleNamespace(value=r.value, key=r.key, offset=r.offset) for r in upto[i : i + 50]
            ]


def _notifications() -> float:
    return sum(
        sample.value
        for metric in metrics.ALERT_NOTIFICATIONS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def test_a_rebuilt_judge_counts_no_alert_notification_again() -> None:
    """Rebuilding re-runs what the previous owner sent and counted: the notifications counter
    stays put, while the firing gauge follows the rebuilt judge. Fed live, the same messages
    count."""
    parts = _samples_by_partition(Settings().partitions)
    partition, records = max(parts.items(), key=lambda kv: len(kv[1]))
    live = _judge()
    before = _notifications()
    sent = _alerts(live.process(records))
    assert sent and _notifications() == before + len(sent)
    shards = WindowedAlertShards(_judge)
    rebuilder = AlertWindowsRebuilder(shards, _Reader(records))  # type: ignore[arg-type]
    before = _notifications()
    asyncio.run(rebuilder.rebuild(partition, len(records)))
    assert _notifications() == before
    assert shards.shards[partition].alerts.firing() == live.alerts.firing()
