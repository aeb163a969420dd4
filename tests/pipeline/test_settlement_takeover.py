"""A worker holding the settlement stage dies and two others take its partitions over: its state
restored from the changelog plus the redelivered facts equals one clean run, transactions still
awaited, callbacks still waiting, and the judge gets every delay and missing callback once, even
those of the batch whose outputs the dead worker never sent. No broker: the
changelog is a list here (the live edge is streams/statelog.py; tests/integration/test_crash.py
runs it on the embedded broker)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import orjson

from models.features import partition_of
from streams.alert_windows import subject_of
from streams.core import Out, Record
from streams.durable import decode_value
from streams.payments import PaymentsStage
from streams.pipeline import internal_record
from streams.settings import Settings
from streams.settlement import SettlementStage, build_settlement
from streams.sim_callbacks import sim_settings_overrides
from streams.simulator import generate
from streams.statelog import encoded

PARTITIONS = 4
BATCH = 60
SETTINGS = Settings(**sim_settings_overrides())
TOPICS = SETTINGS.topics
MAPS = ("awaiting", "early", "recent")


def settlement_facts() -> dict[int, list[Record]]:
    """Six simulated hours of transaction facts and trusted callbacks on pantau.settlement (a
    bank settling hours late, so callbacks go missing and arrive after their deadline), keyed by
    transaction id and spread over the partitions as Kafka's default partitioner does."""
    vat, feed, stages = build_settlement(SETTINGS)
    payments = PaymentsStage(TOPICS, vat=vat, observers=[feed])
    callbacks = stages[0]
    outs: list[Out] = []
    first: datetime | None = None
    for ev in generate(
        seed=5,
        duration=timedelta(hours=6),
        tx_per_second=0.4,
        customers=400,
        merchants=20,
        diurnal=False,
        scenarios=("settlement-delay",),
        topics=TOPICS,
    ):
        text = ev.value.get("created_at") or ev.value.get("received_at")
        if not isinstance(text, str):
            continue
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        first = first or at
        if at >= first + timedelta(hours=5):
            continue  # cut before the end: some callbacks are still to come
        record = Record(ev.topic, orjson.dumps(ev.value), ev.key.encode() if ev.key else None)
        if ev.topic == TOPICS.transactions:
            outs += payments.process([record])
        elif ev.topic == TOPICS.callbacks:
            outs += callbacks.process([record])
    parts: dict[int, list[Record]] = {p: [] for p in range(PARTITIONS)}
    for out in outs:
        if out.topic != TOPICS.settlement:
            continue
        assert out.key is not None
        p = partition_of(out.key, PARTITIONS)
        r = internal_record(out)
        parts[p].append(Record(r.topic, r.value, r.key, partition=p, offset=len(parts[p])))
    return parts


