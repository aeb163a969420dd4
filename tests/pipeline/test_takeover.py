"""A worker dies and another takes its partitions over: the customer state restored from the
changelog plus the redelivered records, and the channel counts merged from both workers' deltas,
equal one clean run, whether the dead worker's last batch reached Kafka whole, in part or not at
all, and every decision it sent is sent again identical. No broker: the changelog and the topics
are lists here (the live edge is streams/statelog.py; tests/integration/test_crash.py runs the
same on the embedded broker)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
import pytest

from streams.core import Out, Record
from streams.durable import decode_value, encode_value
from streams.ledger import health_counts
from streams.payments import PaymentsStage
from streams.pipeline import build_stages
from streams.settings import Settings
from streams.sim_callbacks import sim_settings_overrides
from streams.simulator import generate
from streams.statelog import payments_markers, read_marker, take_over

PARTITIONS = 4
BATCH = 200  # the dead worker's micro-batch size (what a takeover counts one by one beyond)
SETTINGS = Settings(**sim_settings_overrides())
TOPICS = SETTINGS.topics


def partitioned() -> dict[int, list[Record]]:
    """Eight simulated minutes of transactions (invalid ones too), keyed by customer, spread over
    the partitions with offsets, as Kafka would hold them."""
    parts: dict[int, list[Record]] = {p: [] for p in range(PARTITIONS)}
    for ev in generate(
        seed=12,
        duration=timedelta(minutes=8),
        tx_per_second=5.0,
        customers=300,
        merchants=30,
        invalid_rate=0.03,
        scenarios=("card-testing", "bca-outage"),
        topics=TOPICS,
    ):
        if ev.topic != TOPICS.transactions:
            continue
        key = ev.key.encode() if ev.key else b""
        p = zlib.crc32(key) % PARTITIONS
        value = orjson.dumps(ev.value)
        parts[p].append(Record(ev.topic, value, key, partition=p, offset=len(parts[p])))
    return parts


def batches(parts: dict[int, list[Record]], start: dict[int, int], size: int) -> list[list[Record]]:
    """Batches as a consumer fetches them: up to `size` records, a run from each partition in
    turn, starting at each partition's `start` offset."""
    pos = dict(start)
    out: list[list[Record]] = []
    while any(pos[p] < len(parts[p]) for p in parts):
        batch: list[Record] = []
        for p in sorted(parts):
            take = parts[p][pos[p] : pos[p] + size // PARTITIONS]
            pos[p] += len(take)
            batch.extend(take)
        out.append(batch)
    return out


@dataclass
class Worker:
    """One worker's payments stage; what it sends goes to the shared logs."""

    payments: PaymentsStage = field(init=False)

    def __post_init__(self) -> None:
        self.payments = next(s for s in build_stages(SETTINGS) if isinstance(s, PaymentsStage))
        self.payments.journaling = True  # as streams/statelog.py sets it live

    def process(self, batch: Sequence[Record]) -> tuple[list[Out], Journal]:
        """The batch's outputs, and what the worker logs before sending them."""
        outs = self.payments.process(batch)
        assert self.payments.durable is not None
        changes = self.payments.durable.changes()
        return outs, Journal(changes, payments_markers(self.payments, batch))

    @property
    def state(self) -> dict[str, Any]:
        assert self.payments.fraud is not None
        store: Any = getattr(self.payments.fraud, "store")  # noqa: B009
        return {k: decode_value(encode_value(v)) for k, v in store.state.items()}  # compact-state


@dataclass
class Journal:
    """What a worker writes to the changelog after processing a batch, before sending it."""

    changes: dict[int, dict[str, Any]]
    markers: dict[int, bytes]


@dataclass
class Logs:
    """The deltas and decisions topics and the changelog (per partition) as lists; markers as
    streams/statelog.py writes them (the last batch's offsets and logged decisions)."""

    deltas: list[Record] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    changelog: dict[int, list[tuple[str, bytes | None, int]]] = field(default_factory=dict)
    markers: dict[int, dict[str, Any]] = field(default_factory=dict)
    clock: int = 0

    def send(self, outs: Sequence[Out], keep: Any = None) -> None:
        for out in outs:
            if keep is not None and not keep(out):
                continue
            if out.topic == TOPICS.health_deltas:
                value = orjson.dumps(out.value)
                self.deltas.append(Record(out.topic, value, None, 0, len(self.deltas)))
            elif out.topic == TOPICS.decisions:
                self.decisions.append(orjson.loads(orjson.dumps(out.value)))

    def write_state(self, journal: Journal) -> None:
        self.clock += 1
        for p, keys in journal.changes.items():
            log = self.changelog.setdefault(p, [])
            for key, value in keys.items():
                log.append((key, encode_value(value) if value is not None else None, self.clock))
        for p, marker in journal.markers.items():
            self.markers[p] = read_marker(marker)  # as PaymentsStateLog writes and reads it

    def handle(self, worker: Worker, batch: Sequence[Record]) -> None:
        """What a live worker does with a batch: process it, log its state, send its outputs."""
        outs, journal = worker.process(batch)
        self.write_state(journal)
        self.send(outs)

    def restore(self, worker: Worker, partition: int, first: int, decided: bool = True) -> None:
        """What PaymentsStateLog does on a takeover, the group resuming at offset `first`
        (`decided=False`: as if the previous owner's decisions were not logged)."""
        items = [
            (key, decode_value(value) if value is not None else None, at)
            for key, value, at in self.changelog.get(partition, [])
        ]
        assert worker.payments.durable is not None
        worker.payments.durable.restore(partition, items)
        marker = dict(self.markers.get(partition) or read_marker(None))
        if not decided:
            marker["decided"] = []
        take_over(worker.payments, partition, marker, first, BATCH)


def decisions(outs: Sequence[Out]) -> dict[tuple[Any, ...], Any]:
    return {
        (o.value["transaction_id"], o.value["decided_at"]): o.value
        for o in outs
        if o.topic == TOPICS.decisions
    }


def committed_after(
    parts: dict[int, list[Record]], done: Sequence[Sequence[Record]]
) -> dict[int, int]:
    """The offsets the group has committed once every record of `done` was acknowledged."""
    committed = {p: 0 for p in parts}
    for batch in done:
        for r in batch:
            assert r.partition is not None and r.offset is not None
            committed[r.partition] = r.offset + 1
    return committed


def resent_identical(sent: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """How many decisions were sent again, and how many distinct ones were sent; every one sent
    again must be identical to the first."""
    first: dict[tuple[str, str], dict[str, Any]] = {}
    resent = 0
    for d in sent:
        ident = (d["transaction_id"], d["decided_at"])
        resent += ident in first
        assert d == first.setdefault(ident, d), ident
    return resent, len(first)


def a_dies_midway(parts: dict[int, list[Record]], logs: Logs) -> dict[int, int]:
    """Worker A processes half the batches and one more, logging each one's state and sending
    its outputs, then dies; returns the offsets the group had committed (three batches
    behind)."""
    a = Worker()
    a_batches = batches(parts, dict.fromkeys(parts, 0), BATCH)
    crash = len(a_batches) // 2
    for batch in a_batches[: crash + 1]:
        logs.handle(a, batch)
    return committed_after(parts, a_batches[: crash - 3])


def a_dies_and_b_takes_over(
    parts: dict[int, list[Record]], logs: Logs
) -> tuple[Worker, dict[int, int]]:
    """A dies midway; worker B restores every partition from the changelog, the group resuming
    at the committed offsets. Returns B and those offsets."""
    committed = a_dies_midway(parts, logs)
    b = Worker()
    for p in parts:
        logs.restore(b, p, committed[p])
    return b, committed


def channel_counts(deltas: Sequence[Record]) -> dict[tuple[str, str, int], list[int]]:
    return health_counts(TOPICS, [(r.partition, r.offset, r.value) for r in deltas])


@pytest.fixture(scope="module")
def parts() -> dict[int, list[Record]]:
    return partitioned()


@pytest.fixture(scope="module")
def clean(parts: dict[int, list[Record]]) -> tuple[dict[str, Any], Any]:
    worker = Worker()
    logs = Logs()
    for batch in batches(parts, dict.fromkeys(parts, 0), BATCH):
        outs, _ = worker.process(batch)
        logs.send(outs)
    return worker.state, channel_counts(logs.deltas)


@pytest.mark.parametrize("last_batch", ["whole", "half", "logged", "none"])
def test_a_successor_restores_the_state_and_counts_every_attempt_once(
    parts: dict[int, list[Record]], clean: tuple[dict[str, Any], Any], last_batch: str
) -> None:
    """Worker A processes batches, logging each one's state and decisions before sending its
    outputs. It dies in its last batch: after logging it and sending all of its outputs, half of
    them or none, or before logging it; the group's committed offsets are three batches behind.
    Worker B restores every partition from the changelog and gets the records again from the
    committed offsets in differently sized batches."""
    want_state, want_counts = clean
    logs = Logs()
    a = Worker()
    a_batches = batches(parts, dict.fromkeys(parts, 0), BATCH)
    crash = len(a_batches) // 2
    for i, batch in enumerate(a_batches[: crash + 1]):
        outs, journal = a.process(batch)
        if i < crash or last_batch != "none":
            logs.write_state(journal)
        if i < crash or last_batch == "whole":
            logs.send(outs)
        elif last_batch == "half":
            logs.send(outs, keep=lambda out: zlib.crc32(orjson.dumps(out.value)) % 2 == 0)
    committed = committed_after(parts, a_batches[: crash - 3])
    assert sum(committed.values()) > 0
    logged_upto = {p: marker["offset"] for p, marker in logs.markers.items()}

    b = Worker()
    for p in parts:
        logs.restore(b, p, committed[p])
    redelivered = 0
    for batch in batches(parts, committed, 120):
        redelivered += sum(
            1 for r in batch if r.offset is not None and r.offset <= logged_upto[r.partition]
        )
        logs.handle(b, batch)
    assert redelivered > 100  # B did see A's records again (otherwise nothing was tested)

    # Every decision sent twice is the same twice; only A's last logged batch is sent again.
    resent, _ = resent_identical(logs.decisions)
    if last_batch == "logged":  # logged but not sent: B sends it, for the first time
        assert resent == 0
    else:
        assert 0 < resent <= BATCH
    assert b.state == want_state
    got_counts = channel_counts(logs.deltas)
    assert got_counts == want_counts


@pytest.mark.parametrize("logged", [True, False])
def test_a_successor_re_sends_the_logged_decisions(
    parts: dict[int, list[Record]], logged: bool
) -> None:
    """Device, card, IP and merchant features depend on every partition a worker holds, so a
    successor holding other partitions would decide a redelivered attempt differently; it
    re-sends the decision the previous owner logged instead (without the log: some differ)."""
    logs = Logs()
    a_dies_midway(parts, logs)
    a_sent = {(d["transaction_id"], d["decided_at"]): d for d in logs.decisions}

    b = Worker()
    a_batches = batches(parts, dict.fromkeys(parts, 0), BATCH)
    for batch in a_batches[: len(a_batches) // 2]:  # B has seen the same entities elsewhere
        b.process([Record(r.topic, r.value, r.key, 99, r.offset) for r in batch])
    resume = {p: marker["first"] for p, marker in logs.markers.items()}
    for p in parts:
        logs.restore(b, p, resume[p], decided=logged)
    same = differ = 0
    for batch in batches(parts, resume, 120):
        outs, _ = b.process(batch)
        for o in outs:
            if o.topic == TOPICS.decisions:
                value = orjson.loads(orjson.dumps(o.value))
                sent = a_sent.get((value["transaction_id"], value["decided_at"]))
                if sent is not None:
                    same += sent == value
                    differ += sent != value
    if logged:
        assert same > 50 and differ == 0
    else:
        assert differ > 0


def test_without_the_offsets_a_successor_would_count_twice(
    parts: dict[int, list[Record]], clean: tuple[dict[str, Any], Any]
) -> None:
    """The same takeover, but B not told what A may have counted: the redelivered attempts count
    twice in the channel windows (what the offsets in the deltas prevent)."""
    _, want_counts = clean
    logs = Logs()
    a = Worker()
    a_batches = batches(parts, dict.fromkeys(parts, 0), BATCH)
    crash = len(a_batches) // 2
    for batch in a_batches[:crash]:
        logs.handle(a, batch)
    committed = committed_after(parts, a_batches[: crash - 3])
    b = Worker()
    for batch in batches(parts, committed, 120):
        outs, _ = b.process(batch)
        logs.send(outs)
    got = channel_counts(logs.deltas)
    attempts = sum(row[0] for key, row in got.items() if key[0] != "*")
    want = sum(row[0] for key, row in want_counts.items() if key[0] != "*")
    assert attempts > want


def test_a_successor_getting_the_records_again_re_sends_the_same_decisions(
    parts: dict[int, list[Record]], clean: tuple[dict[str, Any], Any]
) -> None:
    """After the takeover the group rebalances before B commits: B keeps its partitions and gets
    every record again from the old committed offsets, those A delivered included. It must skip
    A's again (it never decided them: deciding now, with later attempts in its windows, would
    send other decisions) and re-send its own decisions unchanged."""
    want_state, want_counts = clean
    logs = Logs()
    b, committed = a_dies_and_b_takes_over(parts, logs)
    for _ in range(2):  # the second time: the rebalance that kept B's partitions
        for batch in batches(parts, committed, 120):
            logs.handle(b, batch)
    resent, distinct = resent_identical(logs.decisions)
    assert resent > distinct // 3
    assert b.state == want_state
    assert channel_counts(logs.deltas) == want_counts


def test_a_successors_own_markers_leave_out_what_it_skipped(
    parts: dict[int, list[Record]], clean: tuple[dict[str, Any], Any]
) -> None:
    """B takes over from A and, resuming behind A, skips records A delivered in batches that hold
    its own records too; then B dies and C takes over from B. C must skip A's records as well: a
    marker of B's starting at one of them would have C decide it afresh, with windows that have
    moved on since A did (found by the crash test)."""
    want_state, _ = clean
    logs = Logs()
    b, committed = a_dies_and_b_takes_over(parts, logs)
    skipped = 0
    for batch in batches(parts, committed, 80):
        logs.handle(b, batch)
        skipped = len(batch) - len(b.payments.not_delivered(batch))
        if 0 < skipped < len(batch):
            break  # B dies after a batch that held A's records and its own
    assert skipped > 0
    c = Worker()
    for p in parts:
        logs.restore(c, p, committed[p])
    for batch in batches(parts, committed, 120):
        logs.handle(c, batch)
    resent, _ = resent_identical(logs.decisions)
    assert resent > 0
    assert c.state == want_state
