"""The checked-in JSON Schemas match the contracts (regenerate with `make schemas`)."""

from __future__ import annotations

import json

from models.schemas import DEFAULT_DIR, render_schemas


def test_schemas_are_up_to_date() -> None:
    rendered = render_schemas()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in DEFAULT_DIR.glob("*.json")}
    stale = sorted(n for n in rendered if on_disk.get(n) != rendered[n])
    extra = sorted(set(on_disk) - set(rendered))
    assert not stale and not extra, f"stale {stale}, extra {extra}: run `make schemas`"


def test_every_topic_has_a_schema_with_schema_version_on_outputs() -> None:
    rendered = render_schemas()
    for topic in [
        "payments.enriched",
        "fraud.decisions",
        "gateway.failover",
        "channel.health",
        "ops.alerts",
        "payments.deadletter",
    ]:
        schema = json.loads(rendered[f"{topic}.json"])
        assert "schema_version" in schema["properties"], topic
    tx = json.loads(rendered["payments.transactions.json"])
    assert set(tx["required"]) >= {"transaction_id", "amount", "currency", "created_at"}