def batches(parts: dict[int, list[Record]], start: dict[int, int], stop: dict[int, int]) -> Any:
    """Batches as a consumer fetches them: a run from each partition in turn."""
    pos = dict(start)
    while any(pos[p] < stop[p] for p in start):
        batch: list[Record] = []
        for p in sorted(start):
            take = parts[p][pos[p] : min(stop[p], pos[p] + BATCH // PARTITIONS)]
            pos[p] += len(take)
            batch.extend(take)
        yield batch


class Worker:
    """A settlement stage whose every batch's changes go to the shared changelog (as
    KeyedStateLog.logged does), restored from it on takeover (as its before does)."""

    def __init__(self, changelog: dict[int, list[tuple[bytes, bytes | None]]]) -> None:
        self.stage = next(
            s for s in build_settlement(SETTINGS)[2] if isinstance(s, SettlementStage)
        )
        self.durable = self.stage.journal_state()
        self.changelog = changelog

    def take_over(self, partitions: list[int]) -> None:
        for p in partitions:
            items = [
                (k.decode(), decode_value(v) if v else None, i)
                for i, (k, v) in enumerate(self.changelog[p])
            ]
            self.durable.restore(p, items)
            self.stage.restored(p)

    def run(self, batch: list[Record]) -> list[Out]:
        """Process a batch and tick; its changes logged, its outputs returned (to be sent)."""
        outs = self.stage.process(batch) + self.stage.tick()
        for p, messages in encoded(self.durable.changes()).items():
            self.changelog.setdefault(p, []).extend(messages)
        return outs


def counted(sent: list[Out]) -> set[tuple[str, str]]:
    """What the judge counts of the samples sent: (alert subject, transaction id), once each."""
    return {
        (str(o.key), str(sample[2]))
        for o in sent
        if o.topic == TOPICS.alert_samples and "alert" in o.value
        for sample in o.value["samples"]
    }


def state_of(*stages: SettlementStage) -> dict[str, Any]:
    """The workers' state together: the transactions' entries, and each window as a multiset
    of its samples per channel (the windows are kept per partition live)."""
    merged: dict[str, Any] = {name: {} for name in MAPS}
    delays: dict[str, Counter[tuple[float, float]]] = {}
    missing: Counter[str] = Counter()
    for stage in stages:
        for name in MAPS:
            merged[name].update(orjson.loads(orjson.dumps(dict(getattr(stage, name)))))
        for key, samples in stage.delays.items():
            delays.setdefault(subject_of(key), Counter()).update(tuple(s) for s in samples)
        for key, held in stage.missing.state.items():
            missing[subject_of(key)] += len(held)
    merged["delays"] = delays
    merged["missing"] = missing
    return merged


def test_successors_restore_the_settlement_state_and_end_where_one_run_does() -> None:
    parts = settlement_facts()
    total = sum(len(v) for v in parts.values())
    assert total > 8000
    start = dict.fromkeys(parts, 0)
    end = {p: len(v) for p, v in parts.items()}

    clean = Worker({})
    clean_sent: list[Out] = []
    for batch in batches(parts, start, end):
        clean_sent += clean.run(batch)
    want = state_of(clean.stage)
    # What is tested is there: transactions still awaited, finished, missed and settled late.
    assert len(want["awaiting"]) > 20 and len(want["recent"]) > 2000
    assert sum(1 for e in want["recent"].values() if e.get("missed")) > 20
    assert sum(want["missing"].values()) > 20
    assert sum(sum(c.values()) for c in want["delays"].values()) > 100
    assert len(counted(clean_sent)) > 500

    changelog: dict[int, list[tuple[bytes, bytes | None]]] = {}
    dead = Worker(changelog)
    crashed = {p: n * 6 // 10 for p, n in end.items()}
    sent: list[Out] = []
    unsent: list[Out] = []
    for batch in batches(parts, start, crashed):
        sent += unsent
        unsent = dead.run(batch)
    # It dies after logging its last batch's state, before sending that batch's samples, and
    # before committing its last 10 %: the successors get those facts again.
    assert counted(unsent) - counted(sent)
    committed = {p: n * 5 // 10 for p, n in end.items()}
    b, c = Worker(changelog), Worker(changelog)
    b.take_over([0, 1])
    c.take_over([2, 3])
    restored = state_of(b.stage, c.stage)
    assert restored == state_of(dead.stage)  # the changelog holds the dead worker's state
    for worker, mine in ((b, (0, 1)), (c, (2, 3))):
        for batch in batches(parts, {p: committed[p] for p in mine}, {p: end[p] for p in mine}):
            sent += worker.run(batch)
    assert state_of(b.stage, c.stage) == want
    # The samples lost with the dead worker were sent again by its successors.
    assert counted(sent) == counted(clean_sent)


def test_without_the_changelog_the_successors_lose_what_was_awaited() -> None:
    """The control: successors starting empty (as before the changelog) end elsewhere."""
    parts = settlement_facts()
    start = dict.fromkeys(parts, 0)
    end = {p: len(v) for p, v in parts.items()}
    clean = Worker({})
    for batch in batches(parts, start, end):
        clean.run(batch)
    half = {p: n // 2 for p, n in end.items()}
    b = Worker({})
    for batch in batches(parts, half, end):
        b.run(batch)
    lost = state_of(b.stage)
    want = state_of(clean.stage)
    assert lost["recent"] != want["recent"] and len(lost["early"]) > len(want["early"])


def test_a_handed_over_partition_leaves_nothing_behind() -> None:
    parts = settlement_facts()
    start = dict.fromkeys(parts, 0)
    half = {p: len(v) // 2 for p, v in parts.items()}
    worker = Worker({})
    for batch in batches(parts, start, half):
        worker.run(batch)
    held = len(worker.durable.owner)
    dropped = worker.durable.drop(0)
    worker.stage.handed_over(0)
    assert 0 < dropped < held
    left = {k for name in MAPS for k in getattr(worker.stage, name)}
    assert left and all(partition_of(k, PARTITIONS) != 0 for k in left)
    assert all(not k.startswith("0/") for k in [*worker.stage.delays, *worker.stage.missing.state])
    assert len(worker.durable.owner) == held - dropped
