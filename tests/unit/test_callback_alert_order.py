"""Signature-failure alerts of several providers in one batch come out in the same order in every
process, whatever its hash seed (they were judged in a set's order): the callbacks stage sends
their samples, and the judge fires them, in the order the providers failed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
from datetime import UTC, datetime, timedelta
import orjson
from streams import signatures as sig
from streams.core import Record
from streams.settings import Settings
from streams.alert_windows import WindowedAlerts
from streams.pipeline import internal_record
from streams.settlement import CallbacksStage, SettlementRules, build_verifier
from streams.topics import Topics

topics = Topics()
rules = SettlementRules.model_validate(
    {"alerts": {"callback_signature_failures": {"threshold": 2, "window_s": 300}}}
)
secrets = {p: ["right"] for p in ("generic", "xendit", "doku", "snap", "midtrans")}
stage = CallbacksStage(topics, build_verifier(Settings(callback_secrets=secrets)), rules)
t0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
records = []
# Forgeries of five providers, interleaved: each reaches the threshold within the one batch.
for i, provider in enumerate(["xendit", "snap", "generic", "doku", "midtrans"] * 2):
    body = {"transaction_id": f"trx-{i}", "order_id": f"trx-{i}", "status": "settled",
            "status_code": "200", "gross_amount": "1000.00", "external_id": f"trx-{i}"}
    value = sig.build_callback(provider, body, "wrong", callback_id=f"cb-{i}",
                               received_at=t0 + timedelta(seconds=i), source_ip="10.1.2.3",
                               variant="hmac")
    records.append(Record(topic=topics.callbacks, value=orjson.dumps(value), offset=i))
samples = [internal_record(o) for o in stage.process(records) if o.topic == topics.alert_samples]
outs = WindowedAlerts(topics, rules.alerts).process(samples)
print(",".join(o.value["labels"]["provider"] for o in outs if o.topic == topics.alerts))
"""


def _alert_order(seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_alerts_of_one_batch_come_in_the_order_providers_failed() -> None:
    orders = {_alert_order(seed) for seed in ("1", "4", "6", "8")}
    assert orders == {"xendit,snap,generic,doku,midtrans"}
