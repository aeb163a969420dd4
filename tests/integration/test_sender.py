"""The batched sender on a real broker: a batch's outputs all arrive; one the broker can never take
(too large) is counted and dropped instead of stalling the partition forever. Sent as record
batches, outputs land on the partitions one send per output would have chosen."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams import metrics
from streams.core import Out
from streams.live import Sender
from tests.integration.conftest import Sandbox, consume

pytestmark = pytest.mark.integration


async def _send(sandbox: Sandbox, outs: list[Out], *, batched: bool) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=sandbox.broker.bootstrap, linger_ms=5)
    await producer.start()

    async def send(topic: str, key: bytes | None, value: bytes, partition: int | None) -> object:
        return await producer.send(topic, value, key=key, partition=partition)

    async def started() -> Any:
        return producer

    sender = Sender(send, producer=started if batched else None)
    try:
        await asyncio.wait_for(sender.send_all(outs), 30)
    finally:
        await producer.stop()
    return sender.sent


@pytest.mark.parametrize("batched", [False, True], ids=["one send each", "record batches"])
def test_a_batch_is_delivered_and_an_impossible_output_is_dropped(
    sandbox: Sandbox, batched: bool
) -> None:
    topic = sandbox.topics.alerts
    dropped = metrics.child(metrics.OUTPUTS_DROPPED, topic, "MessageSizeTooLargeError")
    before = dropped._value.get()
    outs = [Out(topic, f"k{i}", {"i": i}) for i in range(200)]
    outs.insert(50, Out(topic, "huge", {"blob": "x" * 2_000_000}))

    sent = asyncio.run(_send(sandbox, outs, batched=batched))

    assert sent == 200
    assert dropped._value.get() == before + 1
    got = consume(sandbox.broker, [topic], lambda got: len(got) >= 200, timeout=20)
    assert sorted(m.json()["i"] for m in got) == list(range(200))
    assert all(m.key == f"k{m.json()['i']}".encode() for m in got)
    by_partition: dict[int, list[int]] = {}
    for m in sorted(got, key=lambda m: (m.partition, m.offset)):
        by_partition.setdefault(m.partition, []).append(m.json()["i"])
    assert all(order == sorted(order) for order in by_partition.values())  # in order per key


def test_record_batches_land_where_one_send_each_would(sandbox: Sandbox) -> None:
    """Keyed outputs keep their key's partition (consumers of payments.enriched and
    fraud.decisions rely on it), and an output given a partition goes there."""
    each_topic, batch_topic = sandbox.topics.alerts, sandbox.topics.decisions
    keys = [f"trx-{i:05d}" for i in range(300)]

    def outs(topic: str) -> list[Out]:
        return [Out(topic, key, {"key": key}) for key in keys] + [
            Out(topic, "pinned", {"key": "pinned"}, partition=1)
        ]

    assert asyncio.run(_send(sandbox, outs(each_topic), batched=False)) == 301
    assert asyncio.run(_send(sandbox, outs(batch_topic), batched=True)) == 301

    got = consume(sandbox.broker, [each_topic, batch_topic], lambda got: len(got) >= 602, 20)
    where: dict[str, dict[bytes | None, int]] = {each_topic: {}, batch_topic: {}}
    for m in got:
        where[m.topic][m.key] = m.partition
    assert len(where[batch_topic]) == 301
    assert where[batch_topic] == where[each_topic]
    assert where[batch_topic][b"pinned"] == 1
    assert len(set(where[batch_topic].values())) > 2  # spread by key, not one partition
