"""Fraud scoring in the pipeline: the scorer, the broadcast rule-pack stage, the labels stage."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from models.artifact import Model, load_model
from models.features import FeatureStore, attempt_key
from models.inputs import FraudLabel, Transaction
from models.outputs import FraudDecision, Severity
from models.scoring import decide
from rules.check import check_pack
from rules.engine import CompiledPack
from rules.pack import RulePack, load_pack
from streams import metrics
from streams.alerts import AlertTracker
from streams.codec import Decoder, dead_letter, describe_errors
from streams.core import EventClock, Out, Record, Stage
from streams.topics import Topics

REJECTED_ALERT = "rule_pack_rejected"
DECISION_MEMORY = timedelta(hours=1)  # how long (event time) a redelivery gets the same decision
# ...and at most this many attempts: a decision object is a few KB, and an hour of a busy
# gateway is tens of millions of attempts. Redeliveries come within seconds (the commit interval
# and a rebalance), so the newest 50,000 cover them.
MAX_REMEMBERED_DECISIONS = 50_000


class PackRefused(Exception):
    """A pack that fails `rules check`: the active pack stays."""

    def __init__(self, label: str, problems: list[str]) -> None:
        super().__init__(f"rule pack {label} refused: " + "; ".join(problems[:5]))
        self.label = label
        self.problems = problems


def compile_checked(pack: RulePack) -> CompiledPack:
    """Check a pack like `pantau rules check` and compile it; raises PackRefused."""
    result = check_pack(pack)
    if not result.ok:
        raise PackRefused(pack.label, [str(p) for p in result.problems])
    return CompiledPack(pack)


def load_compiled(path: Path | None) -> CompiledPack:
    """The pack file given (or the shipped default), checked and compiled."""
    from rules.check import check_file
    from rules.pack import DEFAULT_PACK

    path = path or DEFAULT_PACK
    result = check_file(path)
    if not result.ok or result.pack is None:
        raise ValueError(
            f"rule pack {path} fails its check:\n" + "\n".join(str(p) for p in result.problems)
        )
    return CompiledPack(load_pack(path).pack)


def load_model_dir(path: Path | None) -> Model:
    """The model directory given, or the shipped default."""
    from models.artifact import DEFAULT_DIR, ArtifactError

    try:
        return load_model(path or DEFAULT_DIR)
    except ArtifactError as exc:
        raise ValueError(str(exc)) from None


class FraudScorer:
    """Features, rules and the model over a micro-batch; implements components.FraudScorer.

    The active pack is one reference, replaced only by `swap` between two micro-batches, so a
    batch is scored entirely under one pack and every decision names its version.
    """

    def __init__(
        self,
        pack: CompiledPack,
        model: Model | None,
        store: FeatureStore | None = None,
    ) -> None:
        self.pack = pack
        self.model = model
        self.store = store if store is not None else FeatureStore()
        self.rows: list[dict[str, Any]] = []  # the last batch's feature rows (backtests read them)
        # Decisions of recent attempts by attempt key, oldest first: a redelivery gets its own.
        self.recent: dict[str, FraudDecision] = {}
        self.latest: datetime | None = None
        metrics.fraud_versions(pack.label, model.version if model else "none")

    def swap(self, pack: CompiledPack) -> None:
        """Make a checked pack the active one (takes effect with the next micro-batch)."""
        self.pack = pack
        metrics.fraud_versions(pack.label, self.model.version if self.model else "none")

    def features(
        self,
        transactions: Sequence[Transaction],
        scopes: Sequence[int | None] | None = None,
        partitions: Sequence[int | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Apply a batch to the feature state and return its rows (in order); `scopes`: each
        transaction's input partition when entity state is kept per partition; `partitions`:
        each one's input partition (live), where it is remembered for late labels."""
        return self.store.apply_batch(transactions, scopes, partitions)

    def model_scores(self, rows: list[dict[str, Any]]) -> Any:
        """The model's probabilities for a batch of rows (None without a model)."""
        return self.model.predict(rows) if self.model is not None else None

    def decide_rows(
        self,
        transactions: Sequence[Transaction],
        rows: list[dict[str, Any]],
        pack: CompiledPack,
        scores: Any = None,
    ) -> list[FraudDecision]:
        """Decisions for rows already computed, under a given pack (live pack or a backtest's);
        pass `scores` to reuse the model's probabilities of the same rows."""
        hits = pack.evaluate(rows)
        if scores is None:
            scores = self.model_scores(rows)
        version = self.model.version if self.model is not None else None
        rules = [r.rule for r in pack.rules]
        out = []
        for j, (tx, row) in enumerate(zip(transactions, rows, strict=True)):
            out.append(
                decide(
                    transaction_id=tx.transaction_id,
                    decided_at=tx.created_at,
                    row=row,
                    rules=rules,
                    hits=hits[:, j],
                    pack=pack.pack,
                    model_score=float(scores[j]) if scores is not None else None,
                    model_version=version,
                    channel=tx.channel,
                    method=tx.method.value,
                    amount=tx.amount,
                )
            )
        return out

    def score(
        self,
        transactions: Sequence[Transaction],
        scopes: Sequence[int | None] | None = None,
        partitions: Sequence[int | None] | None = None,
    ) -> list[FraudDecision]:
        """Decisions for a micro-batch, in order. A redelivered attempt (same attempt key, e.g.
        an unacknowledged batch read again) gets the decision it already had. `scopes`,
        `partitions`: see `features`."""
        started = time.perf_counter()
        pack = self.pack  # one pack for the whole batch
        keys = [attempt_key(tx) for tx in transactions]
        fresh: list[int] = []
        batch_keys: set[str] = set()
        for i, key in enumerate(keys):
            if key not in self.recent and key not in batch_keys:
                batch_keys.add(key)
                fresh.append(i)
        if len(fresh) < len(keys):
            txs = [transactions[i] for i in fresh]
            scopes = [scopes[i] for i in fresh] if scopes is not None else None
            partitions = [partitions[i] for i in fresh] if partitions is not None else None
        else:
            txs = list(transactions)
        rows = self.features(txs, scopes, partitions)
        self.rows = rows
        sweep = self.store.expire()  # a chunk of the daily eviction sweep, if one is under way
        if sweep is not None:
            metrics.feature_sweep(sweep.evicted, sweep.kept)
        decided = self.decide_rows(txs, rows, pack)
        for i, decision in zip(fresh, decided, strict=True):
            self.recent[keys[i]] = decision
        decisions = decided if len(fresh) == len(keys) else [self.recent[k] for k in keys]
        self._forget(transactions)
        metrics.observe_fraud_batch(decided, time.perf_counter() - started)
        for compiled in pack.rules:
            if compiled.expression.errors:
                metrics.rule_errors(compiled.rule.id, compiled.expression.errors)
                compiled.expression.errors = 0
        return decisions

    def remember(self, decided: Iterable[tuple[str, FraudDecision]]) -> None:
        """Decisions another worker made and may have sent, by attempt key (after a takeover):
        their attempts, redelivered here, get them again instead of a new decision."""
        for key, decision in decided:
            self.recent[key] = decision

    def _forget(self, transactions: Sequence[Transaction]) -> None:
        """Drop remembered decisions older than DECISION_MEMORY of event time (bounded memory)."""
        latest = max(tx.created_at for tx in transactions) if transactions else None
        if latest is None:
            return
        if self.latest is None or latest > self.latest:
            self.latest = latest
        horizon = self.latest - DECISION_MEMORY
        recent = self.recent
        while recent:
            key = next(iter(recent))
            if recent[key].decided_at >= horizon and len(recent) <= MAX_REMEMBERED_DECISIONS:
                break
            del recent[key]


