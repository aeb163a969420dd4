"""No card number and no secret leaves Pantau: a simulated run with card numbers planted in
transactions and callback bodies, replayed with callback and broker secrets configured; every
message sent (internal topics too), every log line and the /metrics exposition are scanned."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.pan import contains_pan, find_pans, mask_digits
from streams import metrics
from streams.core import Out
from streams.pipeline import Pipeline, build_pipeline
from streams.replay import replay
from streams.settings import Settings
from streams.signatures import build_callback
from streams.sim_callbacks import SIM_SECRETS, SIM_SOURCE_IPS, sim_settings_overrides
from streams.simulator import generate
from streams.topics import Topics
from tests.conftest import DESIGN_TRANSACTION

# Test card numbers (Luhn-valid), in the forms people and buggy gateways send them.
VISA = "4111111111111111"
MASTERCARD = "5500000000000004"
AMEX = "378282246310005"
JCB = "3530111333300000"
PLANTED = (VISA, MASTERCARD, AMEX, JCB)

BROKER_PASSWORD = "broker-pw-0f3c9a1e7d"


def leak_settings() -> Settings:
    """The simulator's callback secrets plus SASL credentials, so every kind of secret exists."""
    return Settings(
        **sim_settings_overrides(),
        broker_credentials={
            "mechanism": "SCRAM-SHA-512",
            "username": "pantau-svc",
            "password": BROKER_PASSWORD,
        },
    )


def card_transactions(start: datetime) -> list[dict[str, Any]]:
    """Transactions carrying full card numbers where they must never be: each is dead-lettered
    with the digits masked."""
    base = {**DESIGN_TRANSACTION, "created_at": start.isoformat()}
    cases: list[dict[str, Any]] = [
        {"device_id": VISA},
        {
            "goods_category": f"card {MASTERCARD[:4]} {MASTERCARD[4:8]} {MASTERCARD[8:12]} "
            f"{MASTERCARD[12:]}"
        },
        {"note": f"customer paid with {AMEX[:4]}-{AMEX[4:10]}-{AMEX[10:]}"},  # unknown field
        {"customer_id": JCB},  # also the message key
        {"card_bin": VISA[:6], "card_last4": VISA[-4:], "error_code": VISA},
    ]
    return [
        {**copy.deepcopy(base), "transaction_id": f"trx-pan-{i}", **case}
        for i, case in enumerate(cases)
    ]


def card_callbacks(start: datetime) -> list[dict[str, Any]]:
    """Callbacks whose bodies carry full card numbers: one genuine (trusted: its fact travels on
    pantau.settlement), one with a broken signature and one from a disallowed address (both
    dead-lettered). The last two carry the real secret (Xendit's token header) too."""
    genuine = build_callback(
        "midtrans",
        {
            "order_id": "trx-pan-cb-1",
            "status_code": "200",
            "gross_amount": "150000.00",
            "transaction_status": "capture",
            "transaction_time": "2026-11-21 10:00:00",
            "masked_card": VISA,
            "card_number": MASTERCARD,
        },
        SIM_SECRETS["midtrans"],
        callback_id="cb-pan-1",
        received_at=start,
        source_ip=SIM_SOURCE_IPS["midtrans"][0],
    )
    broken = copy.deepcopy(genuine)
    broken["callback_id"] = "cb-pan-2"
    broken["body"] = broken["body"].replace('"150000.00"', '"1500000.00"')  # signature breaks
    xendit_body = {
        "external_id": "trx-pan-cb-3",
        "status": "PAID",
        "amount": 150000,
        "paid_at": start.isoformat(),
        "payment_channel": AMEX,
        "id": "inv-pan-3",
    }
    wrong_ip = build_callback(
        "xendit",
        xendit_body,
        SIM_SECRETS["xendit"],
        callback_id="cb-pan-3",
        received_at=start,
        source_ip="198.51.100.7",  # not in Xendit's allowlist
    )
    odd_status = build_callback(
        "xendit",
        {**xendit_body, "external_id": "trx-pan-cb-4", "status": "WEIRD", "id": "inv-pan-4"},
        SIM_SECRETS["xendit"],
        callback_id="cb-pan-4",
        received_at=start,
        source_ip=SIM_SOURCE_IPS["xendit"][0],
    )
    return [genuine, broken, wrong_ip, odd_status]


def write_events(path: Path, start: datetime) -> None:
    lines = []
    for ev in generate(
        seed=4,
        duration=timedelta(minutes=5),
        tx_per_second=4.0,
        customers=300,
        merchants=30,
        invalid_rate=0.05,
        scenarios=("card-testing", "callback-storm"),
        start=start,
    ):
        lines.append({"topic": ev.topic, "key": ev.key, "value": ev.value})
    at = start + timedelta(minutes=2)
    for tx in card_transactions(at):
        lines.append({"topic": "payments.transactions", "key": tx["customer_id"], "value": tx})
    for cb in card_callbacks(at):
        lines.append({"topic": "payments.callbacks", "key": cb["callback_id"], "value": cb})
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))


@dataclass
class Finding:
    where: str
    what: str


def scan(where: str, text: str, secrets: Iterable[str]) -> list[Finding]:
    """PAN-like digit runs and secret values in one text."""
    found = [Finding(where, f"card number {mask_digits(p)}") for p in find_pans(text)]
    found += [Finding(where, f"secret {s[:3]}…") for s in secrets if s in text]
    return found


