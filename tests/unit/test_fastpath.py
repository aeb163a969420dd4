"""The fast transaction path and the pydantic contract agree on valid and invalid values."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from models.inputs import Transaction
from streams.codec import Decoder
from streams.core import Record
from streams.fastpath import fast_transaction
from tests.conftest import DESIGN_TRANSACTION

# DESIGN.md's example as a card payment (every optional field set).
BASE: dict[str, Any] = {
    **DESIGN_TRANSACTION,
    "method": "card",
    "channel": "VISA",
    "status": "success",
    "error_code": None,
    "card_bin": "411111",
    "card_last4": "1111",
    "card_country": "ID",
}

# Per field, values the contract accepts as they are, changes, or refuses.
VARIANTS: dict[str, list[Any]] = {
    "transaction_id": ["t", "", " t ", 7, "x" * 201, "x" * 200],
    "customer_id": ["c-1", " c-1", None, True],
    "amount": [
        "0.01",
        "0.001",
        "1000000000",
        "1000000000.01",
        "12",
        "1e3",
        " 5.00",
        150000,
        150000.5,
        "-3.00",
        "0",
        "NaN",
        "abc",
        "007.50",
    ],
    "currency": ["IDR", "idr", "USD", " IDR", "", None],
    "method": ["card", "CARD", "ewallet", "cash", "", None],
    "channel": ["BCA", "bca", "B", "B-C", "A" * 33, " BCA", "NEW_BANK_2", 5],
    "status": ["pending", "SUCCESS", "done", None],
    "error_code": [None, "", "  ", "503", " 503", "x" * 65, 503],
    "latency_ms": [None, 0, -1, 3_600_000, 3_600_001, "12", 12.0, True],
    "created_at": [
        "2026-11-21T03:00:00Z",
        "2026-11-21T03:00:00",
        "2026-11-21 03:00:00+07:00",
        "2026-11-21T03:00:00.1234567+07:00",
        "2026-11-21T25:00:00+07:00",
        "2026-02-30T03:00:00+07:00",
        "2026-11-21T03:00:00-05:30",
        1763694000,
        "2026-11-21T03:00:00.5+00:00",
        "yesterday",
    ],
    "goods_category": [None, "", "standard", " x", "y" * 65],
    "price_includes_vat": [True, False, "true", 1, None],
    "luxury_tax_rate": [
        None,
        "0.20",
        "1.5",
        "1",
        "1.00",
        "1.01",
        "0",
        "0.1234567",
        0.2,
        "-0.1",
        " 0.2",
    ],
    "cross_border": [False, True, "no", 0],
    "card_bin": [None, "411111", "41111111", "41111", "4111a1", 411111],
    "card_last4": [None, "1111", "111", 1111],
    "card_country": [None, "ID", "id", "IDN", ""],
    "device_id": [None, "", " ", "d-1", "d" * 201],
    "ip": [None, "10.0.0.1", "010.0.0.1", "256.1.1.1", "::1", "2001:db8::1", "1.2.3", ""],
    "ip_country": [None, "SG", "sg", "S"],
    "extra_field": ["whatever", 1.5, {"nested": True}],
}


def _agree(data: dict[str, Any]) -> None:
    fast = fast_transaction(data)
    try:
        slow = Transaction.model_validate(data)
    except ValidationError:
        assert fast is None, data
        return
    if fast is None:
        return  # left to the contract: always allowed
    assert fast == slow
    assert fast.model_dump() == slow.model_dump()
    assert fast.model_dump(mode="json") == slow.model_dump(mode="json")
    assert fast.model_fields_set == slow.model_fields_set
    assert list(fast.__dict__) == list(slow.__dict__)
    for name in Transaction.model_fields:
        assert type(getattr(fast, name)) is type(getattr(slow, name)), name
    assert fast.created_at.tzinfo == slow.created_at.tzinfo


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(sorted(VARIANTS)), st.integers(0, 20), max_size=5),
    st.sets(st.sampled_from(sorted(BASE)), max_size=2),
)
def test_fast_path_agrees_with_the_contract(changes: dict[str, int], dropped: set[str]) -> None:
    data = {k: v for k, v in BASE.items() if k not in dropped}
    for name, pick in changes.items():
        options = VARIANTS[name]
        data[name] = options[pick % len(options)]
    _agree(data)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_alone_agrees(name: str) -> None:
    for value in VARIANTS[name]:
        _agree({**BASE, name: value})


def test_ordinary_simulated_transactions_take_the_fast_path() -> None:
    from datetime import timedelta

    from streams.simulator import generate

    taken = total = 0
    for event in generate(duration=timedelta(minutes=3), tx_per_second=5, seed=2):
        if event.topic != "payments.transactions":
            continue
        total += 1
        fast = fast_transaction(event.value)
        if fast is not None:
            taken += 1
            assert fast == Transaction.model_validate(event.value)
    assert total > 100 and taken == total


def test_decoder_output_is_the_same_with_and_without_the_fast_path() -> None:
    slow = Decoder(Transaction, "dl", fast_path=False)
    fast = Decoder(Transaction, "dl")
    assert fast.fast is fast_transaction and slow.fast is None
    values = [
        orjson.dumps(BASE),
        orjson.dumps({**BASE, "device_id": "4111111111111111"}),  # a card number: refused
        orjson.dumps({**BASE, "amount": "0.001"}),
        b'{"transaction_id":"t\\u0031","merchant_id":"m","customer_id":"c","amount":"5.00",'
        b'"currency":"IDR","method":"card","channel":"BCA","status":"failed",'
        b'"created_at":"2026-11-21T03:00:00Z"}',
    ]
    for value in values:
        record = Record(topic="payments.transactions", value=value, offset=3)
        a, letter_a = slow.decode(record)
        b, letter_b = fast.decode(record)
        assert a == b
        assert (letter_a is None) == (letter_b is None)
        if letter_a is not None and letter_b is not None:
            assert letter_a.value["reason"] == letter_b.value["reason"]


def test_enriched_value_is_what_the_enriched_contract_dumps() -> None:
    from datetime import timedelta

    from models.outputs import EnrichedTransaction, FraudSummary
    from streams.payments import PaymentsStage, enriched_value
    from streams.pipeline import build_stages
    from streams.settings import Settings
    from streams.simulator import generate

    payments = build_stages(Settings())[0]
    assert isinstance(payments, PaymentsStage) and payments.fraud and payments.vat
    txs = [
        Transaction.model_validate(e.value)
        for e in generate(duration=timedelta(minutes=4), tx_per_second=5, seed=4)
        if e.topic == "payments.transactions"
    ]
    decisions = payments.fraud.score(txs)
    tagged = 0
    for tx, decision in zip(txs, decisions, strict=True):
        vat = payments.vat.tag(tx)
        tagged += vat is not None
        summary = FraudSummary(
            action=decision.action,
            score=decision.score,
            rules_version=decision.rules_version,
            model_version=decision.model_version,
        )
        reference = EnrichedTransaction.model_construct(
            **tx.__dict__, schema_version=1, vat=vat, fraud=summary
        ).model_dump(mode="json")
        assert orjson.dumps(enriched_value(tx, vat, decision)) == orjson.dumps(reference)
        bare = EnrichedTransaction.model_construct(**tx.__dict__, schema_version=1)
        assert enriched_value(tx, None, None) == bare.model_dump(mode="json")
    assert len(txs) > 100 and tagged > 20