class RulesStage(Stage):
    """pantau.rules (broadcast: every worker reads every pack): check, then swap atomically."""

    name = "fraud-rules"
    broadcast = True

    def __init__(
        self, topics: Topics, scorer: FraudScorer, alerts: AlertTracker | None = None
    ) -> None:
        self.topics = topics
        self.scorer = scorer
        self.alerts = (
            alerts if alerts is not None else AlertTracker(topics.alerts, names=(REJECTED_ALERT,))
        )
        self.clock = EventClock()

    @property
    def consumes(self) -> tuple[str, ...]:
        return (self.topics.rules,)

    def process(self, records: Sequence[Record]) -> list[Out]:
        out: list[Out] = []
        for record in records:
            out.extend(self._one(record))
        return out

    def _one(self, record: Record) -> list[Out]:
        now = datetime.now(UTC)
        try:
            pack = RulePack.model_validate_json(record.value)
        except ValidationError as exc:
            label = record.key.decode("utf-8", "replace") if record.key else "unknown"
            return self._refuse(label, [describe_errors(exc)], now, record)
        at = pack.published_at or now
        try:
            compiled = compile_checked(pack)
        except PackRefused as exc:
            return self._refuse(pack.label, exc.problems, at, record)
        self.scorer.swap(compiled)
        metrics.rule_pack_result("accepted")
        return self.alerts.update(
            REJECTED_ALERT,
            {"pack": pack.id},
            False,
            at=at,
            summary=f"rule pack {pack.label} accepted",
        )

    def _refuse(self, label: str, problems: list[str], at: datetime, record: Record) -> list[Out]:
        metrics.rule_pack_result("rejected")
        pack_id = label.rsplit("-", 1)[0] if "-" in label else label
        summary = f"rule pack {label} refused, {self.scorer.pack.label} stays active: " + "; ".join(
            problems[:3]
        )
        out = self.alerts.update(
            REJECTED_ALERT,
            {"pack": pack_id},
            True,
            at=at,
            value=float(len(problems)),
            threshold=0.0,
            severity=Severity.WARNING,
            summary=summary[:1000],
        )
        out.append(dead_letter(record, summary[:1000], self.topics.deadletter))
        return out


