"""Callbacks in, settlement out: verify and dedupe callbacks, match them to transactions, alert."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, MutableMapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.common import iso_utc
from models.inputs import Callback, Transaction
from models.outputs import Severity
from rules.vat import VatTagger
from streams import metrics
from streams.alert_windows import (
    DELAY,
    MISSING,
    SIGNATURES,
    ProgressBeat,
    SampleLog,
)
from streams.callbacks import FINAL_STATUSES, CallbackVerifier, FactStatus, Untrusted
from streams.codec import Decoder, dead_letter, describe_errors
from streams.core import EventClock, Out, Record, Stage
from streams.durable import PartitionedMaps, TrackedMap
from streams.settings import Settings
from streams.topics import Topics

# Headers that carry a credential rather than a signature of the request.
CREDENTIAL_HEADERS = frozenset({"x-callback-token", "authorization", "cookie", "x-api-key"})
RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
SETTLEMENT_RULES = RULES_DIR / "settlement.yaml"
FINAL_VALUES = frozenset(s.value for s in FINAL_STATUSES)


# ---- rules -------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EarlyCallbacks(_Strict):
    """Bounds on callbacks waiting for their transaction."""

    max_waiting: int = Field(default=50_000, ge=0)
    max_wait_s: float = Field(default=3600, ge=0)


class Duplicates(_Strict):
    """How long and how many callbacks are remembered to drop duplicates."""

    max_remembered: int = Field(default=200_000, ge=1)
    remember_s: float = Field(default=604_800, gt=0)


class DelayAlert(_Strict):
    """settlement_delay_high: p95 of settlement delays over a window above a threshold."""

    p95_s: float = Field(default=14_400, gt=0)
    window_s: float = Field(default=3600, gt=0)
    min_samples: int = Field(default=20, ge=1)
    severity: Severity = Severity.WARNING


class CountAlert(_Strict):
    """An alert on a count of events within an event-time window."""

    threshold: int = Field(default=10, ge=0)
    window_s: float = Field(default=3600, gt=0)
    severity: Severity = Severity.WARNING


class SettlementAlerts(_Strict):
    """The settlement stage's alert thresholds."""

    settlement_delay_high: DelayAlert = Field(default_factory=DelayAlert)
    callbacks_missing: CountAlert = Field(default_factory=CountAlert)
    callback_signature_failures: CountAlert = Field(
        default_factory=lambda: CountAlert(threshold=20, window_s=300, severity=Severity.CRITICAL)
    )


class BalanceRules(_Strict):
    """Low-balance thresholds: a default and per-merchant overrides (IDR)."""

    default_threshold: Decimal = Decimal("10000000")
    merchants: dict[str, Decimal] = Field(default_factory=dict)

    def threshold_for(self, merchant_id: str) -> Decimal:
        """The merchant's own threshold, else the default."""
        return self.merchants.get(merchant_id, self.default_threshold)


def _default_deadlines() -> dict[str, float | None]:
    return {"default": 86_400.0}


class SettlementRules(_Strict):
    """rules/settlement.yaml."""

    version: str = "settlement-default"
    # Per method; null: that method gets no settlement callback, so none is awaited.
    deadlines_s: dict[str, float | None] = Field(default_factory=lambda: _default_deadlines())
    early_callbacks: EarlyCallbacks = Field(default_factory=EarlyCallbacks)
    duplicates: Duplicates = Field(default_factory=Duplicates)
    alerts: SettlementAlerts = Field(default_factory=SettlementAlerts)
    balances: BalanceRules = Field(default_factory=BalanceRules)

    def deadline_for(self, method: str) -> timedelta | None:
        """How long a transaction of this method may wait for its final callback (None: no
        callback is expected for it)."""
        seconds = self.deadlines_s.get(method, self.deadlines_s.get("default", 86_400.0))
        return None if seconds is None else timedelta(seconds=seconds)


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from a rules file; ValueError naming the file when it cannot be used."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: must hold a mapping")
    return data


def load_settlement_rules(path: Path | None = None) -> SettlementRules:
    """Settlement rules from a YAML file (rules/settlement.yaml by default)."""
    path = path or SETTLEMENT_RULES
    try:
        return SettlementRules.model_validate(load_yaml(path))
    except ValidationError as exc:
        raise ValueError(f"{path}: {describe_errors(exc)}") from None


