"""The payments stage: validates transactions, scores fraud, tags VAT, emits enriched payments."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from models.inputs import Transaction
from models.outputs import EnrichedTransaction, FraudSummary
from streams.codec import Decoder
from streams.components import BatchObserver, FraudScorer, VatTagger
from streams.core import EPOCH, EventClock, Out, Record, Stage
from streams.topics import Topics


class PaymentsStage(Stage):
    """Consumes payments.transactions (keyed by customer, so per-customer state is local)."""

    name = "payments"

    def __init__(
        self,
        topics: Topics,
        *,
        fraud: FraudScorer | None = None,
        vat: VatTagger | None = None,
        observers: Sequence[BatchObserver] = (),
        max_bytes: int = 1_000_000,
        lateness: timedelta = timedelta(seconds=30),
    ) -> None:
        self.topics = topics
        self.fraud = fraud
        self.vat = vat
        self.observers = list(observers)
        self.decoder = Decoder(Transaction, topics.deadletter, max_bytes=max_bytes)
        self.clock = EventClock(lateness=lateness)

    @property
    def consumes(self) -> tuple[str, ...]:
        return (self.topics.transactions,)

    def process(self, records: Sequence[Record]) -> list[Out]:
        out: list[Out] = []
        valid: list[Transaction] = []
        rejected: list[Record] = []
        positions: dict[int | None, datetime] = {}  # partition → its latest event time
        for record in records:
            event, letter = self.decoder.decode(record)
            if letter is not None:
                out.append(letter)
                rejected.append(record)
            else:
                assert isinstance(event, Transaction)
                valid.append(event)
                at = event.created_at
                self.clock.observe(at)
                if at > positions.get(record.partition, EPOCH):
                    positions[record.partition] = at
        if rejected:  # observers may count dead letters (health: the dead-letter rate alert)
            for observer in self.observers:
                hook = getattr(observer, "rejected", None)
                if hook is not None:
                    out.extend(hook(rejected))
        if not valid:
            return out
        for observer in self.observers:  # optional: health's watermark follows each partition
            hook = getattr(observer, "positions", None)
            if hook is not None:
                hook(positions)
        decisions = self.fraud.score(valid) if self.fraud is not None else [None] * len(valid)
        enriched_topic = self.topics.enriched
        decisions_topic = self.topics.decisions
        for tx, decision in zip(valid, decisions, strict=True):
            vat = self.vat.tag(tx) if self.vat is not None else None
            summary = None
            if decision is not None:
                summary = FraudSummary(
                    action=decision.action,
                    score=decision.score,
                    rules_version=decision.rules_version,
                    model_version=decision.model_version,
                )
                out.append(Out.of(decisions_topic, tx.transaction_id, decision))
            enriched = EnrichedTransaction.model_construct(
                **tx.__dict__, schema_version=1, vat=vat, fraud=summary
            )
            out.append(Out.of(enriched_topic, tx.transaction_id, enriched))
        for observer in self.observers:
            out.extend(observer.observe(valid))
        return out

    def tick(self) -> list[Out]:
        out: list[Out] = []
        for observer in self.observers:
            out.extend(observer.flush())
        return out
