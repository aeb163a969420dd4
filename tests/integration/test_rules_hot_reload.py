"""A live worker switches to a newly published rule pack without restarting, refuses a bad one."""

from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from rules.pack import DEFAULT_PACK, load_pack
from streams.fraud import pack_message
from tests.conftest import DESIGN_TRANSACTION
from tests.integration.conftest import (
    PANTAU,
    Received,
    Sandbox,
    WorkerProcess,
    consume,
    produce,
)

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
NEW_RULE = """
  - id: big_virtual_account
    description: A large virtual-account payment (added live).
    expression: method == "virtual_account" && amount >= 1000000.0
    action: review
    score: 10
    examples:
      match: [{method: virtual_account, amount: 2000000.0}]
      no_match: [{method: virtual_account, amount: 999999.0}]
"""


def transaction(i: int) -> tuple[str, bytes, bytes]:
    tx: dict[str, Any] = copy.deepcopy(DESIGN_TRANSACTION)
    tx.update(
        transaction_id=f"trx-hot-{i:05d}", customer_id=f"c-{i}", device_id=f"d-{i}",
        ip=f"203.0.113.{i % 250}", amount="2000000.00", status="success", error_code=None,
        created_at=(START + timedelta(seconds=10 * i)).isoformat(),
    )  # fmt: skip
    return "", f"c-{i}".encode(), orjson.dumps(tx)


def send_transactions(sandbox: Sandbox, first: int, count: int) -> None:
    produce(
        sandbox.broker,
        [
            (sandbox.topics.transactions, k, v)
            for _, k, v in map(transaction, range(first, first + count))
        ],
    )


def decisions(sandbox: Sandbox, at_least: int, timeout: float = 60) -> list[dict[str, Any]]:
    got: list[Received] = consume(
        sandbox.broker, [sandbox.topics.decisions], lambda g: len(g) >= at_least, timeout=timeout
    )
    return sorted((m.json() for m in got), key=lambda d: d["transaction_id"])


def test_worker_switches_to_a_published_pack_and_refuses_a_broken_one(
    sandbox: Sandbox, start_worker: Callable[[], WorkerProcess], tmp_path: Path
) -> None:
    worker = start_worker()
    send_transactions(sandbox, 0, 10)
    before = decisions(sandbox, 10, timeout=90)
    assert len(before) == 10, worker.log()[-3000:]
    assert {d["rules_version"] for d in before} == {"core-1"}
    assert all(d["rule_hits"] == [] and d["action"] == "approve" for d in before)

    # Publish version 2 with one more rule, through the analysts' command.
    text = DEFAULT_PACK.read_text().replace("version: 1", "version: 2", 1) + NEW_RULE
    pack_path = tmp_path / "core-2.yaml"
    pack_path.write_text(text)
    published = subprocess.run(
        [PANTAU, "rules", "publish", str(pack_path)], env=sandbox.env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    assert "published core-2" in published.stderr

    # Keep paying until a decision names core-2; the worker never restarted.
    sent = 10
    deadline = time.monotonic() + 60
    switched: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not switched:
        send_transactions(sandbox, sent, 5)
        sent += 5
        found = decisions(sandbox, sent, timeout=20)
        switched = [d for d in found if d["rules_version"] == "core-2"]
    assert switched, worker.log()[-3000:]
    assert worker.process.poll() is None
    first = min(d["transaction_id"] for d in switched)
    after = [d for d in found if d["transaction_id"] >= first]
    # Switched between two micro-batches: once core-2 decides, it decides everything after.
    assert {d["rules_version"] for d in after} == {"core-2"}
    assert all([h["rule_id"] for h in d["rule_hits"]] == ["big_virtual_account"] for d in after)
    assert all(d["action"] == "review" for d in after)

    # A broken pack sent straight to the topic is refused with an alert; core-2 stays.
    broken = load_pack(pack_path).pack.model_copy(update={"version": 3})
    broken.rules[-1].expression = "amount >= "
    produce(sandbox.broker, [(sandbox.topics.rules, b"core", pack_message(broken))])
    alerts = consume(
        sandbox.broker, [sandbox.topics.alerts],
        lambda g: any(m.json()["alert"] == "rule_pack_rejected" for m in g), timeout=60,
    )  # fmt: skip
    rejected = [m.json() for m in alerts if m.json()["alert"] == "rule_pack_rejected"]
    assert rejected and rejected[0]["status"] == "firing", worker.log()[-3000:]
    assert "core-3 refused, core-2 stays active" in rejected[0]["summary"]
    send_transactions(sandbox, sent, 5)
    latest = decisions(sandbox, sent + 5, timeout=30)
    assert {d["rules_version"] for d in latest[-5:]} == {"core-2"}
    assert worker.process.poll() is None

    # The command refuses a broken pack before it reaches the topic.
    bad_path = tmp_path / "bad.yaml"
    bad_path.write_text(text.replace("amount >= 1000000.0", "amount >= "))
    refused = subprocess.run(
        [PANTAU, "rules", "publish", str(bad_path)], env=sandbox.env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2
    assert f"{bad_path}:" in refused.stderr and "Syntax error" in refused.stderr
    assert worker.stop() == 0, worker.log()[-3000:]
