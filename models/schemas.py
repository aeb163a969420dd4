"""JSON Schema export of every topic's value contract (`pantau schemas`)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from models.inputs import BalanceSnapshot, Callback, FraudLabel, Transaction
from models.outputs import (
    Alert,
    ChannelHealth,
    DeadLetter,
    EnrichedTransaction,
    FailoverSignal,
    FraudDecision,
)

# topic (default name) → the contract of its values
TOPIC_CONTRACTS: dict[str, type[BaseModel]] = {
    "payments.transactions": Transaction,
    "payments.callbacks": Callback,
    "payments.balances": BalanceSnapshot,
    "fraud.labels": FraudLabel,
    "payments.enriched": EnrichedTransaction,
    "fraud.decisions": FraudDecision,
    "gateway.failover": FailoverSignal,
    "channel.health": ChannelHealth,
    "ops.alerts": Alert,
    "payments.deadletter": DeadLetter,
}

DEFAULT_DIR = Path(__file__).parent / "json_schemas"


def extra_contracts() -> dict[str, type[BaseModel]]:
    """Contracts defined outside models/ (the rule pack lives with the rules)."""
    try:
        from rules.pack import RulePack
    except ImportError:
        return {}
    return {"pantau.rules": RulePack}


def render_schemas() -> dict[str, str]:
    """file name → JSON Schema text, for every topic's value."""
    contracts = {**TOPIC_CONTRACTS, **extra_contracts()}
    out = {}
    for topic, model in sorted(contracts.items()):
        schema = model.model_json_schema(mode="serialization")
        schema["$id"] = f"https://pantau.dev/schemas/{topic}.json"
        schema["title"] = f"{topic}: {model.__name__}"
        out[f"{topic}.json"] = (
            json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        )
    return out


def write_schemas(out_dir: Path = DEFAULT_DIR) -> list[Path]:
    """Write every schema file into out_dir; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
