"""A real worker on the embedded broker: every input ends up enriched or dead-lettered, once."""

from __future__ import annotations

import copy
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.pipeline import build_stages
from tests.conftest import DESIGN_TRANSACTION
from tests.integration.conftest import (
    Received,
    Sandbox,
    Sent,
    WorkerProcess,
    consume,
    produce,
)

pytestmark = pytest.mark.integration

N_VALID = 6000
PAN = "4111111111111111"
START = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


def valid(i: int) -> dict[str, Any]:
    tx = copy.deepcopy(DESIGN_TRANSACTION)
    tx.update(
        transaction_id=f"trx-it-{i:06d}",
        customer_id=f"c-{i % 97}",
        status="success" if i % 5 else "failed",
        created_at=(START + timedelta(milliseconds=50 * i)).isoformat(),
    )
    return tx


def _without(field: str, tx: dict[str, Any]) -> dict[str, Any]:
    del tx[field]
    return tx


# Each kind of invalid input: how to make it, and what its dead letter's reason must say.
INVALID: dict[str, tuple[Callable[[int], bytes], str]] = {
    "bad_amount": (lambda i: orjson.dumps({**valid(i), "amount": "0"}), "amount:"),
    "usd": (lambda i: orjson.dumps({**valid(i), "currency": "USD"}), "currency:"),
    "missing_field": (lambda i: orjson.dumps(_without("customer_id", valid(i))), "customer_id:"),
    "card_number": (lambda i: orjson.dumps({**valid(i), "device_id": PAN}), "card number"),
    "not_json": (lambda i: b"\xff\xfe{not json " + str(i).encode(), "not valid JSON"),
}
N_EACH_INVALID = 30


def _messages(topic: str) -> tuple[list[tuple[str, bytes | None, bytes]], dict[int, str]]:
    """Valid transactions with every kind of invalid one mixed in; index → invalid kind."""
    messages: list[tuple[str, bytes | None, bytes]] = []
    kinds: dict[int, str] = {}
    invalid_every = N_VALID // (N_EACH_INVALID * len(INVALID))
    bad = [(kind, j) for j in range(N_EACH_INVALID) for kind in INVALID]
    for i in range(N_VALID):
        messages.append((topic, f"c-{i % 97}".encode(), orjson.dumps(valid(i))))
        if i % invalid_every == 0 and bad:
            kind, j = bad.pop()
            kinds[len(messages)] = kind
            messages.append((topic, f"bad-{kind}-{j}".encode(), INVALID[kind][0](100_000 + j)))
    assert not bad
    return messages, kinds


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{", 1)[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_every_input_is_enriched_or_dead_lettered(
    sandbox: Sandbox, start_worker: Callable[[], WorkerProcess]
) -> None:
    topics = sandbox.topics
    messages, kinds = _messages(topics.transactions)
    total = len(messages)
    sent: list[Sent] = produce(sandbox.broker, messages)

    worker = start_worker()
    outputs = [topics.enriched, topics.deadletter]
    got: list[Received] = consume(
        sandbox.broker, outputs, lambda got: len(got) >= total, timeout=90
    )
    assert worker.process.poll() is None, worker.log()
    assert len(got) == total, f"{len(got)} of {total} outputs\n{worker.log()[-3000:]}"

    enriched = [m.json() for m in got if m.topic == topics.enriched]
    letters = [m for m in got if m.topic == topics.deadletter]
    assert sorted(tx["transaction_id"] for tx in enriched) == [
        f"trx-it-{i:06d}" for i in range(N_VALID)
    ]
    assert all(
        m.key == m.json()["transaction_id"].encode() for m in got if m.topic == topics.enriched
    )
    assert len(letters) == len(kinds)

    # Each dead letter names its source message (partition, offset) and why it was refused.
    by_position = {(s.partition, s.offset): (i, s) for i, s in enumerate(sent)}
    for message in letters:
        letter = message.json()
        assert letter["source_topic"] == topics.transactions
        index, source = by_position[(letter["partition"], letter["offset"])]
        kind = kinds[index]
        assert INVALID[kind][1] in letter["reason"], (kind, letter["reason"])
        assert message.key == source.key
        assert PAN not in letter["raw"] and PAN not in letter["reason"]
        if kind != "not_json":
            assert orjson.loads(letter["raw"])["transaction_id"].startswith("trx-it-1")

    # Metrics are served and count what happened.
    status, body = _get(f"http://127.0.0.1:{sandbox.settings.metrics_port}/metrics")
    assert status == 200
    text = body.decode()
    assert _metric(text, "pantau_events_processed_total", topic=topics.transactions) == total
    assert _metric(text, "pantau_dead_letters_total", topic=topics.transactions) == len(kinds)
    assert _metric(text, "pantau_dead_letters_total", reason="currency") == N_EACH_INVALID
    assert _metric(text, "pantau_worker_up") == 1
    assert _metric(text, "pantau_batch_size_events_count", stage="payments") >= 1
    # Consumer lag is wall clock minus the event time of the latest processed transaction.
    latest = START + timedelta(milliseconds=50 * (N_VALID - 1))
    lag = _metric(text, "pantau_consumer_lag_seconds", stage="payments")
    assert abs(lag - (datetime.now(UTC) - latest).total_seconds()) < 120, lag

    # The channel views answer from the health stage (its snapshots follow the event time).
    assert any(s.name == "health" for s in build_stages(sandbox.settings))
    views = f"http://127.0.0.1:{sandbox.settings.web_port}/channels"
    deadline = time.monotonic() + 20
    channels: dict[str, Any] = {}
    while time.monotonic() < deadline and "BCA" not in channels:
        status, body = _get(views)
        assert status == 200, body
        channels = orjson.loads(body)["channels"]
        time.sleep(0.5)
    assert "BCA" in channels, channels
    status, body = _get(f"{views}/BCA")
    assert status == 200 and orjson.loads(body)["state"] == channels["BCA"]["state"]
    status, body = _get(f"{views}/NO_SUCH_CHANNEL")
    assert status == 404 and "NO_SUCH_CHANNEL" in orjson.loads(body)["error"]

    stamps = sorted(m.timestamp for m in got)
    first_output = min(m.seen_at for m in got) - worker.started_at
    spread = (stamps[-1] - stamps[0]) / 1000 or 0.001
    print(
        f"\nworker start → first output seen: {first_output:.2f} s; "
        f"{total} events in {spread:.2f} s of output timestamps = {total / spread:,.0f} events/s"
    )
    assert worker.stop() == 0, worker.log()[-3000:]


def test_a_worker_refuses_a_rule_pack_that_fails_its_check(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A bad pack named by PANTAU_RULES_PACK stops the worker before it joins, with exit 2 and
    the file and line, not a traceback."""
    import subprocess

    from tests.integration.conftest import PANTAU

    pack = tmp_path / "broken.yaml"
    pack.write_text("id: x\nversion: 1\nrules: [\n", encoding="utf-8")
    env = {**sandbox.env, "PANTAU_RULES_PACK": str(pack)}
    done = subprocess.run(
        [PANTAU, "worker"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{pack}:4" in done.stderr
    assert "Traceback" not in done.stderr
