"""The embedded broker: it answers, holds every topic with the configured partitions, and stops."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess

import pytest

from streams.broker import BrokerError, EmbeddedBroker, create_topics, ensure_topics
from streams.settings import Settings
from tests.integration.conftest import PANTAU, Broker, Sandbox, consume, produce

pytestmark = pytest.mark.integration


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _partitions(bootstrap: list[str]) -> dict[str, int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = await admin.list_topics()
        described = await admin.describe_topics(names)
        return {d["topic"]: len(d["partitions"]) for d in described}
    finally:
        await admin.close()


def test_embedded_broker_creates_every_topic_and_stops(tmp_path: object) -> None:
    settings = Settings(partitions=3)
    with EmbeddedBroker(settings) as embedded:
        port = embedded.port
        assert port is not None and _listening(port)
        found = asyncio.run(_partitions([embedded.bootstrap]))
        assert {t: found.get(t) for t in settings.topics.all()} == dict.fromkeys(
            settings.topics.all(), 3
        )
        broker = Broker(embedded.url)
        topic = settings.topics.transactions
        sent = produce(broker, [(topic, b"k", b"hello")])
        got = consume(broker, [topic], lambda got: len(got) >= 1, timeout=20)
        assert [(m.value, m.partition, m.offset) for m in got] == [
            (b"hello", sent[0].partition, sent[0].offset)
        ]
        process = embedded.process
        assert process is not None
    assert process.poll() is not None
    assert not _listening(port)


def test_existing_topic_with_other_partition_count_is_refused(sandbox: Sandbox) -> None:
    url = sandbox.broker.url
    name = f"{sandbox.settings.app_id}.odd"
    asyncio.run(create_topics(url, [name], partitions=2))
    with pytest.raises(BrokerError, match=r"has 2 partitions, expected 8"):
        asyncio.run(create_topics(url, [name], partitions=8))
    # Creating what already exists with the right count is a no-op.
    assert ensure_topics(sandbox.settings) == []


def test_pantau_broker_runs_in_the_foreground_until_ctrl_c() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANTAU_")}
    process = subprocess.Popen(
        [PANTAU, "broker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("kafka://127.0.0.1:"), url
        port = int(url.rsplit(":", 1)[1])
        found = asyncio.run(_partitions([url.split("://", 1)[1]]))
        assert found.get("payments.transactions") == Settings().partitions
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        assert not _listening(port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_taken_port_fails_fast_with_the_broker_output() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = EmbeddedBroker(port=port)
        with pytest.raises(BrokerError, match=r"(?s)tansu exited .*Address in use"):
            broker.start()
        assert broker.process is None


async def _auto_create(bootstrap: list[str], topic: str) -> None:
    """What a worker reconnecting to a restarted broker does first: ask for a topic it reads,
    which the broker then creates with its default partition count."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        await asyncio.sleep(0.5)
    finally:
        await consumer.stop()


def test_a_fresh_embedded_broker_recreates_topics_a_client_auto_created(sandbox: Sandbox) -> None:
    bootstrap = sandbox.broker.bootstrap
    topic = sandbox.topics.rules
    asyncio.run(_auto_create(bootstrap, f"{topic}.auto"))
    settings = sandbox.settings.model_copy(
        update={"topics": sandbox.topics.model_copy(update={"rules": f"{topic}.auto"})}
    )
    assert asyncio.run(_partitions(bootstrap))[f"{topic}.auto"] != settings.partitions
    with pytest.raises(BrokerError, match="partitions"):
        ensure_topics(settings, sandbox.broker.url)
    ensure_topics(settings, sandbox.broker.url, recreate=True)
    assert asyncio.run(_partitions(bootstrap))[f"{topic}.auto"] == settings.partitions
