"""The crash test's verifier finds what it is there to find: lost inputs and changed re-sends."""

from __future__ import annotations

from typing import Any

import orjson

from streams.codec import safe_text
from streams.ledger import (
    Ledger,
    Sent,
    conflicting_duplicates,
    duplicate_count,
    missing,
    produced_ids,
)
from streams.topics import Topics
from tests.conftest import DESIGN_TRANSACTION

T = Topics()


def _enriched(tid: str, **changes: Any) -> Sent:
    return Sent(T.enriched, tid, {**DESIGN_TRANSACTION, "transaction_id": tid, **changes})


def _letter(raw: bytes, offset: int, at: str) -> Sent:
    value = {"source_topic": T.transactions, "partition": 0, "offset": offset, "line": None,
             "reason": "amount: bad", "raw": safe_text(raw), "at": at}  # fmt: skip
    return Sent(T.deadletter, "c-1", value)


def test_an_identical_resend_is_a_duplicate_not_a_conflict() -> None:
    sent = [_enriched("trx-1"), _enriched("trx-1"), _enriched("trx-2")]
    assert duplicate_count(T, sent) == 1
    assert conflicting_duplicates(T, sent) == []


def test_a_resend_with_another_value_is_a_conflict() -> None:
    sent = [_enriched("trx-1", vat=None), _enriched("trx-1", vat={"rate": "0.11"})]
    conflicts = conflicting_duplicates(T, sent)
    assert len(conflicts) == 1
    assert "vat" in conflicts[0].describe()


def test_a_retry_is_another_identity() -> None:
    later = _enriched("trx-1", created_at="2026-11-21T03:05:00+07:00", status="success")
    assert duplicate_count(T, [_enriched("trx-1"), later]) == 0


def test_a_dead_letter_resent_later_differs_only_in_its_processing_time() -> None:
    raw = b'{"transaction_id": "trx-9", "amount": "0"}'
    first = _letter(raw, 7, "2026-11-21T00:00:00.000Z")
    again = _letter(raw, 7, "2026-11-21T00:00:09.000Z")
    assert duplicate_count(T, [first, again]) == 1
    assert conflicting_duplicates(T, [first, again]) == []
    changed = Sent(T.deadletter, "c-1", {**again.value, "reason": "other"})
    assert len(conflicting_duplicates(T, [first, changed])) == 1


def test_missing_names_inputs_without_their_outputs() -> None:
    ledger = Ledger(T)
    good = {**DESIGN_TRANSACTION, "transaction_id": "trx-ok"}
    bad = {**DESIGN_TRANSACTION, "transaction_id": "trx-bad", "amount": "0"}
    ledger.add(T.transactions, b"c", orjson.dumps(good))
    ledger.add(T.transactions, b"c", orjson.dumps(bad))
    assert ledger.unique()
    decision = Sent(T.decisions, "trx-ok", {"transaction_id": "trx-ok", "decided_at": "x"})
    clean = [_enriched("trx-ok"), decision, _letter(orjson.dumps(bad), 1, "t")]
    expected = produced_ids(T, clean)
    assert missing(ledger, clean, expected) == []
    lost_letter = missing(ledger, clean[:2], expected)
    assert len(lost_letter) == 1 and "trx-bad" in lost_letter[0]
    lost_decision = missing(ledger, [clean[0], clean[2]], expected)
    assert len(lost_decision) == 1 and "fraud.decisions" in lost_decision[0]