# ---- helpers -----------------------------------------------------------------------------------

_UNKNOWN: Any = object()


def _epoch(at: datetime) -> float:
    return at.timestamp()


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _fact_epoch(fact: dict[str, Any]) -> float:
    """When a callback fact was received (epoch seconds; -inf when it cannot be read)."""
    received = _parse_iso(fact.get("received_at"))
    return _epoch(received) if received is not None else float("-inf")


def _parse_iso(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else None


def in_time_order(mapping: MutableMapping[str, Any], at: Callable[[Any], float]) -> None:
    """Re-insert a mapping's entries in time order (restored ones were appended at its end;
    the bounds and expiry take the oldest from the front)."""
    data = mapping.data if isinstance(mapping, TrackedMap) else mapping
    ordered = sorted(data.items(), key=lambda kv: at(kv[1]))
    data.clear()
    data.update(ordered)


def expire_front(
    state: MutableMapping[str, Any], horizon: float, at: Callable[[Any], float]
) -> None:
    """Drop entries older than horizon from the front of an insertion-ordered mapping (entries
    arrive in about event-time order, so the scan stops at the first young one)."""
    doomed = []
    for key, value in state.items():
        if at(value) >= horizon:
            break
        doomed.append(key)
    for key in doomed:
        del state[key]


def bound_front(state: MutableMapping[str, Any], limit: int) -> None:
    """Drop the oldest entries (the front of an insertion-ordered mapping) beyond `limit`."""
    excess = len(state) - limit
    if excess > 0:
        for key in list(itertools.islice(iter(state), excess)):
            del state[key]


# ---- the callbacks stage -----------------------------------------------------------------------


class CallbacksStage(Stage):
    """payments.callbacks → trusted, deduplicated facts on pantau.settlement; the rest dead-letter.

    An untrusted callback (bad or missing signature, stale timestamp, foreign address, unusable
    body) changes nothing: it is dead-lettered with its reason, counted by provider and reason,
    and sampled for `callback_signature_failures` (judged over every worker's samples by
    streams/alert_windows.py). A duplicate (same provider, reference and status) is dropped.

    The dedup memory names the record that first carried each fact (`seen`: key → [received,
    partition, offset]): that record read again (a redelivery) sends its fact again, identical,
    any other is a duplicate. So live its state can go to a changelog before the outputs are
    sent (`journal_state`, streams/statelog.py) and nothing is lost when a worker dies between
    the two. The signature-failure samples are kept per partition for their window and sent
    again by a worker taking the partition over; each counts once, by its record.
    """

    name = "callbacks"

    def __init__(
        self,
        topics: Topics,
        verifier: CallbackVerifier,
        rules: SettlementRules | None = None,
        *,
        seen: MutableMapping[str, Any] | None = None,
        failures: MutableMapping[str, Any] | None = None,
        max_bytes: int = 1_000_000,
        lateness: timedelta = timedelta(seconds=30),
        redact: Sequence[str] = (),
        samples_partitions: int = 1,
    ) -> None:
        self.topics = topics
        self.verifier = verifier
        # Secret values never reach a dead letter, even when a callback carries one (Xendit's
        # token header is the secret itself; a leaked key may come from a foreign address).
        self.redact = sorted({v for v in redact if len(v) >= 6}, key=len, reverse=True)
        self.rules = rules or SettlementRules()
        self.seen: MutableMapping[str, Any] = seen if seen is not None else {}
        self.failures = SampleLog(
            SIGNATURES,
            failures if failures is not None else {},
            self.rules.alerts.callback_signature_failures.window_s,
            lambda provider: {"provider": provider},
        )
        self.beat = ProgressBeat(topics.alert_samples, samples_partitions)
        # Callbacks carry long provider references: card-like runs are masked, never refused.
        self.decoder = Decoder(
            Callback, topics.deadletter, max_bytes=max_bytes, refuse_card_numbers=False
        )
        self.clock = EventClock(lateness=lateness)
        self.durable: PartitionedMaps | None = None

    @property
    def consumes(self) -> tuple[str, ...]:
        return (self.topics.callbacks,)

    @property
    def changelog(self) -> str:
        """Where its state goes live (streams/statelog.py KeyedStateLog)."""
        return self.topics.callbacks_state

    def state_maps(self) -> dict[str, MutableMapping[str, Any]]:
        """The state by name, as its changelog keys name it (`<name>/<key>`)."""
        return {"seen": self.seen, "failures": self.failures.state}

    def journal_state(self) -> PartitionedMaps:
        """Track every change of the state from now on, per source partition (live)."""
        if self.durable is None:
            self.seen = TrackedMap("", self.seen)
            self.failures.state = TrackedMap("", self.failures.state)
            self.durable = self.failures.durable = PartitionedMaps(
                {name: cast(TrackedMap, m) for name, m in self.state_maps().items()}
            )
        return self.durable

    def restored(self, partition: int) -> None:
        """A partition's state was loaded: the dedup memory back in time order (it expires from
        the front), its failure samples sent again (a crash may have kept them from the judge)."""
        in_time_order(self.seen, _seen_at)
        self.failures.reindex()
        self.failures.resend(partition)

    def handed_over(self, partition: int) -> None:
        self.failures.reindex()

    def process(self, records: Sequence[Record]) -> list[Out]:
        out: list[Out] = []
        for record in records:
            event, letter = self.decoder.decode(record)
            if letter is not None:
                out.append(self._scrub(letter))
                continue
            assert isinstance(event, Callback)
            self.clock.observe(event.received_at)
            provider = event.provider.value
            try:
                fact = self.verifier.check(event)
            except Untrusted as exc:
                metrics.child(metrics.CALLBACKS, provider, "untrusted").inc()
                metrics.child(
                    metrics.CALLBACK_VERIFICATION_FAILURES, provider, exc.reason.value
                ).inc()
                # Counted once per record: a redelivery is the same sample.
                ident = (
                    f"{record.partition}/{record.offset}"
                    if record.offset is not None
                    else f"{record.topic}:{record.line}:{event.callback_id}"
                )
                self.failures.add(record.partition, provider, [_epoch(event.received_at), 1, ident])
                out.append(self._untrusted(record, event, f"untrusted_callback: {provider} {exc}"))
                continue
            key = f"{provider}|{fact.transaction_id}|{fact.status.value}"
            first = self.seen.get(key)
            here = [record.partition, record.offset]
            if first is not None and (here[1] is None or _seen_from(first) != here):
                metrics.child(metrics.CALLBACKS, provider, "duplicate").inc()
                continue
            if first is None:
                if self.durable is not None and record.partition is not None:
                    self.durable.own(key, record.partition)
                self.seen[key] = [_epoch(event.received_at), *here]
                metrics.child(metrics.CALLBACKS, provider, "trusted").inc()
                metrics.child(metrics.CALLBACK_FACTS, provider, fact.status.value).inc()
            value = fact.to_json()
            out.append(Out(self.topics.settlement, value["transaction_id"], value))
        bound_front(self.seen, self.rules.duplicates.max_remembered)
        return out + self._samples()

    def _samples(self) -> list[Out]:
        """The failure samples added or to send again, in the order providers first had one,
        and the progress beat: the judge's windows slide with this stage's event time."""
        if not self.clock.started:
            return []
        return self.beat.send(_epoch(self.clock.latest), self.failures)

    def _untrusted(self, record: Record, callback: Callback, reason: str) -> Out:
        """The dead letter of an untrusted callback: the callback as received, with credential
        headers redacted and configured secret values blanked."""
        value = callback.model_dump(mode="json")
        value["headers"] = {
            k: ("[redacted]" if k in CREDENTIAL_HEADERS else v) for k, v in value["headers"].items()
        }
        shown = Record(
            topic=record.topic,
            value=orjson.dumps(value),
            key=record.key,
            partition=record.partition,
            offset=record.offset,
            line=record.line,
        )
        return self._scrub(dead_letter(shown, reason, self.topics.deadletter))

    def _scrub(self, letter: Out) -> Out:
        if self.redact:
            for field in ("raw", "reason"):
                text = letter.value[field]
                for secret in self.redact:
                    if secret in text:
                        text = text.replace(secret, "[redacted]")
                letter.value[field] = text
        return letter

    def tick(self) -> list[Out]:
        if not self.clock.started:
            return []
        now = _epoch(self.clock.latest)
        self.failures.expire(now)
        expire_front(self.seen, now - self.rules.duplicates.remember_s, _seen_at)
        return self._samples()


def _seen_at(value: Any) -> float:
    """When a remembered callback fact was received ([received, partition, offset]; a bare
    number in state written before the record was remembered too)."""
    return float(value[0]) if isinstance(value, list) else float(value)


def _seen_from(value: Any) -> list[Any] | None:
    """[partition, offset] of the record that carried a remembered fact first."""
    return list(value[1:3]) if isinstance(value, list) else None


# ---- the payments-side observer ----------------------------------------------------------------


class SettlementFeed:
    """A BatchObserver for PaymentsStage: slim transaction facts to pantau.settlement."""

    def __init__(self, topics: Topics) -> None:
        self.topic = topics.settlement

    def observe(self, transactions: Sequence[Transaction]) -> list[Out]:
        out = []
        for tx in transactions:
            value = {
                "kind": "transaction",
                "transaction_id": tx.transaction_id,
                "created_at": iso_utc(tx.created_at),
                "channel": tx.channel,
                "method": tx.method.value,
                "status": tx.status.value,
                "amount": format(tx.amount, "f"),
                "merchant_id": tx.merchant_id,
            }
            out.append(Out(self.topic, tx.transaction_id, value))
        return out

    def flush(self) -> list[Out]:
        return []


# ---- the settlement stage ----------------------------------------------------------------------


class SettlementStage(Stage):
    """pantau.settlement: matches callbacks to transactions, measures delay, counts the missing.

    State (plain mappings, JSON values): `awaiting` transactions without a final callback,
    `early` callbacks waiting for their transaction, `recent` finalized or missed transactions
    (so late events change nothing or still measure a delay), and the `delays` and `missing`
    samples of the last window. The samples go to pantau.alert-samples, where
    `settlement_delay_high` and `callbacks_missing` are judged over every worker's
    (streams/alert_windows.py); each counts once, by its transaction id.

    Every update is idempotent by event (a redelivered fact changes nothing), and live every key
    belongs to one partition of pantau.settlement (keyed by transaction id): the transactions'
    entries, and the samples kept per partition (`scoped`). So the state goes to a changelog per
    partition (`journal_state`, streams/statelog.py) and whoever owns a partition next restores
    it exactly, and sends its samples again (a crash may have kept them from the judge).
    """

    name = "settlement"

    def __init__(
        self,
        topics: Topics,
        rules: SettlementRules | None = None,
        *,
        state: MutableMapping[str, Any] | None = None,
        lateness: timedelta = timedelta(seconds=30),
        samples_partitions: int = 1,
    ) -> None:
        self.topics = topics
        self.rules = rules or SettlementRules()
        root: MutableMapping[str, Any] = state if state is not None else {}
        self.awaiting: MutableMapping[str, Any] = root.setdefault("awaiting", {})
        self.early: MutableMapping[str, Any] = root.setdefault("early", {})
        self.recent: MutableMapping[str, Any] = root.setdefault("recent", {})
        # Samples: [settled or noticed (epoch s), delay s or 1, transaction id].
        self.delay_log = SampleLog(
            DELAY,
            root.setdefault("delays", {}),
            self.rules.alerts.settlement_delay_high.window_s,
            _channel_method,
        )
        self.missing = SampleLog(
            MISSING,
            root.setdefault("missing", {}),
            self.rules.alerts.callbacks_missing.window_s,
            lambda channel: {"channel": channel},
        )
        self.beat = ProgressBeat(topics.alert_samples, samples_partitions)
        self._deadline_for: dict[str, Any] = {}  # method → rules.deadline_for(method)
        self.clock = EventClock(lateness=lateness)
        # Transaction facts alone: a callback waits for its transaction until they are past it.
        # They come by another path than callbacks, which may run ahead (the payments stage
        # busy or restarting); judged by the callbacks' time, waiting ones would be given up on
        # before their transactions were even read.
        self.tx_clock = EventClock(lateness=lateness)
        self._deadlines: list[tuple[float, str]] = []
        self._rebuild_deadlines()
        self.durable: PartitionedMaps | None = None
        self._partition: int | None = None  # the source partition of the record being processed

    def _rebuild_deadlines(self) -> None:
        self._deadlines = [(entry["deadline"], tx_id) for tx_id, entry in self.awaiting.items()]
        heapq.heapify(self._deadlines)

    @property
    def delays(self) -> MutableMapping[str, Any]:
        """The delay samples by `[<partition>/]<channel>|<method>@<bucket>` (SampleLog)."""
        return self.delay_log.state

    @property
    def consumes(self) -> tuple[str, ...]:
        return (self.topics.settlement,)

    @property
    def changelog(self) -> str:
        """Where its state goes live (streams/statelog.py KeyedStateLog)."""
        return self.topics.settlement_state

    def process(self, records: Sequence[Record]) -> list[Out]:
        for record in records:
            try:
                value = orjson.loads(record.value)
            except orjson.JSONDecodeError:
                continue  # internal topic: only our own stages write it
            if not isinstance(value, dict):
                continue
            self._partition = record.partition
            if self.durable is not None and record.partition is not None:
                self.durable.own(str(value.get("transaction_id")), record.partition)
            kind = value.get("kind")
            if kind == "transaction":
                self._transaction(value)
            elif kind == "callback":
                self._callback(value)
        metrics.SETTLEMENT_AWAITING.set(len(self.awaiting))
        return self._samples()

    def _samples(self) -> list[Out]:
        """The samples added or to send again, and the progress beat (the judge's windows slide
        with this stage's event time)."""
        if not self.clock.started:
            return []
        return self.beat.send(_epoch(self.clock.latest), self.delay_log, self.missing)

    # -- facts --

    def _transaction(self, value: dict[str, Any]) -> None:
        tx_id = str(value.get("transaction_id"))
        created = _parse_iso(value.get("created_at"))
        if created is None:
            return
        self.clock.observe(created)
        self.tx_clock.observe(created)
        prior = self.recent.get(tx_id)
        if prior is not None and not prior.get("failed"):
            return  # already final (or missed): a redelivery changes nothing
        method = str(value.get("method"))
        allowed = self._deadline_for.get(method, _UNKNOWN)
        if allowed is _UNKNOWN:
            allowed = self._deadline_for[method] = self.rules.deadline_for(method)
            if len(self._deadline_for) > 64:  # methods are few; anything else is not kept
                self._deadline_for.clear()
        if allowed is None:
            return  # this method gets no settlement callback
        deadline = _epoch(created + allowed)
        entry: dict[str, Any] = {
            "created_at": _epoch(created),
            "channel": str(value.get("channel")),
            "method": method,
            "deadline": deadline,
        }
        if value.get("status") == "failed":
            # No settlement follows a failed attempt, and a retry (same id, later attempt) is
            # awaited afresh. A callback belongs to the latest attempt created before it was
            # received, whichever path brought it first: one received after this attempt keeps
            # waiting, for a retry (or is dropped, if none comes: it was this attempt's own).
            self.awaiting.pop(tx_id, None)
            self._keep_waiting(tx_id, entry["created_at"])
            self.recent[tx_id] = {
                **entry,
                "missed": False,
                "failed": True,
                "final_at": entry["created_at"],
            }
            return
        if prior is not None:  # a retry of a failed attempt: that attempt's callbacks go
            self._keep_waiting(tx_id, entry["created_at"])
        self.recent.pop(tx_id, None)
        known = self.awaiting.get(tx_id)
        self.awaiting[tx_id] = entry
        if known is None or known["deadline"] != deadline:  # a redelivery adds no second timer
            heapq.heappush(self._deadlines, (deadline, tx_id))
            if len(self._deadlines) > 2 * len(self.awaiting) + 1024:
                # Timers of finalized or superseded attempts: rebuild from what still waits.
                self._deadlines = [(e["deadline"], k) for k, e in self.awaiting.items()]
                heapq.heapify(self._deadlines)
        waiting = self.early.pop(tx_id, None)
        if waiting:
            for fact in waiting["facts"]:
                self._apply(tx_id, entry, fact)

    def _callback(self, value: dict[str, Any]) -> None:
        tx_id = str(value.get("transaction_id"))
        received = _parse_iso(value.get("received_at"))
        if received is None:
            return
        self.clock.observe(received)
        entry = self.awaiting.get(tx_id)
        if entry is None:
            recent = self.recent.get(tx_id)
            if recent is not None and recent.get("failed"):
                if _epoch(received) < float(recent["created_at"]):
                    return  # an earlier attempt's
                # The failed attempt's own, or a retry's not read yet (transaction facts and
                # callbacks reach this topic by different paths): it waits.
            elif recent is not None:
                if recent.get("missed") and value.get("status") == FactStatus.SETTLED.value:
                    self._apply(tx_id, recent, value)  # late, but its delay is real
                return
            self._wait(tx_id, value, received)
            return
        self._apply(tx_id, entry, value)

    def _keep_waiting(self, tx_id: str, since: float) -> None:
        """Drop the waiting callbacks of `tx_id` received before `since` (an earlier attempt's)."""
        waiting = self.early.pop(tx_id, None)
        if waiting:
            kept = [f for f in waiting["facts"] if _fact_epoch(f) >= since]
            if kept:
                self.early[tx_id] = {"until": waiting["until"], "facts": kept}

    def _wait(self, tx_id: str, value: dict[str, Any], received: datetime) -> None:
        waiting = self.early.get(tx_id)
        if waiting is None:
            waiting = {
                "until": _epoch(received) + self.rules.early_callbacks.max_wait_s,
                "facts": [],
            }
        provider, status = value.get("provider"), value.get("status")
        if any(
            f.get("provider") == provider and f.get("status") == status for f in waiting["facts"]
        ):
            # Already waiting: a redelivered fact, or a duplicate callback (the callbacks stage's
            # identity) its dedup memory let through, as after a takeover.
            return
        waiting = {"until": waiting["until"], "facts": [*waiting["facts"], value]}
        self.early[tx_id] = waiting
        limit = self.rules.early_callbacks.max_waiting
        while len(self.early) > limit:
            oldest = next(iter(self.early))
            self._given_up(oldest, self.early.pop(oldest))

    def _given_up(self, tx_id: str, waiting: dict[str, Any]) -> None:
        """Callbacks that waited in vain: unmatched, unless their id's last attempt failed (then
        they were that attempt's own, kept in case a retry came)."""
        prior = self.recent.get(tx_id)
        if prior is None or not prior.get("failed"):
            self._unmatched(waiting)

    def _unmatched(self, waiting: dict[str, Any]) -> None:
        for fact in waiting["facts"]:
            metrics.child(metrics.CALLBACKS_UNMATCHED, str(fact.get("provider"))).inc()

    def _apply(self, tx_id: str, entry: dict[str, Any], fact: dict[str, Any]) -> None:
        status = fact.get("status")
        if status not in FINAL_VALUES:
            return
        self.awaiting.pop(tx_id, None)
        # When the gateway learned it (the callback's own time, not how far this stage has read:
        # that depends on how the input was batched).
        settled = _parse_iso(fact.get("received_at"))
        final_at = _epoch(settled) if settled is not None else _epoch(self.clock.latest)
        self.recent[tx_id] = {**entry, "missed": False, "final_at": final_at}
        if status != FactStatus.SETTLED.value:
            return
        # DESIGN §4: the delay runs to the settlement callback (when the gateway learns it); the
        # provider's own settlement time stays in the fact as settled_at.
        if settled is None:
            return
        delay = max(0.0, _epoch(settled) - float(entry["created_at"]))
        channel, method = str(entry["channel"]), str(entry["method"])
        metrics.child(metrics.SETTLEMENT_DELAY, channel, method).observe(delay)
        self.delay_log.add(self._partition, f"{channel}|{method}", [_epoch(settled), delay, tx_id])

    # -- durable state (live; a replay keeps everything in one process) ------------------------

    def journal_state(self) -> PartitionedMaps:
        """Track every change of the state from now on, per source partition (for its changelog,
        streams/statelog.py); a replay never calls this and tracks nothing."""
        if self.durable is None:
            self.awaiting = TrackedMap("", self.awaiting)
            self.early = TrackedMap("", self.early)
            self.recent = TrackedMap("", self.recent)
            self.delay_log.state = TrackedMap("", self.delay_log.state)
            self.missing.state = TrackedMap("", self.missing.state)
            self.durable = PartitionedMaps(
                {name: cast(TrackedMap, m) for name, m in self.state_maps().items()}
            )
            self.delay_log.durable = self.missing.durable = self.durable
        return self.durable

    def state_maps(self) -> dict[str, MutableMapping[str, Any]]:
        """The state by name, as its changelog keys name it (`<name>/<key>`)."""
        return {
            "awaiting": self.awaiting,
            "early": self.early,
            "recent": self.recent,
            "delays": self.delays,
            "missing": self.missing.state,
        }

    def restored(self, partition: int) -> None:
        """A partition's state was loaded: its transactions get their timers, the waiting and
        finished ones their place in time order (the bounds drop the oldest first), and its
        samples are sent again."""
        self._rebuild_deadlines()
        in_time_order(self.early, lambda v: float(v["until"]))
        in_time_order(self.recent, lambda v: float(v["final_at"]))
        for log in (self.delay_log, self.missing):
            log.reindex()
            log.resend(partition)

    def handed_over(self, partition: int) -> None:
        """A partition's keys were dropped: forget the timers and indexes derived from them."""
        self._rebuild_deadlines()
        self.delay_log.reindex()
        self.missing.reindex()

    # -- timers and alerts --

    def tick(self) -> list[Out]:
        if not self.clock.started:
            return []
        now = _epoch(self.clock.watermark)
        while self._deadlines and self._deadlines[0][0] < now:
            deadline, tx_id = heapq.heappop(self._deadlines)
            entry = self.awaiting.get(tx_id)
            if entry is None or entry["deadline"] != deadline:
                continue  # finalized, or superseded by a later attempt
            del self.awaiting[tx_id]
            self.recent[tx_id] = {**entry, "missed": True, "final_at": deadline}
            channel, method = str(entry["channel"]), str(entry["method"])
            metrics.child(metrics.CALLBACKS_MISSING, channel, method).inc()
            partition = self.durable.owner.get(tx_id) if self.durable is not None else None
            # when it is noticed: event time may have jumped
            self.missing.add(partition, channel, [now, 1, tx_id])
        tx_now = _epoch(self.tx_clock.watermark) if self.tx_clock.started else float("-inf")
        for tx_id in list(self.early.keys()):
            waiting = self.early[tx_id]
            if waiting["until"] >= tx_now:
                break  # arrival order: the rest are younger
            del self.early[tx_id]
            self._given_up(tx_id, waiting)
        horizon = now - self.rules.duplicates.remember_s
        expire_front(self.recent, horizon, lambda v: float(v["final_at"]))
        bound_front(self.recent, self.rules.duplicates.max_remembered)
        self.delay_log.expire(now)
        self.missing.expire(now)
        metrics.SETTLEMENT_AWAITING.set(len(self.awaiting))
        return self._samples()


def _channel_method(key: str) -> dict[str, str]:
    channel, method = key.split("|", 1)
    return {"channel": channel, "method": method}


def build_verifier(settings: Settings) -> CallbackVerifier:
    """The callback verifier from settings: secrets (rotation), allowlists, tolerance."""
    return CallbackVerifier(
        secrets_for=settings.secrets_for,
        allowlists=settings.callback_allowlists,
        tolerance=timedelta(seconds=settings.callback_tolerance_s),
    )


def build_settlement(settings: Settings) -> tuple[VatTagger, SettlementFeed, list[Stage]]:
    """What build_stages needs from this issue: the VAT tagger and the settlement feed for the
    payments stage, and the callbacks, settlement, alert-windows and balances stages."""
    from streams.alert_windows import WindowedAlerts
    from streams.balances import BalancesStage, load_balance_rules

    topics = settings.topics
    lateness = timedelta(seconds=settings.allowed_lateness_s)
    rules = load_settlement_rules(settings.settlement_rules)
    stages: list[Stage] = [
        CallbacksStage(
            topics,
            build_verifier(settings),
            rules,
            max_bytes=settings.max_message_bytes,
            lateness=lateness,
            redact=settings.secret_values(),
            samples_partitions=settings.partitions,
        ),
        SettlementStage(topics, rules, lateness=lateness, samples_partitions=settings.partitions),
        WindowedAlerts(topics, rules.alerts, lateness=lateness),
        BalancesStage(
            topics, load_balance_rules(), max_bytes=settings.max_message_bytes, lateness=lateness
        ),
    ]
    return VatTagger(), SettlementFeed(topics), stages
