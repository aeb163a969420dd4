"""Nothing is lost when workers crash: a ledger of simulated events with unique ids flows through
two `pantau worker` processes on the embedded broker (8 partitions) while one is SIGKILLed and
restarted five times and a third joins and leaves; a verifier then checks that every input has
its outputs (or a dead letter), that re-sent outputs are identical to the first and, with entity
state per partition, that every decision is the replay's. Also: the
embedded broker's gaps that limit what can be checked, each shown on the real broker."""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from models.features import TX_PREFIX, _records, decode
from models.outputs import alert_fingerprint
from streams.alert_windows import WindowedAlerts, subject_of
from streams.core import Out, Record, Stage
from streams.durable import decode_value
from streams.ledger import (
    Ledger,
    Sent,
    conflicting_duplicates,
    duplicate_count,
    health_counts,
    identity,
    missing,
    produced_ids,
)
from streams.payments import PaymentsStage
from streams.pipeline import Pipeline, build_pipeline
from streams.settings import Settings
from streams.settlement import CallbacksStage, SettlementStage
from streams.sim_callbacks import sim_settings_overrides
from streams.simulator import DEFAULT_START, generate
from streams.statelog import MARKER
from streams.topics import Topics
from tests.conftest import DESIGN_TRANSACTION
from tests.integration.conftest import (
    Broker,
    Received,
    Sandbox,
    WorkerProcess,
    consume,
    produce,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILLS = 5
CHUNKS = 30  # the ledger is produced in this many chunks, one every CHUNK_EVERY_S
CHUNK_EVERY_S = 1.5
SETTLE_TIMEOUT_S = 240.0  # after the last chunk, how long the workers get to catch up
# Every re-sent output must be identical to the first. The fields compared with a replay whatever
# the scope are those that depend on their input alone: with one state per worker, fraud fields
# depend on device, card, IP and merchant features over the partitions a worker holds (compared
# with a replay per partition only), and snapshots on when deltas arrived (written in
# docs/operations.md). The state itself is checked against a replay at the end.
STATEFUL_FIELDS = {"decisions": {"action", "score", "model_score", "reasons", "rule_hits"},
                   "enriched": {"fraud"}}  # fmt: skip
STATEFUL_TOPICS = ("health", "failover", "alerts")


def secrets_file(path: Path) -> Path:
    """The simulator's callback secrets and allowlists as a secrets file (PANTAU_SECRETS_FILE)."""
    path.write_text(yaml.safe_dump(sim_settings_overrides()), encoding="utf-8")
    return path


def build_ledger(topics: Topics) -> Ledger:
    """Ten simulated minutes of traffic with bad input, callbacks and balances; ids unique. Plus
    confirmed-fraud labels for one payment in 20, each produced at a random place: before its
    payment as often as after (a reader of fraud.labels may read it first), all reported two days
    after the traffic (so they count for the merchants then, after every decision here)."""
    ledger = Ledger(topics)
    seen: set[str] = set()
    for ev in generate(
        seed=21,
        duration=timedelta(minutes=10),
        tx_per_second=6.0,
        customers=2000,
        merchants=100,
        invalid_rate=0.02,
        scenarios=("card-testing", "bca-outage"),
        topics=topics,
    ):
        value = orjson.dumps(ev.value)
        entry = ledger.add(ev.topic, ev.key.encode() if ev.key else None, value)
        if entry.id in seen:  # the gateway's own duplicate: not a ledger entry of its own
            ledger.entries.pop()
        seen.add(entry.id)
    labelled = {orjson.loads(e.value)["transaction_id"] for e in ledger.entries
                if e.topic == topics.labels}  # fmt: skip
    payments = sorted({tx_id for e in ledger.entries if e.topic == topics.transactions
                       and isinstance(tx_id := orjson.loads(e.value).get("transaction_id"), str)
                       and tx_id not in labelled})  # fmt: skip
    reported = (DEFAULT_START + timedelta(days=2)).isoformat()
    rng = random.Random(21)
    for tx_id in payments[::20]:
        value = orjson.dumps({"transaction_id": tx_id, "fraud": True, "reported_at": reported})
        entry = ledger.add(topics.labels, tx_id.encode(), value)
        ledger.entries.insert(rng.randrange(len(ledger.entries)), ledger.entries.pop())
        assert entry.id not in seen
        seen.add(entry.id)
    return ledger


def replay_outputs(
    ledger: Ledger, settings: Settings, pipeline: Pipeline | None = None
) -> list[Sent]:
    """What one clean pass over the ledger sends, internal topics included."""
    pipeline = pipeline or build_pipeline(settings)
    outs: list[Out] = []
    for stage in pipeline.stages:
        process = stage.process

        def wrapped(records: Any, _process: Any = process) -> list[Out]:
            result: list[Out] = _process(records)
            outs.extend(result)
            return result

        stage.process = wrapped  # type: ignore[method-assign]
    batch: list[Record] = []
    for offset, entry in enumerate(ledger.entries):
        if batch and (batch[0].topic != entry.topic or len(batch) >= 200):
            pipeline.process(batch, lambda out: None)
            pipeline.tick(lambda out: None)
            batch = []
        batch.append(Record(entry.topic, entry.value, entry.key, offset=offset))
    pipeline.process(batch, lambda out: None)
    pipeline.close(lambda out: None)
    return [Sent(o.topic, o.key, orjson.loads(orjson.dumps(o.value))) for o in outs]


def pure_outputs(topics: Topics, sent: list[Sent]) -> list[Sent]:
    """The outputs and fields that depend on their input alone."""
    drop = {getattr(topics, attr): names for attr, names in STATEFUL_FIELDS.items()}
    stateful = {getattr(topics, attr) for attr in STATEFUL_TOPICS}
    return [
        Sent(s.topic, s.key, {k: v for k, v in s.value.items() if k not in drop.get(s.topic, ())})
        for s in sent
        if s.topic not in stateful
    ]


@dataclass
class Workers:
    """Worker subprocesses of one test, all stopped at teardown."""

    env: dict[str, str]
    tmp: Path
    started: list[WorkerProcess] = field(default_factory=list)

    def start(self, name: str) -> WorkerProcess:
        worker = WorkerProcess(self.env, self.tmp / f"{name}-{len(self.started)}.log")
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop(timeout=30)


@pytest.fixture(params=["worker", "partition"])
def scope(request: pytest.FixtureRequest) -> str:
    """PANTAU_ENTITY_SCOPE: device, card, IP and merchant state per worker or per partition."""
    return str(request.param)


@pytest.fixture
def workers(sandbox: Sandbox, tmp_path: Path, scope: str) -> Iterator[Workers]:
    env = dict(sandbox.env)
    # Several workers on one machine: no HTTP views, no metrics port to fight over.
    env.update(
        PANTAU_WEB_PORT="0",
        PANTAU_METRICS_PORT="0",
        PANTAU_SECRETS_FILE=str(secrets_file(tmp_path / "secrets.yaml")),
        PANTAU_ENTITY_SCOPE=scope,
    )
    pool = Workers(env, tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


def _read_all(broker: Broker, topics: Topics, done: Callable[[list[Sent]], bool]) -> list[Sent]:
    names = [*topics.outputs(), topics.settlement]
    state: dict[str, Any] = {"n": 0, "sent": []}

    def finished(got: list[Received]) -> bool:
        if len(got) == state["n"]:
            return False
        state["sent"] += [
            Sent(m.topic, m.key.decode() if m.key else None, m.json()) for m in got[state["n"] :]
        ]
        state["n"] = len(got)
        return done(state["sent"])

    got = consume(broker, names, finished, SETTLE_TIMEOUT_S)
    return [Sent(m.topic, m.key.decode() if m.key else None, m.json()) for m in got]


def test_workers_killed_mid_stream_lose_nothing(
    broker: Broker, sandbox: Sandbox, workers: Workers, scope: str
) -> None:
    topics = sandbox.topics
    ledger = build_ledger(topics)
    assert ledger.unique() and len(ledger.entries) > 5000
    settings = Settings(
        **sim_settings_overrides(),
        topics=topics,
        partitions=sandbox.settings.partitions,
        entity_scope=scope,
    )
    pipeline = build_pipeline(settings)
    judged = _given(next(s for s in pipeline.stages if isinstance(s, WindowedAlerts)))
    clean = replay_outputs(ledger, settings, pipeline)
    expected = {k: v for k, v in produced_ids(topics, clean).items() if v}
    assert len(expected) > len(ledger.entries) // 2  # most inputs have outputs to look for
    assert sum(1 for v in expected.values() if topics.deadletter in v) > 50

    a, b = workers.start("a"), workers.start("b")
    chunk = len(ledger.entries) // CHUNKS + 1
    kill_at = {4 + 5 * i for i in range(KILLS)}  # chunks 4, 9, 14, 19, 24
    third: WorkerProcess | None = None
    kills = 0
    for i in range(CHUNKS):
        part = ledger.entries[i * chunk : (i + 1) * chunk]
        produce(broker, [(e.topic, e.key, e.value) for e in part])
        if i in kill_at:
            victim = a if kills % 2 == 0 else b
            victim.process.kill()  # SIGKILL: no commit, no goodbye
            victim.process.wait(10)
            replacement = workers.start(f"restart{kills}")
            if victim is a:
                a = replacement
            else:
                b = replacement
            kills += 1
        if i == 7:
            third = workers.start("c")
        if i == 17 and third is not None:
            assert third.stop(timeout=30) is not None  # leaves the group cleanly
        time.sleep(CHUNK_EVERY_S)
    assert kills == KILLS

    def complete(sent: list[Sent]) -> bool:
        return not missing(ledger, sent, expected)

    sent = _read_all(broker, topics, complete)
    for worker in (a, b):
        assert worker.process.poll() is None, worker.log()[-3000:]

    lost = missing(ledger, sent, expected)
    logs = "\n".join(f"--- {w.log_path.name}\n{w.log()[-1500:]}" for w in workers.started)
    assert not lost, f"{len(lost)} of {len(ledger.entries)} inputs lack outputs: {lost[:5]}\n{logs}"
    # Live equals a recomputation by replay for what depends on the input alone: every enriched
    # payment (VAT included; fraud aside) and every callback fact.
    recomputed = {identity(topics, m): m.value for m in pure_outputs(topics, clean)}
    compared = 0
    for m in pure_outputs(topics, sent):
        if m.topic in (topics.enriched, topics.settlement):
            want = recomputed.get(identity(topics, m))
            if want is not None:
                compared += 1
                assert m.value == want, (identity(topics, m), m.value, want)
    assert compared > len(ledger.entries) // 2
    redelivered = duplicate_count(topics, sent)
    times = Counter(identity(topics, m) for m in sent)
    resent = Counter(ident[0] for ident, n in times.items() for _ in range(n - 1))
    # The kills did move partitions: new owners restored them from the changelog, some with a
    # logged batch to re-send (otherwise nothing was tested).
    logged = [
        int(n)
        for w in workers.started
        for n in re.findall(r"restored partition \d+: .* with (\d+) decisions", w.log())
    ]
    assert len(logged) >= KILLS, logged
    # Every re-sent message is identical to the first: decisions re-sent after a crash are the
    # logged ones (or skipped), a worker getting its own records again re-sends what it decided,
    # and a rebuilt health shard re-sends what its predecessor sent.
    differing = conflicting_duplicates(topics, sent)
    stateful = Counter(d.identity[0] for d in differing)
    print(
        f"crash run ({scope}): {len(ledger.entries)} inputs, {len(sent)} messages read, "
        f"{redelivered} re-sent ({', '.join(f'{t}: {n}' for t, n in resent.items())}); "
        f"differing: {dict(stateful) or 'none'}"
    )
    assert not differing, [d.describe() for d in differing[:10]]
    fraud_topics = (topics.decisions, topics.enriched)
    if scope == "partition":
        # Per partition, every decision is a function of its partition's records: whoever made
        # it, it is the replay's.
        replayed = {identity(topics, m): m.value for m in clean if m.topic in fraud_topics}
        decided = [m for m in sent if m.topic in fraud_topics]
        assert len(decided) > len(ledger.entries) // 2
        other = [m for m in decided if replayed.get(identity(topics, m)) != m.value]
        assert not other, (len(other), other[:2])

    # The state equals a recomputation by replay. Fraud: every customer's feature state, as the
    # workers left it in the changelog, is the replay's. Channels: every attempt counted once in
    # the channel windows (the deltas as the health stages merge them, each partition in order).
    quiet = _read_until_quiet(
        broker,
        [topics.payments_state, topics.health_deltas, topics.settlement_state,
         topics.callbacks_state, topics.alert_samples],
    )  # fmt: skip
    live_state: dict[str, Any] = {}
    for m in quiet:
        if m.topic == topics.payments_state and m.key and m.key != MARKER:
            live_state[m.key.decode()] = decode_value(m.value) if m.value else None
    payments = next(s for s in pipeline.stages if isinstance(s, PaymentsStage))
    assert payments.fraud is not None
    replay_state = getattr(payments.fraud, "store").state  # noqa: B009
    # Per worker, device, card, IP and merchant state is each worker's own view: customers only.
    # Per partition, every key, merchants' confirmed frauds included: each label counted once,
    # by whichever worker held its payment's partition, whether it was read before the payment
    # or after, before a crash or after.
    prefix = "customer:" if scope == "worker" else ""
    customers = {k: v for k, v in replay_state.items() if k.startswith(prefix)}
    live_customers = {
        k: v for k, v in live_state.items() if k.startswith(prefix) and not k.startswith(TX_PREFIX)
    }
    assert len(customers) > 1000
    assert sorted(live_customers) == sorted(customers)
    differ = [k for k, v in customers.items() if _json(live_customers[k]) != _json(v)]
    assert not differ, (len(differ), differ[:3])
    if scope == "partition":
        assert {k.split(":")[0] for k in customers} >= {"customer", "device", "ip", "merchant"}
        frauds = sum(sum(decode(v).frauds.values()) for k, v in customers.items()
                     if k.startswith("merchant:"))  # fmt: skip
        assert frauds > 150
    # The payments kept for late labels: every one remembered once, with its merchant, and the
    # labelled ones marked, as in the replay (live in shards per partition, in the changelog).
    remembered = _remembered(getattr(payments.fraud, "store").tx_merchants.values())  # noqa: B009
    assert sum(1 for r in remembered if r[2]) > 150
    live_remembered = _remembered(v for k, v in live_state.items() if k.startswith(TX_PREFIX) and v)
    assert live_remembered == remembered
    live_deltas = sorted(
        (m.partition, m.offset, m.value) for m in quiet if m.topic == topics.health_deltas
    )
    replay_deltas = [
        (0, i, orjson.dumps(m.value))
        for i, m in enumerate(c for c in clean if c.topic == topics.health_deltas)
    ]
    assert health_counts(topics, live_deltas) == health_counts(topics, replay_deltas)
    # Settlement: every transaction awaited or finished (missed ones too), every callback
    # waiting and every delay in the last window, as the workers left them in the changelog, is
    # the replay's. (How far each window was cut, and when a miss was noticed, depend on when
    # each worker's timer ran.)
    settlement = next(s for s in pipeline.stages if isinstance(s, SettlementStage))
    window_start = (
        settlement.clock.watermark.timestamp()
        - settlement.rules.alerts.settlement_delay_high.window_s
    )
    live_settlement = _settlement_state(
        ((m.key.decode(), decode_value(m.value) if m.value else None)
         for m in quiet if m.topic == topics.settlement_state and m.key),
        window_start,
    )  # fmt: skip
    replay_settlement = _settlement_state(
        ((f"{name}/{key}", value)
         for name, mapping in settlement.state_maps().items() for key, value in mapping.items()),
        window_start,
    )  # fmt: skip
    assert len(replay_settlement["awaiting"]) + len(replay_settlement["recent"]) > 1000
    assert replay_settlement["delays"]
    for name, want in replay_settlement.items():
        assert live_settlement[name] == want, name
    # Callbacks: the dedup memory holds every fact once, received when the replay's was.
    callbacks = next(s for s in pipeline.stages if isinstance(s, CallbacksStage))
    live_seen: dict[str, Any] = {}
    for m in quiet:
        if m.topic == topics.callbacks_state and m.key and m.key.startswith(b"seen/"):
            live_seen[m.key.decode()[5:]] = decode_value(m.value)[0] if m.value else None
    replay_seen = {k: v[0] for k, v in callbacks.seen.items()}
    assert len(replay_seen) > 1000
    assert {k: v for k, v in live_seen.items() if v is not None} == replay_seen
    # Alert samples: every settlement delay and missed callback the replay measured reached the
    # judge live (sent again by a successor where a crash kept it from being sent); the judge
    # counts each once, by transaction id. Live, a miss is noticed when a worker's timer finds
    # the deadline past: a final callback still on its way by the other path (the replay reads
    # both in step) then settles it late. Those misses, and only those, are extra.
    live_counted = _counted(m.value for m in quiet if m.topic == topics.alert_samples)
    replay_counted = _counted(r.value for r in judged)
    assert len(replay_counted) > 100
    assert replay_counted <= live_counted
    extra = live_counted - replay_counted
    print(f"alert samples: {len(replay_counted)} in the replay, {len(extra)} more live")
    finished = replay_settlement["recent"]
    assert all(
        fingerprint.startswith("callbacks_missing/") and not finished[tx]["missed"]
        for fingerprint, tx in extra
    ), sorted(extra)[:5]


def _given(stage: Stage) -> list[Record]:
    """Every record a stage will be given (its process wrapped)."""
    given: list[Record] = []
    process = stage.process

    def wrapped(records: Sequence[Record]) -> list[Out]:
        given.extend(records)
        return process(records)

    stage.process = wrapped  # type: ignore[method-assign]
    return given


def _counted(values: Iterable[bytes]) -> set[tuple[str, str]]:
    """(alert fingerprint, transaction id) of every settlement delay and missed-callback sample."""
    out: set[tuple[str, str]] = set()
    for raw in values:
        value = orjson.loads(raw)
        if value.get("alert") in ("settlement_delay_high", "callbacks_missing"):
            fingerprint = alert_fingerprint(value["alert"], value["labels"])
            out.update((fingerprint, str(sample[2])) for sample in value["samples"])
    return out


def _settlement_state(items: Any, since: float) -> dict[str, Any]:
    """Settlement state from (changelog key, value) pairs, latest last: the transactions' entries
    by map, and the delays measured after `since`, sorted, by channel and method (live, they are
    kept per partition)."""
    latest: dict[str, Any] = {}
    for key, value in items:
        latest[key] = value
    state: dict[str, Any] = {name: {} for name in ("awaiting", "early", "recent")}
    delays: dict[str, list[Any]] = {}
    for ckey, value in latest.items():
        name, _, key = ckey.partition("/")
        if value is None or name == "missing":
            continue
        value = _json(value)
        if name == "delays":
            delays.setdefault(subject_of(key), []).extend(v for v in value if v[0] > since)
        elif name == "early":
            state[name][key] = {**value, "facts": sorted(value["facts"], key=orjson.dumps)}
        else:
            state[name][key] = value
    state["delays"] = {k: sorted(v, key=orjson.dumps) for k, v in delays.items() if v}
    return state


def _remembered(shards: Iterable[bytes]) -> list[tuple[bytes, int, int, str]]:
    """Every payment kept for late labels in these shards (digest, time, labelled, merchant)."""
    return sorted(record for shard in shards for record in _records(shard))


def _json(value: Any) -> Any:
    return value if isinstance(value, bytes) else orjson.loads(orjson.dumps(value))


def _read_until_quiet(broker: Broker, names: list[str], quiet_s: float = 4.0) -> list[Received]:
    """Everything on these topics once nothing new has arrived for `quiet_s` seconds."""
    state = {"n": -1, "since": time.monotonic()}

    def quiet(got: list[Received]) -> bool:
        if len(got) != state["n"]:
            state["n"], state["since"] = len(got), time.monotonic()
            return False
        return time.monotonic() - state["since"] > quiet_s

    return consume(broker, names, quiet, SETTLE_TIMEOUT_S)


# ---- the embedded broker's gaps, shown on the real thing ---------------------------------------


async def _end_offset_after_batch(bootstrap: list[str], topic: str) -> tuple[list[int], int]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=100)
    await producer.start()
    try:
        # Three sends in one linger window: one record batch of three records.
        futures = [await producer.send(topic, b"v%d" % i, key=b"k", partition=0) for i in range(3)]
        offsets = [(await f).offset for f in futures]
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        end = (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()
    return offsets, end


def test_embedded_broker_reports_a_batchs_base_offset_plus_one_as_the_end(
    broker: Broker, sandbox: Sandbox
) -> None:
    """Tansu's ListOffsets answer: after one batch of three records (offsets 0, 1, 2) the end is
    1, not 3. Faust's table recovery reads a changelog up to this end, so it can miss the tail;
    consumers must not treat "position >= end" as "read everything" on the embedded broker."""
    if os.environ.get("PANTAU_BROKER"):
        pytest.skip("shows a gap of the embedded broker; this run uses a real Kafka")
    offsets, end = asyncio.run(_end_offset_after_batch(broker.bootstrap, sandbox.topics.rules))
    assert offsets == [0, 1, 2]
    assert end == 1  # real Kafka answers 3


async def _join_seconds(bootstrap: list[str], topic: str, session_ms: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"join-probe-{time.monotonic_ns()}",
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=session_ms // 3,
    )
    started = time.monotonic()
    await consumer.start()
    try:
        while not consumer.assignment():
            await asyncio.sleep(0.05)
        return time.monotonic() - started
    finally:
        await consumer.stop()


def test_embedded_broker_makes_a_group_join_wait_half_the_session_timeout(
    broker: Broker, sandbox: Sandbox
) -> None:
    """Every join (a worker starting, a rebalance) waits about half the session timeout on
    Tansu: with the embedded profile's 6 s that is about 3 s per rebalance."""
    if os.environ.get("PANTAU_BROKER"):
        pytest.skip("shows a gap of the embedded broker; this run uses a real Kafka")
    seconds = asyncio.run(_join_seconds(broker.bootstrap, sandbox.topics.balances, 6000))
    assert 2.4 <= seconds < 10.0, seconds


def test_a_killed_workers_state_is_recomputed_by_its_successor(
    broker: Broker, sandbox: Sandbox, workers: Workers
) -> None:
    """Fraud state must survive a SIGKILL: ten attempts by one customer in a minute, the worker
    is killed, a new one starts, and the eleventh attempt must be decided as a replay of all
    eleven decides it (the customer's velocity rule fires)."""
    topics = sandbox.topics
    start = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)

    def tx(i: int) -> dict[str, Any]:
        at = (start + timedelta(seconds=i)).isoformat()
        fields = {"transaction_id": f"trx-vel-{i}", "status": "success", "created_at": at}
        return {**DESIGN_TRANSACTION, **fields, "error_code": None}

    def decisions(want: set[str]) -> dict[str, dict[str, Any]]:
        got = consume(
            broker,
            [topics.decisions],
            lambda ms: want <= {m.json()["transaction_id"] for m in ms},
            90,
        )
        return {m.json()["transaction_id"]: m.json() for m in got}

    first = workers.start("first")
    produce(broker, [(topics.transactions, b"c-88121", orjson.dumps(tx(i))) for i in range(10)])
    decisions({f"trx-vel-{i}" for i in range(10)})
    time.sleep(6)  # past Faust's commit interval: the successor starts after these offsets
    first.process.kill()
    first.process.wait(10)
    workers.start("second")
    produce(broker, [(topics.transactions, b"c-88121", orjson.dumps(tx(10)))])
    live = decisions({"trx-vel-10"})["trx-vel-10"]

    ledger = Ledger(topics)
    for i in range(11):
        ledger.add(topics.transactions, b"c-88121", orjson.dumps(tx(i)))
    clean = replay_outputs(ledger, Settings(topics=topics))
    replayed = next(
        s.value
        for s in clean
        if s.topic == topics.decisions and s.value["transaction_id"] == "trx-vel-10"
    )
    assert replayed["rule_hits"], "the replay should see the burst (the check means nothing)"
    assert live["rule_hits"] == replayed["rule_hits"]
    assert live["score"] == replayed["score"]


def test_poison_messages_do_not_stall_a_partition(
    broker: Broker, sandbox: Sandbox, start_worker: Callable[[], WorkerProcess]
) -> None:
    """Bad records in front of good ones on one partition (one key): every bad one is
    dead-lettered with its reason, including a value over the size limit from settings, and the
    good ones behind them are processed."""
    topics = sandbox.topics
    sandbox.env["PANTAU_MAX_MESSAGE_BYTES"] = "100000"
    key = b"c-poison"
    poison: list[bytes] = [
        b"",  # a tombstone or an empty value
        b"\xff\xfe\x00garbage",
        b'{"transaction_id": "trx-poison-1", "amount": ',  # cut short
        b"[1, 2, 3]",
        orjson.dumps(
            {**DESIGN_TRANSACTION, "transaction_id": "trx-poison-big", "x": "9" * 150_000}
        ),
        orjson.dumps({**DESIGN_TRANSACTION, "transaction_id": "trx-poison-2", "amount": "-1"}),
    ]
    good = [
        orjson.dumps({**DESIGN_TRANSACTION, "transaction_id": f"trx-after-poison-{i}"})
        for i in range(5)
    ]
    sent = produce(broker, [(topics.transactions, key, v) for v in [*poison, *good]])
    assert len({s.partition for s in sent}) == 1
    start_worker()
    want = {f"trx-after-poison-{i}" for i in range(5)}

    def done(got: list[Received]) -> bool:
        enriched = {m.json()["transaction_id"] for m in got if m.topic == topics.enriched}
        letters = [m for m in got if m.topic == topics.deadletter]
        return want <= enriched and len(letters) >= len(poison)

    got = consume(broker, [topics.enriched, topics.deadletter], done, 90)
    assert done(got)
    letters = {m.json()["offset"]: m.json() for m in got if m.topic == topics.deadletter}
    assert sorted(letters) == [s.offset for s in sent[: len(poison)]]
    assert all(v["reason"] for v in letters.values())
    big = letters[sent[4].offset]
    assert "max_message_bytes 100000" in big["reason"]
    assert len(big["raw"]) < 70_000  # the dead letter keeps a bounded excerpt
