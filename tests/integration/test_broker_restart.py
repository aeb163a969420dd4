"""The worker survives the broker going away and coming back: it keeps running, says so in its
metrics, does not spin, and carries on once the broker (restarted, topics recreated) is back."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from streams.broker import EmbeddedBroker, free_port
from streams.settings import Settings
from streams.topics import Topics
from tests.conftest import DESIGN_TRANSACTION
from tests.integration.conftest import Broker, Received, WorkerProcess, consume, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AWAY_S = 10.0  # how long the broker stays away
CPU_LIMIT = 0.25  # of one core, while the broker is away
LOG_LINES_PER_S_LIMIT = 2.0  # a reconnecting worker should say so, not print every retry


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _gauge(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def _wait_gauge(port: int, name: str, want: float, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    value = _gauge(port, name)
    while value != want and time.monotonic() < deadline:
        time.sleep(0.5)
        value = _gauge(port, name)
    return value


async def _list_topics(bootstrap: str) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


@dataclass
class Outage:
    """What the scenario measured."""

    before: set[str] = field(default_factory=set)
    after: set[str] = field(default_factory=set)
    connected_before: float | None = None
    connected_away: float | None = None
    connected_after: float | None = None
    alive_away: bool = False
    alive_after: bool = False
    cpu_away: float = 0.0  # share of one core
    log_lines_away: int = 0
    away_s: float = 0.0
    topics_after_restart: set[str] = field(default_factory=set)
    log: str = ""


def _send(url: str, topics: Topics, prefix: str, n: int) -> set[str]:
    msgs = []
    for i in range(n):
        tx = copy.deepcopy(DESIGN_TRANSACTION)
        tx["transaction_id"] = f"{prefix}-{i}"
        msgs.append((topics.transactions, tx["customer_id"].encode(), orjson.dumps(tx)))
    produce(Broker(url), msgs)
    return {f"{prefix}-{i}" for i in range(n)}


def _enriched_ids(url: str, topics: Topics, want: set[str], timeout: float) -> set[str]:
    def done(got: list[Received]) -> bool:
        return want <= {m.json()["transaction_id"] for m in got}

    got = consume(Broker(url), [topics.enriched], done, timeout)
    return {m.json()["transaction_id"] for m in got} & want


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    """A worker on its own embedded broker; the broker stops for AWAY_S and a new one starts on
    the same port with the topics recreated (Tansu keeps nothing across a restart)."""
    tmp = tmp_path_factory.mktemp("outage")
    run = uuid.uuid4().hex[:8]
    settings = Settings(app_id=f"pantau-{run}", embedded=True)
    topics = settings.topics
    first = EmbeddedBroker(settings)
    first.start()
    port = first.port
    assert port is not None
    metrics_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANTAU_")}
    env.update(
        PANTAU_BROKER=first.url,
        PANTAU_APP_ID=settings.app_id,
        PANTAU_EMBEDDED="1",
        PANTAU_WEB_PORT=str(free_port()),
        PANTAU_METRICS_PORT=str(metrics_port),
        PYTHONUNBUFFERED="1",
        TMPDIR=str(tmp),
    )
    worker = WorkerProcess(env, tmp / "worker.log")
    second: EmbeddedBroker | None = None
    result = Outage()
    try:
        asyncio.run(_create_marker(first.bootstrap))
        want = _send(first.url, topics, f"before-{run}", 5)
        result.before = _enriched_ids(first.url, topics, want, 90)
        result.connected_before = _wait_gauge(metrics_port, "pantau_broker_connected", 1.0, 15)

        lines_at_stop = len(worker.log().splitlines())
        first.stop()
        cpu0, t0 = _cpu_seconds(worker.process.pid), time.monotonic()
        result.connected_away = _wait_gauge(metrics_port, "pantau_broker_connected", 0.0, AWAY_S)
        time.sleep(max(0.0, AWAY_S - (time.monotonic() - t0)))
        result.away_s = time.monotonic() - t0
        result.cpu_away = (_cpu_seconds(worker.process.pid) - cpu0) / result.away_s
        result.log_lines_away = len(worker.log().splitlines()) - lines_at_stop
        result.alive_away = worker.process.poll() is None

        second = EmbeddedBroker(settings, port=port)
        second.start()
        result.topics_after_restart = asyncio.run(_list_topics(second.bootstrap))
        want = _send(second.url, topics, f"after-{run}", 5)
        result.after = _enriched_ids(second.url, topics, want, 120)
        result.connected_after = _wait_gauge(metrics_port, "pantau_broker_connected", 1.0, 15)
        result.alive_after = worker.process.poll() is None
        result.log = worker.log()
        yield result
    finally:
        # Stop the worker while a broker is still there (a worker whose broker is gone takes
        # long to shut down), then the broker.
        worker.stop(timeout=30)
        if second is not None:
            second.stop()
        first.stop()


MARKER_TOPIC = "pantau-restart-marker"


async def _create_marker(bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(MARKER_TOPIC, 1, 1)])
    finally:
        await admin.close()


def test_worker_processes_before_the_outage(outage: Outage) -> None:
    assert len(outage.before) == 5
    assert outage.connected_before == 1.0


def test_worker_survives_the_broker_going_away(outage: Outage) -> None:
    assert outage.alive_away, outage.log[-3000:]
    assert outage.connected_away == 0.0  # pantau_broker_connected shows the outage


def test_worker_does_not_spin_while_the_broker_is_away(outage: Outage) -> None:
    print(
        f"broker away {outage.away_s:.1f} s: worker CPU {outage.cpu_away:.1%} of a core, "
        f"{outage.log_lines_away} log lines"
    )
    assert outage.cpu_away < CPU_LIMIT, f"{outage.cpu_away:.0%} of a core while away"


def test_worker_carries_on_after_the_broker_returns(outage: Outage) -> None:
    assert outage.alive_after, outage.log[-3000:]
    assert len(outage.after) == 5, "transactions sent after the restart were not processed"
    assert outage.connected_after == 1.0


def test_worker_logs_the_outage_and_the_recovery_once_each(outage: Outage) -> None:
    log = outage.log.lower()
    assert log.count("broker unreachable") == 1, outage.log[-3000:]
    assert log.count("reachable again") == 1, outage.log[-3000:]


def test_embedded_broker_restart_loses_every_topic(outage: Outage) -> None:
    """Tansu's gap: it keeps nothing across a restart, so topics must be recreated (the test's
    second broker recreates Pantau's own; the marker topic made on the first is gone)."""
    assert MARKER_TOPIC not in outage.topics_after_restart
    assert Topics().transactions in outage.topics_after_restart