# Epoch milliseconds (13 digits) that Pantau itself writes as JSON numbers; a card number is
# never a number Pantau computes.
_EPOCH_MS = range(10**12, 10**13)


def json_texts(value: Any) -> Iterable[str]:
    """Every string, key and long integer in a JSON value, for scanning (floats and event-time
    numbers are Pantau's own arithmetic, not text it copied)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from json_texts(v)
    elif isinstance(value, list):
        for v in value:
            yield from json_texts(v)
    elif isinstance(value, int) and not isinstance(value, bool) and value not in _EPOCH_MS:
        yield str(value)


def scan_json(where: str, values: Iterable[Any], secrets: Iterable[str]) -> list[Finding]:
    text = "\n".join(t for v in values for t in json_texts(v))
    return scan(where, text, secrets)


def exposition_texts(text: str) -> str:
    """Metric names, help texts, label names and label values of an exposition (the sample
    values are numbers Pantau computed, such as wall-clock `_created` times)."""
    from prometheus_client.parser import text_string_to_metric_families

    parts = []
    for family in text_string_to_metric_families(text):
        parts += [family.name, family.documentation]
        for sample in family.samples:
            parts.append(sample.name)
            parts += [f"{k}={v}" for k, v in sample.labels.items()]
    return "\n".join(parts)


def capture_internal(pipeline: Pipeline, into: list[Out]) -> None:
    """Keep every output of every stage, internal topics included (they are Kafka topics live)."""
    for stage in pipeline.stages:
        process = stage.process

        def wrapped(records: Any, _process: Any = process) -> list[Out]:
            outs: list[Out] = _process(records)
            into.extend(outs)
            return outs

        stage.process = wrapped  # type: ignore[method-assign]


@dataclass
class Run:
    settings: Settings
    out_dir: Path
    internal: list[Out]
    logs: list[str]
    exposition: str


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("leaks")
    events = tmp / "events.jsonl"
    write_events(events, datetime(2026, 11, 21, 1, 0, tzinfo=UTC))
    settings = leak_settings()
    pipeline = build_pipeline(settings)
    internal: list[Out] = []
    capture_internal(pipeline, internal)
    handler = _Collect()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        replay(pipeline, events, tmp / "out", batch_size=100)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    return Run(settings, tmp / "out", internal, handler.lines, metrics.exposition().decode())


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _letters(run: Run) -> list[dict[str, Any]]:
    path = run.out_dir / f"{Topics().deadletter}.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_the_planted_card_numbers_were_dead_lettered_masked(run: Run) -> None:
    letters = {str(v.get("raw")): v for v in _letters(run)}
    for i in range(len(card_transactions(datetime.now(UTC)))):
        hit = [v for raw, v in letters.items() if f'"trx-pan-{i}"' in raw]
        assert hit, f"trx-pan-{i} was not dead-lettered"
        assert "card" in hit[0]["reason"] or "card" in hit[0]["raw"]
    raws = "\n".join(letters)
    assert mask_digits(VISA) in raws  # masked, not dropped: the analyst sees BIN and last 4
    for cb in ("cb-pan-2", "cb-pan-3", "cb-pan-4"):
        assert any(cb in raw for raw in letters), f"{cb} was not dead-lettered"


def test_the_genuine_callback_with_card_numbers_was_trusted(run: Run) -> None:
    facts = [o.value for o in run.internal if o.topic == Topics().settlement]
    assert any(f.get("callback_id") == "cb-pan-1" for f in facts)


def _output_findings(run: Run) -> list[Finding]:
    secrets = run.settings.secret_values()
    assert len(secrets) >= 6  # five providers' callback secrets and the broker password
    findings: list[Finding] = []
    files = sorted(run.out_dir.glob("*.jsonl"))
    assert len(files) >= len(Topics().outputs())
    for path in files:
        values = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        findings += scan_json(path.name, values, secrets)
    return findings


def test_no_card_number_in_any_output_topic(run: Run) -> None:
    findings = _output_findings(run)
    assert not [f for f in findings if f.what.startswith("card")], findings[:10]


def test_no_secret_in_any_output_topic(run: Run) -> None:
    findings = _output_findings(run)
    assert not findings, findings[:10]


def test_no_card_number_or_secret_on_internal_topics(run: Run) -> None:
    secrets = run.settings.secret_values()
    internal = [o for o in run.internal if o.topic in Topics().internal()]
    assert internal
    values = [o.value for o in internal] + [o.key for o in internal]
    assert not scan_json("internal topics", values, secrets)


def test_no_card_number_or_secret_in_logs(run: Run) -> None:
    assert not scan("logs", "\n".join(run.logs), run.settings.secret_values())


def test_no_card_number_or_secret_in_metrics(run: Run) -> None:
    texts = exposition_texts(run.exposition)
    assert "channel=BCA" in texts
    assert not scan("/metrics", texts, run.settings.secret_values())


def test_settings_never_print_their_secrets() -> None:
    settings = leak_settings()
    text = repr(settings) + str(settings) + settings.model_dump_json()
    assert not scan("settings", text, settings.secret_values())
    assert not contains_pan(text)
