"""Integration fixtures: one embedded broker per session (or PANTAU_BROKER), isolated topics per
test, a worker subprocess, and small produce/consume helpers over real Kafka connections."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.broker import EmbeddedBroker, bootstrap_servers, ensure_topics, free_port
from streams.settings import Settings
from streams.topics import Topics

PANTAU = str(Path(sys.executable).parent / "pantau")


@dataclass
class Broker:
    """Where the integration tests' broker is: a Faust-style URL and host:port list."""

    url: str

    @property
    def bootstrap(self) -> list[str]:
        return bootstrap_servers(self.url)


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """The session's broker: the embedded Tansu, or the real Kafka that PANTAU_BROKER names."""
    real = os.environ.get("PANTAU_BROKER")
    if real:
        yield Broker(real)
        return
    with EmbeddedBroker(Settings(embedded=True)) as embedded:
        yield Broker(embedded.url)


@dataclass
class Sandbox:
    """A test's own app id and topic names on the shared broker, created up front."""

    broker: Broker
    settings: Settings
    env: dict[str, str] = field(default_factory=dict)

    @property
    def topics(self) -> Topics:
        return self.settings.topics


@pytest.fixture
def sandbox(broker: Broker, tmp_path: Path) -> Sandbox:
    """Unique topics (every Topics field prefixed) and app id for one test, so tests sharing the
    session broker never read each other's messages. `env` runs `pantau` subprocesses on them."""
    run = uuid.uuid4().hex[:8]
    names = {name: f"t{run}.{default}" for name, default in Topics().model_dump().items()}
    web_port, metrics_port = free_port(), free_port()
    settings = Settings(
        broker=broker.url,
        app_id=f"pantau-{run}",
        topics=Topics(**names),
        embedded=not os.environ.get("PANTAU_BROKER"),
        web_port=web_port,
        metrics_port=metrics_port,
    )
    ensure_topics(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANTAU_")}
    env.update(
        PANTAU_BROKER=broker.url,
        PANTAU_APP_ID=settings.app_id,
        PANTAU_EMBEDDED="1" if settings.embedded else "0",
        PANTAU_WEB_PORT=str(web_port),
        PANTAU_METRICS_PORT=str(metrics_port),
        PYTHONUNBUFFERED="1",
        TMPDIR=str(tmp_path),
    )
    for name, topic in names.items():
        env[f"PANTAU_TOPICS__{name.upper()}"] = topic
    return Sandbox(broker, settings, env)


class WorkerProcess:
    """`pantau worker` in a subprocess; stopped with SIGTERM (then SIGKILL) at teardown."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.started_at = time.time()
        self.process = subprocess.Popen(
            [PANTAU, "worker"], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode


@pytest.fixture
def start_worker(sandbox: Sandbox, tmp_path: Path) -> Iterator[Callable[[], WorkerProcess]]:
    """Starts `pantau worker` subprocesses on the sandbox's topics; all stopped at teardown."""
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        worker = WorkerProcess(sandbox.env, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


# ---- plain Kafka clients (aiokafka), used synchronously from tests ----------------------------


@dataclass
class Sent:
    """Where a produced message landed."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int
    offset: int


async def _produce(
    bootstrap: list[str], messages: Iterable[tuple[str, bytes | None, bytes]]
) -> list[Sent]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        items = list(messages)
        futures = [await producer.send(t, v, key=k) for t, k, v in items]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [Sent(t, k, v, m.partition, m.offset) for (t, k, v), m in zip(items, metas, strict=True)]


def produce(broker: Broker, messages: Iterable[tuple[str, bytes | None, bytes]]) -> list[Sent]:
    """Send (topic, key, value) messages and wait until all are acknowledged."""
    return asyncio.run(_produce(broker.bootstrap, messages))


def produce_json(broker: Broker, topic: str, values: Iterable[tuple[str, Any]]) -> list[Sent]:
    """Send (key, JSON-able value) pairs to one topic."""
    return produce(broker, ((topic, k.encode(), orjson.dumps(v)) for k, v in values))


@dataclass
class Received:
    """A consumed message with the wall-clock time the test saw it."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int
    offset: int
    timestamp: int  # the message's Kafka timestamp (ms): when its producer created it
    seen_at: float  # when the test read it (time.time())

    def json(self) -> Any:
        return orjson.loads(self.value)


async def _consume(
    bootstrap: list[str],
    topics: list[str],
    done: Callable[[list[Received]], bool],
    timeout: float,
) -> list[Received]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[Received] = []
    deadline = time.monotonic() + timeout
    try:
        while not done(got) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for tp, messages in batches.items():
                got.extend(
                    Received(
                        tp.topic, m.key, m.value or b"", tp.partition, m.offset, m.timestamp, now
                    )
                    for m in messages
                )
    finally:
        await consumer.stop()
    return got


def consume(
    broker: Broker,
    topics: list[str],
    done: Callable[[list[Received]], bool],
    timeout: float = 60.0,
) -> list[Received]:
    """Read the topics from the beginning until `done(messages so far)` or the timeout."""
    return asyncio.run(_consume(broker.bootstrap, topics, done, timeout))
