"""Live failover: two workers on 8 partitions, a BCA outage in the traffic, exactly one failover
and one restore on gateway.failover, and the worker that owns BCA shows it on /channels/BCA."""

from __future__ import annotations

import asyncio
import random
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.broker import free_port
from tests.integration.conftest import Received, Sandbox, WorkerProcess, consume

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
MINUTES = 26  # the restore comes about 4 minutes after the outage ends
OUTAGE = (8, 18)  # minutes
RATE = 3  # attempts per second of event time, over BCA, MANDIRI and BNI


def _traffic() -> list[tuple[float, bytes, bytes]]:
    """(event time offset in s, key, value) for MINUTES of traffic; BCA fails during OUTAGE."""
    rnd = random.Random(3)
    out = []
    for i in range(MINUTES * 60 * RATE):
        offset = i / RATE
        channel = ("BCA", "MANDIRI", "BNI")[i % 3]
        status, code, latency = "success", None, rnd.randint(90, 450)
        if channel == "BCA" and OUTAGE[0] * 60 <= offset < OUTAGE[1] * 60:
            status, code, latency = "failed", rnd.choice(["503", "504", "TIMEOUT"]), 30_000
        elif rnd.random() < 0.02:
            status, code = "failed", "INSUFFICIENT_FUNDS"
        customer = f"c-{rnd.randrange(400)}"
        value = {
            "transaction_id": f"trx-fo-{i:06d}",
            "merchant_id": "m-1",
            "customer_id": customer,
            "amount": "50000.00",
            "currency": "IDR",
            "method": "virtual_account",
            "channel": channel,
            "status": status,
            "error_code": code,
            "latency_ms": latency,
            "created_at": (START + timedelta(seconds=offset)).isoformat(),
        }
        out.append((offset, customer.encode(), orjson.dumps(value)))
    return out


async def _paced(
    sandbox: Sandbox, traffic: list[tuple[float, bytes, bytes]], step_s: float, pause_s: float
) -> None:
    """Produce the traffic in event-time steps of `step_s`, pausing `pause_s` after each."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=sandbox.broker.bootstrap, linger_ms=5)
    await producer.start()
    try:
        step_end = step_s
        pending: list[Any] = []
        for offset, key, value in traffic:
            if offset >= step_end:
                await asyncio.gather(*pending)
                pending = []
                await asyncio.sleep(pause_s)
                step_end += step_s
            pending.append(await producer.send(sandbox.topics.transactions, value, key=key))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None


def _around(sandbox: Sandbox, at: datetime) -> str:
    """BCA's snapshots before a signal, to say why it came when it did."""
    got = consume(sandbox.broker, [sandbox.topics.health], lambda g: False, timeout=5)
    rows = [
        (m.partition, h["at"][11:19], h["state"], h["consecutive_provider_failures"],
         h["windows"]["1m"]["attempts"], h["windows"]["1m"]["provider_errors"])
        for m in got
        if m.key == b"BCA"
        for h in [m.json()]
        if at - timedelta(minutes=2) <= datetime.fromisoformat(h["at"]) <= at
    ]  # fmt: skip
    return "\n".join(map(str, rows))


def _bca(signals: list[Received]) -> list[dict[str, Any]]:
    return [m.json() for m in signals if m.key == b"BCA"]


def _start(
    sandbox: Sandbox, tmp_path: Path, n: int
) -> tuple[list[WorkerProcess], list[int], list[int]]:
    """`n` workers, each with its own web and metrics port, up and in the group."""
    workers: list[WorkerProcess] = []
    web_ports: list[int] = []
    metrics_ports: list[int] = []
    for i in range(n):
        env = dict(sandbox.env)
        web_ports.append(free_port())
        metrics_ports.append(free_port())
        env.update(PANTAU_WEB_PORT=str(web_ports[-1]), PANTAU_METRICS_PORT=str(metrics_ports[-1]))
        workers.append(WorkerProcess(env, tmp_path / f"worker-{i}.log"))
    # Up and in the group before traffic starts (a join takes a few seconds on Tansu).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(_get(f"http://127.0.0.1:{p}/channels")[0] == 200 for p in web_ports):
            break
        time.sleep(0.5)
    else:
        for w in workers:
            w.stop()
        pytest.fail("workers did not start:\n" + workers[0].log()[-2000:])
    time.sleep(8)
    return workers, web_ports, metrics_ports


def test_bca_outage_fails_over_and_restores_once(sandbox: Sandbox, tmp_path: Path) -> None:
    topics = sandbox.topics
    assert sandbox.settings.partitions == 8
    workers, web_ports, metrics_ports = _start(sandbox, tmp_path, 2)
    try:
        # Traffic arrives as it would live, 10 s of event time at a time (far faster than real
        # time), so partitions advance together within the allowed lateness, as they do
        # when events come in as they happen.
        traffic = _traffic()
        asyncio.run(_paced(sandbox, traffic, step_s=10.0, pause_s=0.03))

        def restored(got: list[Received]) -> bool:
            return any(s["action"] == "restore" for s in _bca(got))

        got = consume(sandbox.broker, [topics.failover], restored, timeout=120)
        time.sleep(3)  # anything a second worker or a late batch would add
        got = consume(sandbox.broker, [topics.failover], lambda g: len(g) >= len(got), timeout=15)
        for w in workers:
            assert w.process.poll() is None, w.log()[-3000:]
        bca = _bca(got)
        actions = [s["action"] for s in bca]
        assert actions.count("failover") == 1, (actions, workers[0].log()[-2000:])
        assert actions.count("restore") == 1, actions
        assert actions[-3:] == ["failover", "probe", "restore"]
        failover = bca[actions.index("failover")]
        at = datetime.fromisoformat(failover["at"])
        assert (
            START + timedelta(minutes=OUTAGE[0])
            < at
            <= START + timedelta(minutes=OUTAGE[0], seconds=60)
        ), _around(sandbox, at)
        assert set(failover["alternatives"]) <= {"MANDIRI", "BNI"}
        others = [m.json() for m in got if m.key != b"BCA"]
        assert [s for s in others if s["action"] == "failover"] == []

        # Both workers took a share of the partitions: each pre-aggregated part of BCA's traffic.
        for port in metrics_ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            seen = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("pantau_transactions_total{") and 'channel="BCA"' in line
            )
            assert 0 < seen < len(traffic) / 3, (port, seen)

        # The worker that owns BCA's health answers for it; the other does not know it.
        views = [_get(f"http://127.0.0.1:{p}/channels/BCA") for p in web_ports]
        owners = [body for status, body in views if status == 200]
        assert len(owners) == 1, views
        assert owners[0]["state"] == "healthy"
        assert owners[0]["last_signal"]["action"] == "restore"
        assert owners[0]["windows"]["1h"]["provider_errors"] > 100
    finally:
        for w in workers:
            w.stop()
