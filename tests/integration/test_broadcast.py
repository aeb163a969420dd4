"""Broadcast stages: every reader sees every partition from the beginning; a failing record is
dead-lettered with the error, the rest of its batch still goes through."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from streams.core import Out, Record, Stage
from streams.live import BroadcastReader, Sender, StageRunner
from tests.integration.conftest import Received, Sandbox, consume, produce

pytestmark = pytest.mark.integration


class EchoStage(Stage):
    """Echoes each record's value to an output topic; raises on the value b"boom"."""

    name = "echo"
    broadcast = True

    def __init__(self, source: str, sink: str) -> None:
        self.source = source
        self.sink = sink
        self.seen: list[tuple[int | None, int | None]] = []

    @property
    def consumes(self) -> tuple[str, ...]:
        return (self.source,)

    def process(self, records: Sequence[Record]) -> list[Out]:
        if any(r.value == b"boom" for r in records):
            raise ValueError("boom is not allowed")
        self.seen.extend((r.partition, r.offset) for r in records)
        return [Out(self.sink, None, {"value": r.value.decode()}) for r in records]


async def _run_two_readers(
    sandbox: Sandbox, late: list[tuple[str, bytes | None, bytes]]
) -> list[EchoStage]:
    from aiokafka import AIOKafkaProducer

    topics = sandbox.topics
    producer = AIOKafkaProducer(bootstrap_servers=sandbox.broker.bootstrap, linger_ms=5)
    await producer.start()

    async def send(topic: str, key: bytes | None, value: bytes, partition: int | None) -> object:
        return await producer.send(topic, value, key=key, partition=partition)

    stages = [EchoStage(topics.rules, topics.alerts) for _ in range(2)]
    readers = [
        BroadcastReader(StageRunner(stage, sandbox.settings, Sender(send)), sandbox.settings)
        for stage in stages
    ]
    tasks = [asyncio.create_task(r.run()) for r in readers]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for r in readers)), 30)
        for topic, key, value in late:
            await (await producer.send(topic, value, key=key))
        for _ in range(100):
            if all(len(s.seen) >= 40 + len(late) for s in stages):
                break
            await asyncio.sleep(0.1)
    finally:
        for r in readers:
            r.stop()
        await asyncio.gather(*tasks)
        await producer.stop()
    return stages


def test_every_reader_sees_every_partition_and_failures_are_dead_lettered(
    sandbox: Sandbox,
) -> None:
    topics = sandbox.topics
    early = [(topics.rules, f"pack-{i}".encode(), f"v{i}".encode()) for i in range(40)]
    early.insert(17, (topics.rules, b"pack-x", b"boom"))
    sent = produce(sandbox.broker, early)
    assert len({s.partition for s in sent}) > 1  # spread over partitions
    late = [(topics.rules, f"late-{i}".encode(), f"late{i}".encode()) for i in range(5)]

    stages = asyncio.run(_run_two_readers(sandbox, late))

    boom = next(s for s in sent if s.value == b"boom")
    for stage in stages:
        positions = set(stage.seen)
        assert {(s.partition, s.offset) for s in sent if s.value != b"boom"} <= positions
        assert len(stage.seen) == 40 + len(late)
        assert (boom.partition, boom.offset) not in positions

    def done(got: list[Received]) -> bool:
        return sum(m.topic == topics.alerts for m in got) >= 2 * 45 and any(
            m.topic == topics.deadletter for m in got
        )

    got = consume(sandbox.broker, [topics.alerts, topics.deadletter], done, timeout=20)
    echoed = sorted(m.json()["value"] for m in got if m.topic == topics.alerts)
    assert echoed == sorted(
        [v.decode() for _, _, v in early if v != b"boom"] * 2 + [f"late{i}" for i in range(5)] * 2
    )
    letters = [m.json() for m in got if m.topic == topics.deadletter]
    assert len(letters) == 2  # one per reader
    for letter in letters:
        assert letter["reason"] == "stage echo failed: ValueError: boom is not allowed"
        assert (letter["partition"], letter["offset"]) == (boom.partition, boom.offset)
        assert letter["raw"] == "boom"
