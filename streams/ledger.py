"""The delivery ledger: what each input must produce, and a verifier of what was actually sent."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.codec import safe_text
from streams.topics import Topics

# Fields of a dead letter that depend on when (processing time) it was written, not on its input.
VOLATILE_FIELDS: dict[str, tuple[str, ...]] = {"deadletter": ("at",)}


@dataclass(frozen=True, slots=True)
class Sent:
    """One message as a topic carried it: topic, key and the decoded JSON value."""

    topic: str
    key: str | None
    value: Mapping[str, Any]


def identity(topics: Topics, sent: Sent) -> tuple[Any, ...]:
    """What makes two messages of a topic "the same output": a redelivered input must re-send
    the same identity with an identical value. Keyed by the input's id and event time, never by
    processing time."""
    v = sent.value
    t = sent.topic
    if t == topics.enriched:
        return (t, v.get("transaction_id"), v.get("created_at"), v.get("status"))
    if t == topics.decisions:
        return (t, v.get("transaction_id"), v.get("decided_at"))
    if t == topics.deadletter:
        source = v.get("source_topic")
        if v.get("offset") is not None:
            return (t, source, v.get("partition"), v.get("offset"))
        return (t, source, v.get("line"), v.get("raw"))
    if t == topics.failover:
        return (t, v.get("channel"), v.get("method"), v.get("at"), v.get("action"))
    if t == topics.health:
        return (t, v.get("channel"), v.get("method"), v.get("at"))
    if t == topics.alerts:
        return (t, v.get("fingerprint"), v.get("at"), v.get("status"))
    if t == topics.settlement:
        # A transaction fact is one attempt (id, time, status); a callback fact one callback.
        return (t, sent.key, v.get("kind"), v.get("callback_id"), v.get("created_at"),
                v.get("status") if v.get("kind") == "transaction" else None)  # fmt: skip
    return (t, sent.key, orjson.dumps(dict(v), option=orjson.OPT_SORT_KEYS))


def stable_value(topics: Topics, sent: Sent) -> dict[str, Any]:
    """The value without its processing-time fields (what a redelivery must reproduce)."""
    volatile: set[str] = set()
    for attr, names in VOLATILE_FIELDS.items():
        if sent.topic == getattr(topics, attr):
            volatile.update(names)
    return {k: val for k, val in sent.value.items() if k not in volatile}


@dataclass
class Duplicate:
    """Two messages with one identity whose values differ."""

    identity: tuple[Any, ...]
    first: dict[str, Any]
    other: dict[str, Any]

    def describe(self) -> str:
        diff = sorted(
            k for k in set(self.first) | set(self.other) if self.first.get(k) != self.other.get(k)
        )
        return f"{self.identity[:4]}: fields differ: {', '.join(diff)}"


def conflicting_duplicates(topics: Topics, sent: Iterable[Sent]) -> list[Duplicate]:
    """Every message whose identity was sent before with a different (stable) value."""
    first: dict[tuple[Any, ...], dict[str, Any]] = {}
    bad: list[Duplicate] = []
    for msg in sent:
        ident = identity(topics, msg)
        value = stable_value(topics, msg)
        seen = first.setdefault(ident, value)
        if seen is not value and seen != value:
            bad.append(Duplicate(ident, seen, value))
    return bad


def duplicate_count(topics: Topics, sent: Iterable[Sent]) -> int:
    """How many messages re-sent an identity already sent (redeliveries)."""
    counts: dict[tuple[Any, ...], int] = defaultdict(int)
    for msg in sent:
        counts[identity(topics, msg)] += 1
    return sum(n - 1 for n in counts.values())


@dataclass(frozen=True, slots=True)
class Entry:
    """One input of the ledger: the bytes produced, and the id the verifier follows it by."""

    topic: str
    key: bytes | None
    value: bytes
    id: str


def entry_id(topics: Topics, topic: str, value: bytes) -> str:
    """An input's id: a transaction attempt is (transaction_id, created_at, status), a callback
    its callback_id; anything unreadable is known by its masked text (its dead letter's `raw`)."""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        if topic == topics.transactions and data.get("transaction_id"):
            return f"tx|{data['transaction_id']}|{data.get('created_at')}|{data.get('status')}"
        if topic == topics.callbacks and data.get("callback_id"):
            return f"cb|{data['callback_id']}"
    return f"raw|{topic}|{safe_text(value)}"


@dataclass
class Ledger:
    """The inputs of a run, each with a unique id, and what each must have produced."""

    topics: Topics
    entries: list[Entry] = field(default_factory=list)

    def add(self, topic: str, key: bytes | None, value: bytes) -> Entry:
        entry = Entry(topic, key, value, entry_id(self.topics, topic, value))
        self.entries.append(entry)
        return entry

    def ids(self) -> set[str]:
        return {e.id for e in self.entries}

    def unique(self) -> bool:
        """True when no two entries share an id (the verifier needs that)."""
        return len(self.ids()) == len(self.entries)


def produced_ids(topics: Topics, sent: Iterable[Sent]) -> dict[str, set[str]]:
    """Input id → the output topics that carried something for it (per-input outputs only:
    enriched payments, decisions, dead letters, settlement facts)."""
    found: dict[str, set[str]] = defaultdict(set)
    decision_ids: dict[str, set[str]] = defaultdict(set)
    for msg in sent:
        v = msg.value
        if msg.topic == topics.enriched:
            tx = f"tx|{v.get('transaction_id')}|{v.get('created_at')}|{v.get('status')}"
            found[tx].add(msg.topic)
        elif msg.topic == topics.decisions:
            decision_ids[str(v.get("transaction_id"))].add(msg.topic)
        elif msg.topic == topics.deadletter:
            raw = str(v.get("raw"))
            found[f"raw|{v.get('source_topic')}|{raw}"].add(msg.topic)
            letter_id = _id_in_raw(topics, str(v.get("source_topic")), raw)
            if letter_id is not None:
                found[letter_id].add(msg.topic)
        elif msg.topic == topics.settlement and v.get("kind") == "callback":
            found[f"cb|{v.get('callback_id')}"].add(msg.topic)
    for tx_id, names in list(found.items()):
        if tx_id.startswith("tx|"):
            transaction_id = tx_id.split("|", 2)[1]
            names.update(decision_ids.get(transaction_id, set()))
    return found


def _id_in_raw(topics: Topics, source: str, raw: str) -> str | None:
    # A dead letter keeps the input's text (masked): a readable one still names its id.
    if raw.endswith("more characters]"):
        return None
    return entry_id(topics, source, raw.encode("utf-8"))


def missing(ledger: Ledger, sent: Sequence[Sent], expected: Mapping[str, set[str]]) -> list[str]:
    """Ledger ids lacking an output they should have: `expected` maps an id to the topics a
    clean run produced for it (from a replay of the same ledger); an id the clean run
    dead-lettered may instead have any dead letter."""
    got = produced_ids(ledger.topics, sent)
    lost = []
    for entry in ledger.entries:
        want = expected.get(entry.id, set())
        have = got.get(entry.id, set())
        if not want <= have:
            lost.append(f"{entry.id[:80]}: missing {sorted(want - have)}")
    return lost


def decode_all(messages: Iterable[tuple[str, bytes | None, bytes]]) -> list[Sent]:
    """(topic, key, value bytes) as read from Kafka → Sent messages."""
    out = []
    for topic, key, value in messages:
        out.append(
            Sent(topic, key.decode("utf-8", errors="replace") if key else None, orjson.loads(value))
        )
    return out


def health_counts(
    topics: Topics, deltas: Iterable[tuple[int | None, int | None, bytes]]
) -> dict[tuple[str, str, int], list[int]]:
    """What health stages hold after merging these deltas ((partition, offset, value) as the
    deltas topic carries them, each partition in order): every bucket's row per channel and
    method (counts, then latency bins), and the records / dead-letter totals under ("*",
    "records", 0) (a dead letter has no event time: its bucket is wherever its worker had got
    to, so only totals compare). Equal for two runs when each counted every attempt once."""
    import numpy as np

    from streams.core import Record
    from streams.health import HealthStage

    stages: dict[int | None, HealthStage] = {}
    for partition, offset, value in deltas:
        stage = stages.get(partition)
        if stage is None:
            stage = stages[partition] = HealthStage(topics)
        stage.process([Record(topics.health_deltas, value, None, partition, offset)])
    rows: dict[tuple[str, str, int], list[int]] = {}
    records = [0] * 2
    for stage in stages.values():
        for name, ch in stage.channels.items():
            for method, ring in ch.methods.items():
                for i in np.flatnonzero(ring.starts >= 0):
                    rows[(name, method, int(ring.starts[i]))] = ring.rows[i].tolist()
        used = stage.records.starts >= 0
        totals = stage.records.rows[used].sum(axis=0).tolist()
        records = [records[0] + int(totals[0]), records[1] + int(totals[1])]
    rows[("*", "records", 0)] = records
    return rows
