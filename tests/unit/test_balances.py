"""Balances: low_balance fires below the merchant's threshold and resolves once topped up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams import metrics
from streams.balances import BalancesStage, load_balance_rules
from streams.core import Out, Record
from streams.settlement import BalanceRules
from streams.topics import Topics

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
TOPICS = Topics()


def snapshot(merchant: str, balance: str, minutes: int, offset: int = 0) -> Record:
    value = {
        "merchant_id": merchant,
        "balance": balance,
        "currency": "IDR",
        "at": (T0 + timedelta(minutes=minutes)).isoformat(),
    }
    return Record(
        topic=TOPICS.balances, value=orjson.dumps(value), key=merchant.encode(), offset=offset
    )


def alerts(outs: list[Out]) -> list[tuple[str, str, Any]]:
    return [
        (o.value["fingerprint"], o.value["status"], o.value["value"])
        for o in outs
        if o.topic == TOPICS.alerts
    ]


def test_fires_below_default_and_resolves_when_topped_up() -> None:
    stage = BalancesStage(TOPICS, BalanceRules())
    outs = stage.process([snapshot("m-a", "25000000.00", 0)])
    outs += stage.process([snapshot("m-a", "10000000.00", 10)])  # at the threshold: fine
    assert alerts(outs) == []
    outs += stage.process([snapshot("m-a", "9999999.99", 20), snapshot("m-a", "4000000", 25)])
    assert alerts(outs) == [("low_balance/m-a", "firing", 9999999.99)]
    [firing] = [o for o in outs if o.topic == TOPICS.alerts]
    assert firing.value["threshold"] == 10_000_000 and firing.value["labels"] == {
        "merchant_id": "m-a"
    }
    assert metrics.LOW_BALANCE_MERCHANTS._value.get() == 1
    outs += stage.process([snapshot("m-a", "50000000", 70)])
    outs += stage.process([snapshot("m-a", "60000000", 80)])
    assert alerts(outs) == [
        ("low_balance/m-a", "firing", 9999999.99),
        ("low_balance/m-a", "resolved", 50000000.0),
    ]
    assert metrics.LOW_BALANCE_MERCHANTS._value.get() == 0


def test_an_older_snapshot_changes_nothing() -> None:
    stage = BalancesStage(TOPICS, BalanceRules())
    outs = stage.process([snapshot("m-b", "50000000", 30), snapshot("m-b", "100", 10)])
    assert alerts(outs) == [] and stage.latest["m-b"]["balance"] == "50000000"


def test_per_merchant_overrides(tmp_path: Path) -> None:
    path = tmp_path / "balances.yaml"
    path.write_text(
        'default_threshold: "10000000"\nmerchants:\n  m-big: "250000000"\n  m-small: "1000000"\n',
        encoding="utf-8",
    )
    rules = load_balance_rules(path)
    assert rules.threshold_for("m-big") == Decimal(250_000_000)
    stage = BalancesStage(TOPICS, rules)
    outs = stage.process(
        [
            snapshot("m-big", "200000000", 0),
            snapshot("m-small", "5000000", 0),
            snapshot("m-x", "5000000", 0),
        ]
    )
    assert [a[0] for a in alerts(outs)] == ["low_balance/m-big", "low_balance/m-x"]


def test_shipped_default_and_bad_rules(tmp_path: Path) -> None:
    assert load_balance_rules().threshold_for("anyone") == Decimal(10_000_000)
    path = tmp_path / "balances.yaml"
    path.write_text("default_threshold: lots\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"balances\.yaml: default_threshold"):
        load_balance_rules(path)


def test_bad_snapshots_dead_letter() -> None:
    stage = BalancesStage(TOPICS, BalanceRules())
    bad = Record(topic=TOPICS.balances, value=b'{"merchant_id": "m", "balance": "x"}', offset=1)
    [letter] = stage.process([bad])
    assert letter.topic == TOPICS.deadletter and "balance" in letter.value["reason"]
