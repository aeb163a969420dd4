"""The interfaces the payments stage calls: fraud scoring, VAT tagging, batch observers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from models.inputs import Transaction
from models.outputs import FraudDecision, VatTag
from streams.core import Out


class FraudScorer(Protocol):
    """Scores a micro-batch of transactions (features, rules, model) into decisions, in order."""

    def score(
        self,
        transactions: Sequence[Transaction],
        scopes: Sequence[int | None] | None = None,
        partitions: Sequence[int | None] | None = None,
    ) -> list[FraudDecision]: ...


class VatTagger(Protocol):
    """Tags one transaction with VAT; None when it did not succeed."""

    def tag(self, transaction: Transaction) -> VatTag | None: ...


class BatchObserver(Protocol):
    """Sees each valid transaction batch and returns messages for internal topics
    (health pre-aggregates keyed by channel, settlement facts keyed by transaction_id)."""

    def observe(self, transactions: Sequence[Transaction]) -> list[Out]: ...

    def flush(self) -> list[Out]: ...

    # Optional: `rejected(records) -> list[Out]` is called with the records of a batch that were
    # dead-lettered (health counts the dead-letter rate), and `positions({partition: latest
    # event time})` before `observe` (health's watermark follows its slowest partition);
    # observers may leave them out.
