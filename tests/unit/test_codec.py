"""Decoding raw bytes: valid events pass, everything else becomes a dead letter with its reason."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from models.inputs import Transaction
from streams.codec import Decoder
from streams.core import Record


def decode(value: bytes, max_bytes: int = 1_000_000) -> tuple[Any, Any]:
    decoder = Decoder(Transaction, "payments.deadletter", max_bytes=max_bytes)
    return decoder.decode(
        Record(topic="payments.transactions", value=value, key=b"c-1", partition=3, offset=1881)
    )


def test_valid(design_transaction: dict[str, Any]) -> None:
    event, letter = decode(orjson.dumps(design_transaction))
    assert letter is None and event.transaction_id == "trx-20261121-000001"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty value"),
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_unreadable_values(raw: bytes, reason: str) -> None:
    event, letter = decode(raw)
    assert event is None
    assert letter.topic == "payments.deadletter"
    assert letter.value["reason"].startswith(reason)
    assert letter.value["partition"] == 3 and letter.value["offset"] == 1881
    assert letter.value["source_topic"] == "payments.transactions"
    assert letter.key == "c-1"


def test_invalid_field_keeps_original_text(design_transaction: dict[str, Any]) -> None:
    design_transaction["amount"] = "2000000000"
    raw = orjson.dumps(design_transaction)
    _, letter = decode(raw)
    assert letter.value["reason"] == "amount: must be ≤ 1000000000"
    assert orjson.loads(letter.value["raw"]) == design_transaction


def test_card_number_anywhere_is_refused_and_masked(design_transaction: dict[str, Any]) -> None:
    design_transaction["extra"] = {"note": "card 4111111111111111"}
    _, letter = decode(orjson.dumps(design_transaction))
    assert letter.value["reason"].startswith("extra.note: holds a card number")
    assert "4111111111111111" not in orjson.dumps(letter.value).decode()
    assert "411111******1111" in letter.value["raw"]


def test_card_number_in_a_number_field(design_transaction: dict[str, Any]) -> None:
    design_transaction["latency_ms"] = 4111111111111111
    _, letter = decode(orjson.dumps(design_transaction))
    assert "holds a card number" in letter.value["reason"]
    assert "4111111111111111" not in orjson.dumps(letter.value).decode()


def test_oversize_is_refused_with_the_limit(design_transaction: dict[str, Any]) -> None:
    design_transaction["pad"] = "x" * 5000
    _, letter = decode(orjson.dumps(design_transaction), max_bytes=2048)
    assert letter.value["reason"].startswith("value too large")
    assert "max_message_bytes 2048" in letter.value["reason"]