class LabelsStage(Stage):
    """fraud.labels (broadcast): confirmed frauds feed the merchant fraud rate once they arrive."""

    name = "fraud-labels"
    broadcast = True

    def __init__(self, topics: Topics, store: FeatureStore, max_bytes: int = 1_000_000) -> None:
        self.topics = topics
        self.store = store
        self.decoder = Decoder(FraudLabel, topics.deadletter, max_bytes=max_bytes)
        self.clock = EventClock(lateness=timedelta(0))

    @property
    def consumes(self) -> tuple[str, ...]:
        return (self.topics.labels,)

    def process(self, records: Sequence[Record]) -> list[Out]:
        out: list[Out] = []
        for record in records:
            label, letter = self.decoder.decode(record)
            if letter is not None:
                out.append(letter)
                continue
            assert isinstance(label, FraudLabel)
            self.store.add_label(label)
            self.clock.observe(label.reported_at)
        if self.clock.started:
            self.store.expire_labels(self.clock.latest)
        return out


def pack_message(pack: RulePack) -> bytes:
    """The pantau.rules value of a pack (JSON)."""
    return orjson.dumps(pack.model_dump(mode="json"))


def build_fraud(settings: Any) -> tuple[FraudScorer, list[Stage]]:
    """The scorer and its stages from settings (rules_pack, model_dir; defaults when unset).

    Raises ValueError when the given pack fails its check or the model cannot be trusted."""
    from models.artifact import DEFAULT_DIR, MANIFEST

    pack = load_compiled(settings.rules_pack)
    model: Model | None = None
    if settings.model_dir is not None or (DEFAULT_DIR / MANIFEST).exists():
        model = load_model_dir(settings.model_dir)
    # rocksdb-store: feature state in the mappings PANTAU_STORE names (dicts or RocksDB).
    from streams.stores import open_state

    store = FeatureStore(
        state=open_state(settings, "features"), tx_merchants=open_state(settings, "tx-merchants")
    )
    scorer = FraudScorer(pack, model, store=store)
    # end rocksdb-store
    stages: list[Stage] = [
        RulesStage(settings.topics, scorer),
        LabelsStage(settings.topics, scorer.store, settings.max_message_bytes),
    ]
    return scorer, stages


async def publish_pack(pack: RulePack, broker: str, topic: str) -> None:
    """Send a pack to pantau.rules (key = pack id) and wait until the broker has it."""
    from aiokafka import AIOKafkaProducer

    from streams.sim_output import bootstrap_servers

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(broker),
        acks="all",
        enable_idempotence=False,  # the embedded broker refuses InitProducerId
        request_timeout_ms=15000,
    )
    try:
        await producer.start()
        await producer.send_and_wait(topic, value=pack_message(pack), key=pack.id.encode())
    finally:
        await producer.stop()