def test_worker_logs_the_outage_without_flooding(outage: Outage) -> None:
    rate = outage.log_lines_away / outage.away_s
    lines, away = outage.log_lines_away, outage.away_s
    assert rate < LOG_LINES_PER_S_LIMIT, f"{lines} log lines in {away:.0f} s"


STOP_LIMIT_S = 15.0


def test_worker_stops_on_sigterm_while_the_broker_is_away(tmp_path: Path) -> None:
    """A rolling restart during a broker outage: the worker must exit (its offsets stay
    uncommitted, so its successor redelivers; nothing is lost) rather than hang until SIGKILL."""
    settings = Settings(app_id=f"pantau-{uuid.uuid4().hex[:8]}", embedded=True)
    metrics_port = free_port()
    with EmbeddedBroker(settings) as embedded:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PANTAU_")}
        env.update(
            PANTAU_BROKER=embedded.url,
            PANTAU_APP_ID=settings.app_id,
            PANTAU_EMBEDDED="1",
            PANTAU_WEB_PORT="0",
            PANTAU_METRICS_PORT=str(metrics_port),
            PYTHONUNBUFFERED="1",
            TMPDIR=str(tmp_path),
        )
        worker = WorkerProcess(env, tmp_path / "worker.log")
        try:
            assert _wait_gauge(metrics_port, "pantau_broker_connected", 1.0, 60) == 1.0
            embedded.stop()
            time.sleep(2)
            worker.process.terminate()
            started = time.monotonic()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(STOP_LIMIT_S)
            stopped_in = time.monotonic() - started
            assert worker.process.poll() is not None, f"still running after {stopped_in:.0f} s"
        finally:
            worker.process.kill()
            worker.stop(timeout=5)
