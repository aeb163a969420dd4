"""No card number and no secret leaves a live worker: simulated traffic with card numbers planted in
transactions and callback bodies goes through `pantau worker` on the embedded broker; every
message on every topic it writes, everything it printed and its /metrics are scanned."""

from __future__ import annotations

import os
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streams.broker import ensure_topics, free_port
from streams.settings import Settings
from streams.sim_callbacks import SIM_SECRETS, sim_settings_overrides
from streams.simulator import generate
from streams.topics import Topics
from tests.integration.conftest import (
    Broker,
    Received,
    Sandbox,
    WorkerProcess,
    consume,
    produce,
)
from tests.pipeline.test_leaks import (
    card_callbacks,
    card_transactions,
    exposition_texts,
    scan,
    scan_json,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = datetime(2026, 11, 21, 1, 0, tzinfo=UTC)


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _sandbox(broker: Broker, tmp: Path) -> Sandbox:
    """The conftest's sandbox (own topics and app id on the session broker), for one module."""
    run = uuid.uuid4().hex[:8]
    names = {name: f"t{run}.{default}" for name, default in Topics().model_dump().items()}
    settings = Settings(
        broker=broker.url,
        app_id=f"pantau-{run}",
        topics=Topics(**names),
        embedded=not os.environ.get("PANTAU_BROKER"),
        web_port=0,
        metrics_port=free_port(),
    )
    ensure_topics(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANTAU_")}
    env.update(
        PANTAU_BROKER=broker.url,
        PANTAU_APP_ID=settings.app_id,
        PANTAU_EMBEDDED="1" if settings.embedded else "0",
        PANTAU_WEB_PORT="0",
        PANTAU_METRICS_PORT=str(settings.metrics_port),
        PYTHONUNBUFFERED="1",
        TMPDIR=str(tmp),
    )
    for name, topic in names.items():
        env[f"PANTAU_TOPICS__{name.upper()}"] = topic
    return Sandbox(broker, settings, env)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, broker: Broker) -> dict[str, Any]:
    """One worker over a short simulated run plus the planted card numbers; what it wrote."""
    tmp = tmp_path_factory.mktemp("live-leaks")
    box = _sandbox(broker, tmp)
    topics = box.topics
    secrets = tmp / "secrets.yaml"
    secrets.write_text(yaml.safe_dump(sim_settings_overrides()), encoding="utf-8")
    env = {**box.env, "PANTAU_SECRETS_FILE": str(secrets)}
    worker = WorkerProcess(env, tmp / "worker.log")
    try:
        messages: list[tuple[str, bytes | None, bytes]] = []
        for ev in generate(
            seed=5,
            duration=timedelta(minutes=3),
            tx_per_second=3.0,
            customers=200,
            merchants=20,
            invalid_rate=0.05,
            scenarios=("callback-storm",),
            start=START,
            topics=topics,
        ):
            key = ev.key.encode() if ev.key is not None else None
            messages.append((ev.topic, key, orjson.dumps(ev.value)))
        at = START + timedelta(minutes=2)
        for tx in card_transactions(at):
            messages.append((topics.transactions, tx["customer_id"].encode(), orjson.dumps(tx)))
        for cb in card_callbacks(at):
            messages.append((topics.callbacks, cb["callback_id"].encode(), orjson.dumps(cb)))
        produce(box.broker, messages)

        planted = {f"trx-pan-{i}" for i in range(len(card_transactions(at)))}
        planted |= {"cb-pan-2", "cb-pan-3", "cb-pan-4"}

        def done(got: list[Received]) -> bool:
            raws = [str(m.json().get("raw")) for m in got if m.topic == topics.deadletter]
            lettered = {p for p in planted if any(f'"{p}"' in r for r in raws)}
            fact = any(
                m.topic == topics.settlement and m.json().get("callback_id") == "cb-pan-1"
                for m in got
            )
            return lettered == planted and fact

        names = [*topics.outputs(), *topics.internal()]
        got = consume(box.broker, names, done, 120)
        exposition = _metrics(int(env["PANTAU_METRICS_PORT"]))
    finally:
        code = worker.stop()
    settings = Settings(**yaml.safe_load(secrets.read_text()))
    return {
        "messages": got,
        "done": done(got),
        "log": worker.log(),
        "exit": code,
        "metrics": exposition,
        "secrets": settings.secret_values(),
        "topics": topics,
    }


def test_the_worker_dead_lettered_the_planted_card_numbers(live: dict[str, Any]) -> None:
    assert live["done"], "the planted inputs did not all come out in time"
    assert live["exit"] == 0, live["log"][-3000:]
    assert len(live["secrets"]) == len(SIM_SECRETS)


def test_no_card_number_on_any_topic(live: dict[str, Any]) -> None:
    values = [m.json() for m in live["messages"]] + [
        m.key.decode() for m in live["messages"] if m.key
    ]
    findings = scan_json("topics", values, live["secrets"])
    assert not [f for f in findings if f.what.startswith("card")], findings[:10]


def test_no_secret_on_any_topic(live: dict[str, Any]) -> None:
    values = [m.json() for m in live["messages"]]
    assert len(values) > 100
    assert not scan_json("topics", values, live["secrets"])


def test_no_card_number_or_secret_in_the_worker_output(live: dict[str, Any]) -> None:
    log: str = live["log"]
    assert "pantau worker" in log  # the capture holds the worker's own lines
    assert not scan("worker log", log, live["secrets"])


def test_no_card_number_or_secret_in_metrics(live: dict[str, Any]) -> None:
    texts = exposition_texts(live["metrics"])
    assert "pantau_dead_letters_total" in texts
    assert not scan("/metrics", texts, live["secrets"])
