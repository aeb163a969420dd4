"""The batched sender on a real broker: a batch's outputs all arrive; one the broker can never take
(too large) is counted and dropped instead of stalling the partition forever."""

from __future__ import annotations

import asyncio

import pytest

from streams import metrics
from streams.core import Out
from streams.live import Sender
from tests.integration.conftest import Sandbox, consume

pytestmark = pytest.mark.integration


async def _send(sandbox: Sandbox, outs: list[Out]) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=sandbox.broker.bootstrap, linger_ms=5)
    await producer.start()

    async def send(topic: str, key: bytes | None, value: bytes, partition: int | None) -> object:
        return await producer.send(topic, value, key=key, partition=partition)

    sender = Sender(send)
    try:
        await asyncio.wait_for(sender.send_all(outs), 30)
    finally:
        await producer.stop()
    return sender.sent


def test_a_batch_is_delivered_and_an_impossible_output_is_dropped(sandbox: Sandbox) -> None:
    topic = sandbox.topics.alerts
    dropped = metrics.child(metrics.OUTPUTS_DROPPED, topic, "MessageSizeTooLargeError")
    before = dropped._value.get()
    outs = [Out(topic, f"k{i}", {"i": i}) for i in range(200)]
    outs.insert(50, Out(topic, "huge", {"blob": "x" * 2_000_000}))

    sent = asyncio.run(_send(sandbox, outs))

    assert sent == 200
    assert dropped._value.get() == before + 1
    got = consume(sandbox.broker, [topic], lambda got: len(got) >= 200, timeout=20)
    assert sorted(m.json()["i"] for m in got) == list(range(200))
    assert all(m.key == f"k{m.json()['i']}".encode() for m in got)
