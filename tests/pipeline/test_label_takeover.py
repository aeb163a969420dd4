"""Late fraud labels count once across a takeover: a worker dies after counting some labels
(some of them logged, some not) and another, which read every label before holding any
partition, takes its partitions over from the changelog. The merchants' confirmed frauds and
the kept transactions end as in one clean run; without the kept transactions in the changelog,
the labels of the dead worker's payments are lost. No broker: the changelog is a list here
(tests/integration/test_crash.py runs it on the embedded broker)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson

from models.features import TX_PREFIX, _records, decode, partition_of
from streams.core import Record
from streams.durable import decode_value, encode_value
from streams.fraud import LabelsStage
from streams.payments import PaymentsStage
from streams.pipeline import build_stages
from streams.settings import Settings
from streams.simulator import DEFAULT_START, generate

PARTITIONS = 4
SETTINGS = Settings(entity_scope="partition", partitions=PARTITIONS)
TOPICS = SETTINGS.topics


@dataclass
class Worker:
    """One worker's payments and labels stages, sharing its feature store."""

    payments: PaymentsStage = field(init=False)
    labels: LabelsStage = field(init=False)

    def __post_init__(self) -> None:
        stages = build_stages(SETTINGS)
        self.payments = next(s for s in stages if isinstance(s, PaymentsStage))
        self.labels = next(s for s in stages if isinstance(s, LabelsStage))

    def log(self, changelog: dict[int, list[tuple[str, Any, int]]]) -> None:
        """Write what changed to the changelog (after a batch, or a flush)."""
        assert self.payments.durable is not None
        for p, keys in self.payments.durable.changes().items():
            for key, value in keys.items():
                raw = encode_value(value) if value is not None else None
                changelog.setdefault(p, []).append((key, raw, len(changelog.get(p, ()))))

    def state(self) -> dict[str, Any]:
        store: Any = self.labels.store
        return {**store.state, **store.tx_merchants}


def _inputs() -> tuple[dict[int, list[Record]], list[Record]]:
    """Five simulated minutes of payments by partition (as Kafka's default partitioner puts them)
    and a confirmed-fraud label for one in ten, reported two days later."""
    parts: dict[int, list[Record]] = {p: [] for p in range(PARTITIONS)}
    ids: list[str] = []
    for ev in generate(seed=4, duration=timedelta(minutes=5), tx_per_second=5.0, topics=TOPICS):
        if ev.topic != TOPICS.transactions or not ev.key:
            continue
        p = partition_of(ev.key, PARTITIONS)
        parts[p].append(Record(ev.topic, orjson.dumps(ev.value), ev.key.encode(), p, len(parts[p])))
        if ev.value["transaction_id"] not in ids:
            ids.append(ev.value["transaction_id"])
    reported = (DEFAULT_START + timedelta(days=2)).isoformat()
    labels = [
        Record(
            TOPICS.labels,
            orjson.dumps({"transaction_id": tx, "fraud": True, "reported_at": reported}),
            tx.encode(),
            0,
            i,
        )
        for i, tx in enumerate(ids[::10])
    ]
    return parts, labels


def _batches(parts: dict[int, list[Record]], start: dict[int, int], stop: dict[int, int]) -> Any:
    for p in sorted(parts):
        records = parts[p][start[p] : stop[p]]
        for i in range(0, len(records), 50):
            yield records[i : i + 50]


def _frauds(state: dict[str, Any]) -> dict[str, int]:
    return {
        k: sum(decode(v).frauds.values())
        for k, v in state.items()
        if k.startswith("merchant:") and decode(v).frauds
    }


def _kept(state: dict[str, Any]) -> list[tuple[bytes, int, int, str]]:
    return sorted(r for k, v in state.items() if k.startswith(TX_PREFIX) for r in _records(v))


def _run(restore: Any) -> tuple[Worker, Worker]:
    """Worker a handles the first half of every partition and reads the first half of the
    labels (logging all but the last three it counts); b read every label first, then takes
    every partition over with `restore` and handles the rest. Returns (b, one clean worker)."""
    parts, labels = _inputs()
    half = {p: len(records) // 2 for p, records in parts.items()}
    changelog: dict[int, list[tuple[str, Any, int]]] = {}
    a, b, clean = Worker(), Worker(), Worker()
    b.labels.process(labels)  # b holds nothing yet: every label waits
    assert len(b.labels.store.pending) == len(labels)
    for batch in _batches(parts, dict.fromkeys(parts, 0), half):
        a.payments.process(batch)
        a.log(changelog)
    read = len(labels) // 2
    a.labels.process(labels[: read - 3])
    a.log(changelog)  # the flush
    a.labels.process(labels[read - 3 : read])  # counted, never logged: a dies
    counted_by_a = sum(_frauds(a.state()).values())
    assert counted_by_a > 10
    for p, items in changelog.items():
        assert b.payments.durable is not None
        b.payments.durable.restore(p, restore(items))
        b.payments.restored(p, careful_until=-1, delivered_upto=half[p] - 1)
    for batch in _batches(parts, half, {p: len(r) for p, r in parts.items()}):
        b.payments.process(batch)
    for batch in _batches(parts, dict.fromkeys(parts, 0), {p: len(r) for p, r in parts.items()}):
        clean.payments.process(batch)
    clean.labels.process(labels)
    assert not clean.labels.store.pending
    return b, clean


def test_every_label_counts_once_across_a_takeover_as_in_one_clean_run() -> None:
    b, clean = _run(lambda items: [(k, decode_value(v) if v else None, t) for k, v, t in items])
    assert not b.labels.store.pending
    want = _frauds(clean.state())
    assert sum(want.values()) == len(_inputs()[1])
    assert _frauds(b.state()) == want
    assert _kept(b.state()) == _kept(clean.state())
    assert {k: v for k, v in b.state().items() if k.startswith("merchant:")} == {
        k: v for k, v in clean.state().items() if k.startswith("merchant:")
    }


def test_without_the_kept_transactions_in_the_changelog_the_dead_workers_labels_are_lost() -> None:
    def without_kept(items: Sequence[tuple[str, Any, int]]) -> list[tuple[str, Any, int]]:
        return [
            (k, decode_value(v) if v else None, t) for k, v, t in items if not k.startswith("tx:")
        ]

    b, clean = _run(without_kept)
    assert sum(_frauds(b.state()).values()) < sum(_frauds(clean.state()).values())
    assert b.labels.store.pending  # their payments are never known here
