"""The input and output contracts accept DESIGN.md's examples and refuse bad values by field."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from models.inputs import BalanceSnapshot, Callback, FraudLabel, Transaction
from models.outputs import (
    Alert,
    DeadLetter,
    EnrichedTransaction,
    FailoverSignal,
    FraudDecision,
    VatTag,
)
from streams.codec import describe_errors


def errors_of(model: type, data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return describe_errors(info.value)


def test_design_transaction_is_accepted_and_normalised(design_transaction: dict[str, Any]) -> None:
    tx = Transaction.model_validate(design_transaction)
    assert tx.amount == Decimal("150000.00")
    assert isinstance(tx.amount, Decimal)
    assert tx.created_at == datetime(2026, 11, 20, 20, 0, 0, 123000, tzinfo=UTC)
    dumped = orjson.loads(tx.model_dump_json())
    assert dumped["amount"] == "150000.00"
    assert dumped["created_at"] == "2026-11-20T20:00:00.123Z"


def test_amount_may_be_a_number(design_transaction: dict[str, Any]) -> None:
    design_transaction["amount"] = 150000
    assert Transaction.model_validate(design_transaction).amount == Decimal(150000)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("amount", "0.001", "amount: "),
        ("amount", "0", "amount: must be ≥ 0.01"),
        ("amount", "1000000000.01", "amount: must be ≤ 1000000000"),
        ("amount", "-5", "amount: must be ≥ 0.01"),
        ("amount", "NaN", "amount: "),
        ("amount", "lots", "amount: "),
        ("currency", "USD", "currency: only IDR is supported for now (got USD)"),
        ("currency", "rupiah", "currency: must be an ISO 4217 code"),
        ("method", "cash", "method: "),
        ("status", "done", "status: "),
        ("created_at", "2026-11-21T03:00:00", "created_at: "),
        ("created_at", "yesterday", "created_at: "),
        ("latency_ms", -1, "latency_ms: "),
        ("card_bin", "41", "card_bin: "),
        ("card_last4", "12345", "card_last4: "),
        ("ip", "300.1.1.1", "ip: must be an IPv4 or IPv6 address"),
        ("ip_country", "Indonesia", "ip_country: must be an ISO 3166 alpha-2 code"),
        ("luxury_tax_rate", "20", "luxury_tax_rate: must be a fraction"),
        ("channel", "B C A!", "channel: "),
    ],
)
def test_each_bad_value_is_refused_naming_its_field(
    design_transaction: dict[str, Any], field: str, value: Any, expected: str
) -> None:
    design_transaction[field] = value
    message = errors_of(Transaction, design_transaction)
    assert message.startswith(expected), message


@pytest.mark.parametrize(
    "field",
    [
        "transaction_id",
        "merchant_id",
        "customer_id",
        "amount",
        "currency",
        "method",
        "channel",
        "status",
        "created_at",
    ],
)
def test_required_fields(design_transaction: dict[str, Any], field: str) -> None:
    del design_transaction[field]
    assert errors_of(Transaction, design_transaction) == f"{field}: Field required"


def test_optional_fields_may_be_absent(design_transaction: dict[str, Any]) -> None:
    for field in [
        "error_code",
        "latency_ms",
        "goods_category",
        "luxury_tax_rate",
        "card_bin",
        "card_last4",
        "card_country",
        "device_id",
        "ip",
        "ip_country",
    ]:
        del design_transaction[field]
    tx = Transaction.model_validate(design_transaction)
    assert tx.latency_ms is None and tx.price_includes_vat is True and tx.cross_border is False


def test_unknown_channel_is_accepted_and_normalised(design_transaction: dict[str, Any]) -> None:
    design_transaction["channel"] = "bank_jago"
    assert Transaction.model_validate(design_transaction).channel == "BANK_JAGO"


@pytest.mark.parametrize("field", ["device_id", "customer_id", "error_code", "goods_category"])
def test_card_number_in_any_field_is_refused_and_masked(
    design_transaction: dict[str, Any], field: str
) -> None:
    design_transaction[field] = "x 4111111111111111"
    message = errors_of(Transaction, design_transaction)
    assert message.startswith(f"{field}: holds a card number")
    assert "411111******1111" in message
    assert "4111111111111111" not in message


def test_non_luhn_long_digits_are_not_card_numbers(design_transaction: dict[str, Any]) -> None:
    design_transaction["device_id"] = "4111111111111112"  # fails Luhn
    assert Transaction.model_validate(design_transaction).device_id == "4111111111111112"


def test_design_callback_is_accepted(design_callback: dict[str, Any]) -> None:
    cb = Callback.model_validate(design_callback)
    assert cb.provider == "midtrans"
    assert cb.received_at.tzinfo is not None


def test_callback_headers_are_case_insensitive(design_callback: dict[str, Any]) -> None:
    design_callback["headers"] = {"X-Callback-Token": "t"}
    assert Callback.model_validate(design_callback).headers == {"x-callback-token": "t"}


def test_callback_masks_card_numbers_rather_than_refusing(design_callback: dict[str, Any]) -> None:
    design_callback["body"] = '{"masked_card": "4111111111111111"}'
    cb = Callback.model_validate(design_callback)
    assert "4111111111111111" not in cb.masked_body()
    assert "411111******1111" in cb.masked_body()


def test_callback_unknown_provider_is_refused(design_callback: dict[str, Any]) -> None:
    design_callback["provider"] = "paypal"
    assert errors_of(Callback, design_callback).startswith("provider: ")


def test_balance_and_label() -> None:
    snap = BalanceSnapshot.model_validate(
        {
            "merchant_id": "m-1",
            "balance": "9500000.00",
            "currency": "IDR",
            "at": "2026-11-21T00:00:00Z",
        }
    )
    assert snap.balance == Decimal("9500000.00")
    label = FraudLabel.model_validate(
        {"transaction_id": "trx-1", "fraud": True, "reported_at": "2026-11-25T00:00:00+07:00"}
    )
    assert label.fraud is True
    assert "at: " in errors_of(
        BalanceSnapshot, {"merchant_id": "m", "balance": "1", "currency": "IDR", "at": "2026-01-01"}
    )


def test_outputs_match_design_examples(design_transaction: dict[str, Any]) -> None:
    design_transaction["status"] = "success"
    vat = VatTag(
        category="premium_goods",
        mechanism="standard",
        rate=Decimal("0.11"),
        base=Decimal("135135.14"),
        amount=Decimal("14864.86"),
        luxury_tax_rate=Decimal("0"),
        luxury_tax_amount=Decimal("0.00"),
        table_version="2025-01-01",
    )
    enriched = EnrichedTransaction.model_validate(
        {**design_transaction, "vat": vat, "fraud": {"action": "approve", "score": 3.0}}
    )
    data = orjson.loads(enriched.model_dump_json())
    assert data["vat"]["rate"] == "0.11"
    assert data["vat"]["amount"] == "14864.86"
    assert data["vat"]["luxury_tax_amount"] == "0.00"
    assert "schema_version" not in data["vat"]
    assert data["schema_version"] == 1
    assert data["fraud"]["action"] == "approve"

    decision = FraudDecision.model_validate(
        {
            "transaction_id": "trx-1",
            "action": "review",
            "score": 71.5,
            "model_score": 0.62,
            "model_version": "fraud-2026-11-20",
            "rules_version": "core-7",
            "rule_hits": [{"rule_id": "card_testing_device", "action": "review", "score": 40}],
            "reasons": ["8 card attempts from this device in 10 min"],
            "decided_at": "2026-11-21T03:00:00Z",
        }
    )
    assert (
        orjson.loads(decision.model_dump_json())["rule_hits"][0]["rule_id"] == "card_testing_device"
    )
    with pytest.raises(ValidationError):
        FraudDecision.model_validate({**decision.model_dump(), "score": 101})

    signal = FailoverSignal.model_validate(
        {
            "channel": "BCA",
            "method": "virtual_account",
            "action": "failover",
            "state": "failed_over",
            "reason": "consecutive_provider_failures",
            "figures": {"consecutive_failures": 12},
            "alternatives": ["MANDIRI", "BNI"],
            "probe_ratio": 0.05,
            "at": "2026-11-21T03:00:00Z",
            "since": "2026-11-21T03:00:00Z",
        }
    )
    assert signal.state == "failed_over"
    alert = Alert.model_validate(
        {
            "alert": "api_error_rate_high",
            "fingerprint": "api_error_rate_high/BCA",
            "status": "firing",
            "severity": "critical",
            "labels": {"channel": "BCA"},
            "value": 0.81,
            "threshold": 0.05,
            "started_at": "2026-11-21T03:00:00Z",
            "at": "2026-11-21T03:00:00Z",
        }
    )
    assert alert.status == "firing"
    letter = DeadLetter.model_validate(
        {
            "source_topic": "payments.transactions",
            "partition": 3,
            "offset": 1881,
            "line": None,
            "reason": "amount: must be ≤ 1000000000",
            "raw": "{}",
            "at": "2026-11-21T03:00:00Z",
        }
    )
    assert letter.offset == 1881


def test_outputs_refuse_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        DeadLetter.model_validate(
            {"source_topic": "t", "reason": "r", "raw": "", "at": "2026-11-21T03:00:00Z", "x": 1}
        )
