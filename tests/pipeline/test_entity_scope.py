"""Device, card, IP and merchant state per input partition (PANTAU_ENTITY_SCOPE=partition): two
workers sharing the partitions decide every attempt as one replay does, however the partitions
are split between them, and backtests see the same features; with one such state per worker (the
default) they do not."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from models.features import partition_of
from models.history import replay_history
from streams.core import Record
from streams.payments import PaymentsStage
from streams.pipeline import build_stages
from streams.settings import Settings
from streams.sim_callbacks import sim_settings_overrides
from streams.simulator import generate

PARTITIONS = 8


def settings(scope: str) -> Settings:
    return Settings(**sim_settings_overrides(), partitions=PARTITIONS, entity_scope=scope)


def transactions(topics_settings: Settings) -> list[Record]:
    """Six simulated minutes of transactions keyed by customer (card testing included), each
    with the partition and offset Kafka's default partitioner would give it."""
    topics = topics_settings.topics
    offsets = [0] * PARTITIONS
    out = []
    for ev in generate(
        seed=5,
        duration=timedelta(minutes=6),
        tx_per_second=6.0,
        customers=200,
        merchants=12,
        scenarios=("card-testing",),
        topics=topics,
    ):
        if ev.topic != topics.transactions or not ev.key:
            continue
        p = partition_of(ev.key, PARTITIONS)
        out.append(Record(ev.topic, orjson.dumps(ev.value), ev.key.encode(), p, offsets[p]))
        offsets[p] += 1
    return out


def payments(s: Settings) -> PaymentsStage:
    return next(stage for stage in build_stages(s) if isinstance(stage, PaymentsStage))


def decisions(stage: PaymentsStage, batches: Sequence[Sequence[Record]]) -> list[bytes]:
    out = []
    for batch in batches:
        for o in stage.process(batch):
            if o.topic == stage.topics.decisions:
                out.append(orjson.dumps(o.value, option=orjson.OPT_SORT_KEYS))
    return sorted(out)


def replayed(s: Settings, records: list[Record]) -> list[bytes]:
    """One process, every record in order, no partition known (as `pantau replay`)."""
    plain = [Record(r.topic, r.value, r.key) for r in records]
    return decisions(payments(s), [plain[i : i + 300] for i in range(0, len(plain), 300)])


def live(s: Settings, records: list[Record], first: set[int]) -> list[bytes]:
    """Two workers, one holding the partitions in `first`, the other the rest, each taking
    batches of 100 of its own records in offset order."""
    out: list[bytes] = []
    for mine in (first, set(range(PARTITIONS)) - first):
        own = [r for r in records if r.partition in mine]
        out.extend(decisions(payments(s), [own[i : i + 100] for i in range(0, len(own), 100)]))
    return sorted(out)


def test_the_partition_is_kafkas_default_partitioners() -> None:
    partitioner = DefaultPartitioner()
    every = list(range(PARTITIONS))
    for key in ("c-1", "cust-000042", "pelanggan-ü", ""):
        assert partition_of(key, PARTITIONS) == partitioner(key.encode(), every, every)


@pytest.mark.parametrize("first", [{0, 1, 2, 3}, {5}, {0, 2, 4, 6, 7}])
def test_per_partition_state_decides_as_a_replay_does_whatever_the_split(first: set[int]) -> None:
    s = settings("partition")
    records = transactions(s)
    assert len({r.partition for r in records}) == PARTITIONS
    want = replayed(s, records)
    assert len(want) > 1500
    assert any(b'"decline"' in d or b'"review"' in d for d in want)  # the rules had work to do
    assert live(s, records, first) == want


def test_per_worker_state_depends_on_which_partitions_a_worker_holds() -> None:
    s = settings("worker")
    records = transactions(s)
    want = replayed(s, records)
    got = live(s, records, {0, 1, 2, 3})
    assert len(got) == len(want)
    assert sum(1 for a, b in zip(got, want, strict=True) if a != b) > 100


def test_backtests_and_training_see_the_features_live_scoring_sees(tmp_path: Path) -> None:
    """`replay_history` (rules backtest, train, evaluate) with the partition count gives every
    attempt the features a worker computes with entity state per partition."""
    s = settings("partition")
    records = transactions(s)
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b"".join(
            orjson.dumps({"topic": "payments.transactions", "value": orjson.loads(r.value)}) + b"\n"
            for r in records
        )
    )
    stage = payments(s)
    live_rows = []
    for i in range(0, len(records), 500):
        stage.process(records[i : i + 500])
        live_rows.extend(getattr(stage.fraud, "rows"))  # noqa: B009
    scoped = [row for b in replay_history(path, partitions=PARTITIONS) for row in b.rows]
    shared = [row for b in replay_history(path) for row in b.rows]
    assert len(scoped) == len(live_rows) == len(records)
    assert scoped == live_rows
    assert scoped != shared
