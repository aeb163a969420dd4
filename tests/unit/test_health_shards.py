"""Health shards (live: one health stage per deltas partition): the same judgement as one stage,
a shard rebuilt from its partition's deltas carries on as the original would, signals reach every
shard, views merge."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from streams.core import Out, Record
from streams.health import DeltaGroup, HealthObserver, HealthShards, HealthStage
from streams.ledger import Sent, identity
from tests.unit.test_health_windows import TOPICS, _at, _signal, of, traffic, tx

PARTITIONS = 4


def deltas(minutes: int = 20, chunk: int = 150) -> list[Record]:
    """Two workers' deltas over traffic with a BCA outage, as the deltas topic holds them:
    partitioned by channel (the records counts by their own key), with offsets; the workers
    observe `chunk` transactions at a time (150: 25 s of event time)."""
    txs = traffic(minutes, outage=(5, 12))
    observers = [HealthObserver(TOPICS, source=f"w{i}") for i in range(2)]
    outs: list[Out] = []
    for start in range(0, len(txs), chunk):
        part = txs[start : start + chunk]
        for i, observer in enumerate(observers):
            share = [t for t in part if zlib.crc32(t.customer_id.encode()) % 2 == i]
            outs.extend(observer.observe(share))
    offsets = [0] * PARTITIONS
    records = []
    for out in outs:
        assert out.key is not None
        p = zlib.crc32(out.key.encode()) % PARTITIONS
        records.append(Record(out.topic, orjson.dumps(out.value), out.key.encode(), p, offsets[p]))
        offsets[p] += 1
    return records


def shards() -> HealthShards:
    return HealthShards(lambda: HealthStage(TOPICS))


def snapshots(outs: Sequence[Out]) -> list[Any]:
    return sorted((s["channel"], s["at"], orjson.dumps(s)) for s in of(outs, TOPICS.health))


def test_shards_judge_every_channel_as_one_stage_does() -> None:
    records = deltas()
    one = HealthStage(TOPICS)
    one_group = DeltaGroup()  # one stage judging by observer batch too, as a shard does
    many = shards()
    want: list[Out] = []
    got: list[Out] = []
    for start in range(0, len(records), 40):
        batch = records[start : start + 40]
        renumbered = [Record(r.topic, r.value, r.key, 0, start + i) for i, r in enumerate(batch)]
        want.extend(one_group.feed(one, renumbered))
        got.extend(many.process(batch))
    assert len(many.shards) > 1
    assert snapshots(got) == snapshots(want)
    assert [s["action"] for s in of(got, TOPICS.failover) if s["channel"] == "BCA"] == [
        s["action"] for s in of(want, TOPICS.failover) if s["channel"] == "BCA"
    ]
    assert "failover" in [s["action"] for s in of(got, TOPICS.failover)]


def test_a_shard_rebuilt_from_its_partition_carries_on_as_the_original() -> None:
    """What a worker taking a deltas partition over does: a fresh shard fed the partition's
    deltas up to where the group resumes it (outputs discarded) then sends, for the rest, what the
    previous owner would have sent."""
    records = [r for r in deltas() if r.key == b"BCA"]
    p = records[0].partition
    cut = len(records) // 2
    original = shards()
    original.process(records[:cut])
    want = original.process(records[cut:])
    rebuilt_owner = shards()
    fresh = rebuilt_owner.fresh(resume=False)
    group = DeltaGroup()
    group.feed(fresh, records[:cut])
    rebuilt_owner.install(p, fresh, group)
    got = rebuilt_owner.process(records[cut:])
    assert [o.value for o in got] == [o.value for o in want]
    assert any(o.topic == TOPICS.failover for o in got)  # the outage's signals are in the rest


@pytest.mark.parametrize("sizes", [(7, 13), (40, 3), (1, 500)])
def test_what_a_rebuilt_shard_sends_again_does_not_depend_on_batching(
    sizes: tuple[int, int],
) -> None:
    """The previous owner fetched its partition's deltas in batches of one size and sent what it
    judged; the group resumes the partition at an offset inside one of those batches; the new
    owner rebuilds up to there and fetches the rest in batches of another size. Every snapshot,
    signal and alert both sent is the same (a consumer's batches end anywhere, even inside one
    observer batch's deltas). The workers catch up on a backlog: an observer batch spans more
    event time than the allowed lateness, so a consumer batch ending inside one would be judged
    with some of its deltas and not others."""
    every = deltas(chunk=900)
    records = [r for r in every if r.partition == every[0].partition]
    before, after = sizes
    original = shards()
    sent: list[Out] = []
    for start in range(0, len(records), before):
        sent.extend(original.process(records[start : start + before]))
    cut = len(records) // 2 + before // 2  # inside one of the original's batches
    successor = shards()
    shard = successor.fresh(resume=False)
    group = DeltaGroup()
    group.feed(shard, records[:cut])
    successor.install(records[0].partition, shard, group)
    again: list[Out] = []
    for start in range(cut, len(records), after):
        again.extend(successor.process(records[start : start + after]))
    first = {_ident(o): o.value for o in sent}
    both = [o for o in again if _ident(o) in first]
    assert len(both) > 20
    assert [o.value for o in both] == [first[_ident(o)] for o in both]


def _ident(out: Out) -> tuple[Any, ...]:
    return identity(TOPICS, Sent(out.topic, out.key, out.value))


def test_signals_reach_every_shard_now_and_later() -> None:
    many = shards()
    many.process([Record(TOPICS.health_deltas, b"{}", b"X", 0, 0)])  # a shard for partition 0
    many.resume(_signal("BCA", "failover", "failed_over", _at(-60)))
    many.resume(_signal("BCA", "degrade", "degraded", _at(-600)))  # older: not kept
    assert many.shards[0].machines["BCA"]["state"] == "failed_over"
    later = many.shard(3)
    assert later.machines["BCA"]["state"] == "failed_over"
    assert many.drop(3) and not many.drop(3)


def test_views_merge_the_shards() -> None:
    many = shards()
    for batch_start in range(0, 4000, 400):
        txs = [tx(i, _at(i / 4), channel=("BCA", "BNI", "MANDIRI")[i % 3])
               for i in range(batch_start, batch_start + 400)]  # fmt: skip
        for out in HealthObserver(TOPICS, source="w").observe(txs):
            assert out.key is not None
            p = zlib.crc32(out.key.encode()) % PARTITIONS
            many.process([Record(out.topic, orjson.dumps(out.value), out.key.encode(), p)])
    view = many.channels_view()
    assert set(view["channels"]) == {"BCA", "BNI", "MANDIRI"}
    bni = many.channel_view("BNI")
    assert bni is not None and bni["state"] == "healthy"
    assert many.channel_view("NOPE") is None
    assert many.clock.started
    assert shards().channels_view()["channels"] == {}


def test_a_dropped_shard_takes_its_gauges_and_firing_alerts_off_this_worker() -> None:
    """After a hand-over, only the new owner exports a channel's state: a stale `failed_over`
    here would sit beside the new owner's `healthy` on every dashboard."""
    from streams import metrics

    def sample(name: str, **labels: str) -> float | None:
        return metrics.REGISTRY.get_sample_value(name, labels)

    many = shards()
    many.process(deltas(minutes=10))  # the BCA outage (from minute 5) is still on
    [bca] = [p for p, s in many.shards.items() if "BCA" in s.channels]
    names = [str(a["alert"]) for a in many.shards[bca].alerts.firing()]
    assert names  # the outage fires in that shard
    before = {name: sample("pantau_alerts_firing", alert=name) or 0.0 for name in names}
    assert sample("pantau_channel_state", channel="BCA", state="failed_over") == 1
    assert sample("pantau_provider_error_ratio", channel="BCA", window="5m") is not None
    assert many.drop(bca)
    assert sample("pantau_channel_state", channel="BCA", state="failed_over") is None
    assert sample("pantau_provider_error_ratio", channel="BCA", window="5m") is None
    for name, value in before.items():
        assert sample("pantau_alerts_firing", alert=name) == value - names.count(name)
