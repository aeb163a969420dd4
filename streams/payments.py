"""The payments stage: validates transactions, scores fraud, tags VAT, emits enriched payments."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from models.common import SCHEMA_VERSION
from models.features import TX_PREFIX, attempt_key, entity_keys, partition_of, state_key
from models.inputs import Transaction
from models.outputs import Action, FraudDecision, VatTag
from streams.codec import Decoder
from streams.components import BatchObserver, FraudScorer, VatTagger
from streams.core import EPOCH, EventClock, Out, Record, Stage
from streams.durable import PartitionedState, TrackedMap
from streams.topics import Topics

CUSTOMER_KEY = "customer:"  # FeatureStore keys are "<entity>:<key>" (models.features.entity_keys)


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
        scope_partitions: int | None = None,
    ) -> None:
        self.topics = topics
        # With a partition count, device, card, IP and merchant state is kept per input
        # partition (PANTAU_ENTITY_SCOPE=partition): the partition a record came from, or in a
        # replay the one Kafka's default partitioner gives its customer id.
        self.scope_partitions = scope_partitions
        self.fraud = fraud
        self.vat = vat
        self.observers = list(observers)
        self.decoder = Decoder(Transaction, topics.deadletter, max_bytes=max_bytes)
        self.clock = EventClock(lateness=lateness)
        # The customer feature state, kept per source partition so that live it can go to a
        # changelog and be restored by whichever worker owns the partition next (streams/app.py).
        self.durable: PartitionedState | None = None
        self.store = store = getattr(fraud, "store", None)
        if store is not None:
            state = store.state
            if not isinstance(state, TrackedMap):
                state = store.state = TrackedMap("", state)
            # the transactions kept for late labels, in shards per partition ("tx:<p>/<shard>")
            remembered = store.tx_merchants
            if not isinstance(remembered, TrackedMap):
                remembered = store.tx_merchants = TrackedMap("", remembered)
            # per partition, every key belongs to one partition, as the customer's do
            exclusive = CUSTOMER_KEY if scope_partitions is None else ""
            self.durable = PartitionedState(
                state, exclusive=exclusive, side=remembered, side_prefix=TX_PREFIX
            )
        # partition → the highest offset a previous owner fully handled (after a takeover; kept
        # until the partition is handed over)
        self.delivered: dict[int, int] = {}
        # partition → (the highest offset of the previous owner's last logged batch, the
        # decisions it logged for it), until this worker's batches pass that offset: its own
        # markers carry them on, should it die before (streams/statelog.py:payments_markers)
        self.inherited: dict[int, tuple[int, list[tuple[str, dict[str, Any]]]]] = {}
        # partition → (attempt key, decision value) of the decisions made since `journal` was
        # last called, kept once `journaling` is set: live, they are logged with the state
        # before any output is sent (streams/statelog.py).
        self.journaling = False
        self._decided: dict[int, list[tuple[str, dict[str, Any]]]] = {}

    @property
    def consumes(self) -> tuple[str, ...]:
        return (self.topics.transactions,)

    def process(self, records: Sequence[Record]) -> list[Out]:
        if self.delivered:
            records = self.not_delivered(records)
        out: list[Out] = []
        valid: list[Transaction] = []
        rejected: list[Record] = []
        origins: list[tuple[int | None, int | None]] = []  # each valid one's (partition, offset)
        positions: dict[int | None, datetime] = {}  # partition → its latest event time
        durable = self.durable
        partitions = self.scope_partitions
        scopes: list[int | None] | None = [] if partitions is not None else None
        for record in records:
            event, letter = self.decoder.decode(record)
            if letter is not None:
                out.append(letter)
                rejected.append(record)
            else:
                assert isinstance(event, Transaction)
                valid.append(event)
                origins.append((record.partition, record.offset))
                scope = None
                if scopes is not None:
                    scope = record.partition
                    if scope is None:
                        scope = partition_of(event.customer_id, partitions or 1)
                    scopes.append(scope)
                if durable is not None and record.partition is not None:
                    for entity, key in entity_keys(event).items():
                        if key is not None:
                            durable.own(state_key(entity, key, scope), record.partition)
                at = event.created_at
                self.clock.observe(at)
                if at > positions.get(record.partition, EPOCH):
                    positions[record.partition] = at
        if rejected:  # observers may count dead letters (health: the dead-letter rate alert)
            for observer in self.observers:
                hook = getattr(observer, "rejected", None)
                if hook is not None:
                    out.extend(hook(rejected))
                    if not valid:  # health counts them in `observe`, with the valid ones
                        out.extend(observer.observe([]))
        if not valid:
            return out
        for observer in self.observers:  # optional: health's watermark follows each partition
            hook = getattr(observer, "positions", None)
            if hook is not None:
                hook(positions)
            hook = getattr(observer, "origins", None)
            if hook is not None:
                hook(origins)
        live = durable is not None and origins[0][0] is not None
        sources = [origin[0] for origin in origins] if live else None
        decisions = (
            self.fraud.score(valid, scopes, sources)
            if self.fraud is not None
            else [None] * len(valid)
        )
        enriched_topic = self.topics.enriched
        decisions_topic = self.topics.decisions
        decided = self._decided if self.journaling else None
        for i, (tx, decision) in enumerate(zip(valid, decisions, strict=True)):
            vat = self.vat.tag(tx) if self.vat is not None else None
            if decision is not None:
                value = decision.model_dump(mode="json")
                out.append(Out(decisions_topic, tx.transaction_id, value))
                partition = origins[i][0]
                if decided is not None and partition is not None:
                    decided.setdefault(partition, []).append((attempt_key(tx), value))
            out.append(Out(enriched_topic, tx.transaction_id, enriched_value(tx, vat, decision)))
        for observer in self.observers:
            out.extend(observer.observe(valid))
        return out

    def handed_over(self, partition: int) -> int:
        """Another worker owns the partition now: forget its state; returns the keys dropped."""
        self.delivered.pop(partition, None)
        self.inherited.pop(partition, None)
        if self.store is not None:
            self.store.released(partition)
        return self.durable.drop(partition) if self.durable is not None else 0

    def not_delivered(self, records: Sequence[Record]) -> list[Record]:
        """The records a previous owner of their partition has not fully handled (the ones this
        worker decides; the rest it skips)."""
        # Skipped for as long as this worker holds the partition: the group can give it the
        # same records again (after a rebalance that left it the partition, before a commit).
        upto = self.delivered.get
        return [
            r
            for r in records
            if r.partition is None or r.offset is None or r.offset > upto(r.partition, -1)
        ]

    def tick(self) -> list[Out]:
        out: list[Out] = []
        for observer in self.observers:
            out.extend(observer.flush())
        return out

    # -- durable state (live; replay keeps everything in one process) -------------------------

    def journal(self) -> dict[int, list[tuple[str, dict[str, Any]]]]:
        """partition → (attempt key, decision value) of every decision made since the last call
        (live: logged with the state before the outputs are sent, see streams/statelog.py)."""
        decided, self._decided = self._decided, {}
        return decided

    def restored(
        self,
        partition: int,
        careful_until: int,
        delivered_upto: int = -1,
        decided: Sequence[tuple[str, dict[str, Any]]] = (),
        logged_upto: int = -1,
    ) -> None:
        """A worker took over `partition` and restored its state. Records up to offset
        `delivered_upto` were processed by the previous owner, their outputs delivered and their
        state in what was restored: they are skipped. Records up to `careful_until` may have been
        processed by it (optional observer hook `restored`: health counts those one by one so a
        repeat is recognised). `decided`: the decisions it logged for its last batch (attempt
        key, decision value), which it may have sent: those attempts get them again;
        `logged_upto`: the highest offset of that batch."""
        if delivered_upto >= 0:
            self.delivered[partition] = delivered_upto
        if decided and logged_upto > delivered_upto:
            self.inherited[partition] = (logged_upto, list(decided))
        if self.store is not None:
            self.store.held(partition)  # the labels that came before: counted now
        remember = getattr(self.fraud, "remember", None)
        if decided and remember is not None:
            remember((key, FraudDecision.model_validate(value)) for key, value in decided)
        for observer in self.observers:
            hook = getattr(observer, "restored", None)
            if hook is not None:
                hook(partition, careful_until)


_dump_transaction = Transaction.__pydantic_serializer__.to_python


def enriched_value(
    tx: Transaction, vat: VatTag | None, decision: FraudDecision | None
) -> dict[str, Any]:
    """The payments.enriched value: what `EnrichedTransaction(..., vat, fraud=FraudSummary(...))`
    dumps as JSON, built without constructing and validating the two models per payment (the
    transaction's fields, then schema_version, vat and the decision's gist, in the contract's
    order; tests/unit/test_fastpath.py compares both)."""
    value: dict[str, Any] = _dump_transaction(tx, mode="json")
    value["schema_version"] = SCHEMA_VERSION
    value["vat"] = vat.model_dump(mode="json") if vat is not None else None
    value["fraud"] = (
        {
            "action": Action(decision.action).value,
            "score": float(decision.score),
            "rules_version": decision.rules_version,
            "model_version": decision.model_version,
        }
        if decision is not None
        else None
    )
    return value
