"""Stage state live: written per source partition to Kafka, restored by whoever owns it next."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import orjson

from streams import metrics
from streams.alert_windows import WindowedAlertShards
from streams.core import Record
from streams.durable import PartitionedMaps, decode_value, encode_value
from streams.health import DeltaGroup, HealthShards, HealthStage
from streams.live import client_options
from streams.payments import PaymentsStage
from streams.settings import Settings

log = logging.getLogger(__name__)

S = TypeVar("S", WindowedAlertShards, HealthShards)  # what a ShardRebuilder rebuilds

# The changelog key of a batch marker, per source partition: {"offset": the batch's highest
# source offset, "first": its lowest, "decided": [[attempt key, decision value], ...]}. It closes
# the partition's state changes of the batch, in the same record batch, and is written before any
# of the batch's outputs is sent: a marker is there exactly when its state is, and an output that
# reached Kafka always has its batch's marker before it.
MARKER = b"\x00pantau-marker"
RETRY_MAX_S = 5.0
RETRY_LOG_EVERY_S = 60.0  # a retried restore or state write logs at most this often


class PartitionReader:
    """Reads one partition of a topic with its own consumer (no group): a changelog to its end,
    or an input up to an offset."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: Any = None

    async def _start(self) -> Any:
        if self._consumer is None:
            from aiokafka import AIOKafkaConsumer

            consumer = AIOKafkaConsumer(
                **client_options(self.settings),
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=50,  # Tansu holds a fetch for the whole wait
                client_id=f"{self.settings.app_id}-restore",
            )
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()  # the broker away: no half-started client left behind
                raise
            self._consumer = consumer
        return self._consumer

    async def read(
        self, topic: str, partition: int, stop: int | None = None
    ) -> AsyncIterator[list[Any]]:
        """Batches of the partition's messages from its beginning, up to offset `stop`
        (exclusive), or to the end the broker reports when `stop` is None."""
        from aiokafka import TopicPartition

        consumer = await self._start()
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        to_end = stop is None
        if stop is None:
            # Tansu reports the last record batch's base offset + 1: reading up to it fetches
            # that whole batch, so nothing past it is cut off here.
            stop = (await consumer.end_offsets([tp]))[tp]
        if await consumer.position(tp) >= stop:
            return
        while True:
            # To the end: everything fetched, so a record batch is never taken in part (a fetch
            # holds whole batches) and the position stops on a batch boundary past the end.
            got = await consumer.getmany(tp, timeout_ms=500, max_records=None if to_end else 5000)
            messages = got.get(tp, [])
            if not to_end:
                messages = [m for m in messages if m.offset < stop]
            if messages:
                yield messages
            if await consumer.position(tp) >= stop:
                return

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


class PartitionWriter:
    """Writes messages to given partitions of a topic with aiokafka's batch API: one request per
    partition instead of one send per message (a changelog write is ~1,000 keys a batch). Its own
    producer (acks=all, no idempotence: the embedded broker refuses it); a partition whose write
    fails is written again whole (a changelog repeat is harmless: the latest value wins)."""

    MAX_BATCH_BYTES = 512 * 1024

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: Any = None
        self._starting = asyncio.Lock()  # stages share the writer: one producer for them all

    async def producer(self) -> Any:
        """The writer's aiokafka producer, started on first use (the Sender's batches use it)."""
        async with self._starting:
            if self._producer is None:
                self._producer = await self._new_producer()
        return self._producer

    async def _new_producer(self) -> Any:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            **client_options(self.settings),
            acks="all",
            enable_idempotence=False,
            max_batch_size=self.MAX_BATCH_BYTES,
            max_request_size=2 * self.MAX_BATCH_BYTES,
            request_timeout_ms=15000,
            client_id=f"{self.settings.app_id}-state",
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()  # the broker away: no half-started client left behind
            raise
        return producer

    async def write(
        self, topic: str, messages: dict[int, list[tuple[bytes, bytes | None]]]
    ) -> None:
        """Write every partition's messages (in order); returns once all are in Kafka."""
        pending = {p: m for p, m in messages.items() if m}
        if pending:
            what = f"writing the state of {len(pending)} partitions"
            await _retrying(what, self._write_pending, topic, pending)

    async def _write_pending(
        self, topic: str, pending: dict[int, list[tuple[bytes, bytes | None]]]
    ) -> None:
        """One try: send every pending partition, forget those that landed, raise if any did not
        (the next try writes only those again)."""
        producer = await self.producer()
        waits = {p: await self._send(producer, topic, p, m) for p, m in pending.items()}
        first: BaseException | None = None
        for partition, futures in waits.items():
            results = await asyncio.gather(*futures, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                first = first or errors[0]
            else:
                del pending[partition]
        if first is not None:
            raise first

    async def _send(
        self, producer: Any, topic: str, partition: int, messages: list[tuple[bytes, bytes | None]]
    ) -> list[Any]:
        waits: list[Any] = []
        batch = producer.create_batch()
        for key, value in messages:
            if batch.append(key=key, value=value, timestamp=None) is not None:
                continue
            if batch.record_count():  # full: send it and start the next with this message
                waits.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is not None:
                    continue
            log.error("a state value of %d bytes is too large to write", len(value or b""))
        if batch.record_count():
            waits.append(await producer.send_batch(batch, topic, partition=partition))
        return waits

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


async def _retrying(what: str, attempt: Callable[..., Awaitable[None]], *args: Any) -> None:
    """Try until it succeeds (the broker away: the batch waits, like the Sender's retries),
    logging the first failure, then at most one line a minute, and the recovery."""
    delay = 0.2
    failures = 0
    logged_at = 0.0
    while True:
        try:
            await attempt(*args)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            if failures == 1 or time.monotonic() - logged_at >= RETRY_LOG_EVERY_S:
                logged_at = time.monotonic()
                log.warning(
                    "%s failed %d time(s) (%s); retrying every %.1f s at most",
                    what,
                    failures,
                    type(exc).__name__,
                    RETRY_MAX_S,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
        else:
            if failures:
                log.info("%s succeeded after %d failure(s)", what, failures)
            return


async def restore_taken(
    records: Sequence[Record],
    held: set[int],
    reader: PartitionReader,
    what: str,
    restore: Callable[[int, int], Awaitable[None]],
) -> None:
    """Restore every partition of the batch not held yet (`restore(partition, first offset in
    the batch)`, retried until it succeeds; `what` names it in the log, with the partition),
    then close the reader: it stays idle until the next takeover, holding no connection."""
    taken = taken_over(records, held)
    for partition, first in taken:
        await _retrying(f"{what} {partition}", restore, partition, first)
    if taken:
        await reader.close()


def taken_over(records: Sequence[Record], held: set[int]) -> list[tuple[int, int]]:
    """(partition, first offset in the batch) of each partition of the batch not held yet."""
    firsts: dict[int, int] = {}
    for r in records:
        if r.partition is not None and r.partition not in held and r.offset is not None:
            firsts.setdefault(r.partition, r.offset)
    return sorted(firsts.items())


def batch_markers(
    records: Sequence[Record], decided: dict[int, list[tuple[str, dict[str, Any]]]]
) -> dict[int, dict[str, Any]]:
    """Each partition's marker for a batch (see MARKER): its lowest and highest offset in the
    batch and the decisions made for it."""
    span: dict[int, list[int]] = {}  # partition → [first, highest] offset in the batch
    for r in records:
        partition, offset = r.partition, r.offset
        if partition is None or offset is None:
            continue
        seen = span.setdefault(partition, [offset, offset])
        seen[0], seen[1] = min(seen[0], offset), max(seen[1], offset)
    return {
        partition: {"offset": offset, "first": first, "decided": decided.get(partition, [])}
        for partition, (first, offset) in sorted(span.items())
    }


def payments_markers(stage: PaymentsStage, records: Sequence[Record]) -> dict[int, bytes]:
    """The payments stage's markers for a batch it has processed, as the changelog carries them.
    The next owner decides every record from a marker's first offset on afresh, except those the
    marker logs a decision for; so a marker covers only the records this worker decided (not
    those it skipped because a previous owner delivered them), and while this worker is still
    inside the previous owner's last logged batch, it carries that batch's decisions and end on
    (the previous owner may have sent them; this worker's state already holds them)."""
    decided = stage.journal()
    if stage.delivered:
        records = stage.not_delivered(records)
    markers = batch_markers(records, decided)
    for partition in [p for p in stage.inherited if p in markers]:
        upto, logged = stage.inherited[partition]
        marker = markers[partition]
        if marker["offset"] >= upto:
            del stage.inherited[partition]  # past it: its own decisions cover the rest
            continue
        mine = {key for key, _ in marker["decided"]}
        marker["decided"] = [*[d for d in logged if d[0] not in mine], *marker["decided"]]
        marker["offset"] = upto
    return {partition: orjson.dumps(marker) for partition, marker in markers.items()}


def read_marker(value: bytes | None) -> dict[str, Any]:
    """A partition's latest marker (none: nothing was ever logged). A marker written before
    decisions were logged ({"offset"} only) closed a delivered batch: everything up to it is
    skipped, nothing is re-sent."""
    marker: dict[str, Any] = orjson.loads(value) if value else {"offset": -1}
    marker.setdefault("first", int(marker["offset"]) + 1)
    marker.setdefault("decided", [])
    return marker


def take_over(
    stage: PaymentsStage, partition: int, marker: dict[str, Any], first: int, batch_size: int
) -> None:
    """Tell the stage what the previous owner of `partition` did, from its latest marker, the
    group resuming at offset `first`: the records before its last logged batch are skipped, that
    batch gets its logged decisions again, and health counts one record at a time up to the
    marker and, should the previous owner still be alive (a rebalance), the batch it may be
    finishing."""
    stage.restored(
        partition,
        careful_until=max(int(marker["offset"]), first - 1) + batch_size,
        delivered_upto=int(marker["first"]) - 1,
        decided=[(key, value) for key, value in marker["decided"]],
        logged_upto=int(marker["offset"]),
    )


async def read_changelog(
    reader: PartitionReader, topic: str, partition: int
) -> tuple[list[tuple[str, Any, int]], bytes | None, int]:
    """A changelog partition from its beginning: its (key, value or None, write time in ms) in
    order, its last marker's value (None: none) and how many messages were read."""
    items: list[tuple[str, Any, int]] = []
    last: bytes | None = None
    read = 0
    async for messages in reader.read(topic, partition):
        for m in messages:
            read += 1
            if m.key == MARKER:
                last = m.value
            elif m.key is not None:
                value = decode_value(m.value) if m.value else None
                items.append((m.key.decode("utf-8"), value, int(m.timestamp)))
    return items, last, read


def encoded(changes: dict[int, dict[str, Any]]) -> dict[int, list[tuple[bytes, bytes | None]]]:
    """Changed keys per partition as changelog messages (None: a tombstone)."""
    return {
        partition: [
            (key.encode("utf-8"), encode_value(value) if value is not None else None)
            for key, value in keys.items()
        ]
        for partition, keys in changes.items()
    }


class PaymentsStateLog:
    """The payments stage's feature state on `pantau.payments-state`, one changelog partition per
    partition of payments.transactions (a write-ahead log of the stage).

    After each batch is processed and before any of its outputs is sent: the changed keys, then a
    marker per partition with the batch's offsets and the fraud decisions it made. Before a batch
    with a partition this worker did not hold: that partition's changelog is read to its end and
    loaded. The previous owner sent outputs only for what its markers cover, and all of them but
    the last batch's for sure; so the records before that batch are skipped, that batch is
    processed again with its logged decisions (re-sent outputs are identical; the feature state
    already holds it), and the health observer counts it one record at a time (a repeat is
    recognised)."""

    def __init__(
        self,
        stage: PaymentsStage,
        settings: Settings,
        writer: PartitionWriter,
        reader: PartitionReader,
    ) -> None:
        if stage.durable is None:
            raise ValueError("the payments stage keeps no durable state (no fraud scorer)")
        self.stage = stage
        self.durable = stage.durable
        self.topic = settings.topics.payments_state
        self.batch_size = settings.batch_size
        self.writer = writer
        self.reader = reader
        self.held: set[int] = set()
        self.writing = asyncio.Lock()  # one write at a time: the latest value of a key is last
        stage.journaling = True

    def assigned(self, partitions: set[int]) -> None:
        """The group's new assignment: forget the partitions another worker now owns."""
        for partition in sorted(self.held - partitions):
            dropped = self.stage.handed_over(partition)
            log.info("state of partition %d handed over (%d keys dropped)", partition, dropped)
        self.held &= partitions

    async def before(self, records: Sequence[Record]) -> None:
        """Restore every partition of the batch this worker does not hold yet."""
        what = "restoring the state of partition"
        await restore_taken(records, self.held, self.reader, what, self._restore)

    async def _restore(self, partition: int, first: int) -> None:
        started = time.perf_counter()
        items, last, read = await read_changelog(self.reader, self.topic, partition)
        held = self.durable.restore(partition, items)
        marker = read_marker(last)
        take_over(self.stage, partition, marker, first, self.batch_size)
        self.held.add(partition)
        seconds = time.perf_counter() - started
        metrics.child(metrics.STATE_RESTORE_SECONDS, self.stage.name).observe(seconds)
        log.info(
            "restored partition %d: %d keys from %d changelog messages in %.2f s "
            "(last batch %d-%d with %d decisions, resuming at %d)",
            partition,
            held,
            read,
            seconds,
            marker["first"],
            marker["offset"],
            len(marker["decided"]),
            first,
        )

    async def logged(self, records: Sequence[Record]) -> None:
        """Before the batch's outputs are sent: write its state changes and, last, a marker, per
        partition of the batch, in one record batch per partition when they fit (Kafka appends a
        record batch whole, so a partition's marker is there exactly when its state is)."""
        await self._write(payments_markers(self.stage, records))

    async def flush(self) -> None:
        """Write what changed between batches: late fraud labels, counted as the labels reader
        reads them (or as a takeover finds their transactions). Markers stay with the batches:
        a label's changes are idempotent (its transaction's flag says it counted)."""
        if self.writing.locked():
            return  # a batch is being logged; the next batch or flush takes these
        await self._write({})

    async def _write(self, markers: dict[int, bytes]) -> None:
        """The changed keys, then each partition's marker, one write at a time."""
        async with self.writing:
            messages = encoded(self.durable.changes())
            for partition, marker in markers.items():
                messages.setdefault(partition, []).append((MARKER, marker))
            await self.writer.write(self.topic, messages)


class JournaledStage(Protocol):
    """A stage whose every state key belongs to one partition of its input (streams/durable.py
    PartitionedMaps) and whose every update is idempotent by event."""

    name: str

    @property
    def changelog(self) -> str: ...

    def journal_state(self) -> PartitionedMaps: ...

    def restored(self, partition: int) -> None: ...

    def handed_over(self, partition: int) -> None: ...


class KeyedStateLog:
    """A journaled stage's state on its changelog, one partition per partition of its input:
    the settlement stage's on `pantau.settlement-state` (transactions awaiting their final
    callback, callbacks waiting for their transaction, finished transactions, the delay and
    missing windows), the callbacks stage's on `pantau.callbacks-state` (its dedup memory and
    signature-failure counts).

    Every update of such a stage is idempotent by event (a record read again changes nothing,
    or sends what it sent the first time), so no marker is needed: after each batch, before its
    outputs are sent, the keys it changed are written; before a batch with a partition this
    worker does not hold, that partition's changelog is loaded; a partition handed over is
    dropped. Changes made by the timer between batches go with the next batch; lost in a crash,
    the successor makes them again from the entries they came from."""

    def __init__(
        self,
        stage: JournaledStage,
        writer: PartitionWriter,
        reader: PartitionReader,
    ) -> None:
        self.stage = stage
        self.durable: PartitionedMaps = stage.journal_state()
        self.topic = stage.changelog
        self.writer = writer
        self.reader = reader
        self.held: set[int] = set()

    def assigned(self, partitions: set[int]) -> None:
        for partition in sorted(self.held - partitions):
            dropped = self.durable.drop(partition)
            self.stage.handed_over(partition)
            log.info(
                "%s state of partition %d handed over (%d keys dropped)",
                self.stage.name,
                partition,
                dropped,
            )
        self.held &= partitions

    async def before(self, records: Sequence[Record]) -> None:
        what = f"restoring the {self.stage.name} state of partition"
        await restore_taken(records, self.held, self.reader, what, self._restore)

    async def _restore(self, partition: int, _first: int) -> None:
        started = time.perf_counter()
        items, _, read = await read_changelog(self.reader, self.topic, partition)
        held = self.durable.restore(partition, items)
        self.stage.restored(partition)
        self.held.add(partition)
        seconds = time.perf_counter() - started
        metrics.child(metrics.STATE_RESTORE_SECONDS, self.stage.name).observe(seconds)
        log.info(
            "restored %s partition %d: %d keys from %d changelog messages in %.2f s",
            self.stage.name,
            partition,
            held,
            read,
            seconds,
        )

    async def logged(self, records: Sequence[Record]) -> None:
        await self.writer.write(self.topic, encoded(self.durable.changes()))


class ShardRebuilder(Generic[S]):
    """A sharded stage live: one shard per partition of its input this worker holds, each a
    function of that partition's messages in order. A partition taken over gets a new shard, fed
    the partition's messages from the beginning up to where the group resumes it, outputs
    discarded: it then holds what the previous owner held at that offset. A shard is installed
    only once rebuilt, so timers never judge a half-read one. How a shard is built and fed is
    the subclass's (`rebuild`): AlertWindowsRebuilder, HealthRestorer."""

    def __init__(self, shards: S, reader: PartitionReader, label: str) -> None:
        self.shards: S = shards
        self.reader = reader
        self.topic = shards.consumes[0]
        self.label = label  # names the partition in the log ("health of deltas partition")
        self.held: set[int] = set()

    def assigned(self, partitions: set[int]) -> None:
        for partition in sorted(self.held - partitions):
            self.shards.drop(partition)
            log.info("%s %d handed over", self.label, partition)
        self.held &= partitions

    async def before(self, records: Sequence[Record]) -> None:
        await restore_taken(
            records, self.held, self.reader, f"rebuilding the {self.label}", self._timed
        )

    async def _timed(self, partition: int, first: int) -> None:
        started = time.perf_counter()
        read = await self.rebuild(partition, first)
        self.held.add(partition)
        seconds = time.perf_counter() - started
        metrics.child(metrics.STATE_RESTORE_SECONDS, self.shards.name).observe(seconds)
        log.info(
            "rebuilt the %s %d from %d messages in %.2f s", self.label, partition, read, seconds
        )

    async def rebuild(self, partition: int, first: int) -> int:
        """Build and install the partition's shard; returns the messages read."""
        raise NotImplementedError

    def _records(self, partition: int, messages: Sequence[Any]) -> list[Record]:
        return [Record(self.topic, m.value or b"", m.key, partition, m.offset) for m in messages]

    async def logged(self, records: Sequence[Record]) -> None:
        return None


class AlertWindowsRebuilder(ShardRebuilder[WindowedAlertShards]):
    """The alert-windows judge live (streams/alert_windows.py): a shard fed its messages."""

    def __init__(self, shards: WindowedAlertShards, reader: PartitionReader) -> None:
        super().__init__(shards, reader, f"{shards.name} of partition")

    async def rebuild(self, partition: int, first: int) -> int:
        shard = self.shards.fresh()
        read = 0
        async for messages in self.reader.read(self.topic, partition, stop=first):
            read += len(messages)
            with metrics.replaying():  # the previous owner counted what it sent
                shard.process(self._records(partition, messages))
        self.shards.install(partition, shard)
        return read


class HealthRestorer(ShardRebuilder[HealthShards]):
    """Health shards live: a rebuilt shard takes its deltas one observer batch at a time, as the
    live one does (DeltaGroup)."""

    def __init__(self, shards: HealthShards, reader: PartitionReader) -> None:
        super().__init__(shards, reader, "health of deltas partition")

    async def rebuild(self, partition: int, first: int) -> int:
        shard: HealthStage | None = None
        group = DeltaGroup()
        read = 0
        async for messages in self.reader.read(self.topic, partition, stop=first):
            if shard is None:
                # From the partition's very first delta, the deltas alone make the shard what the
                # previous owner had; where retention cut the start, the failover signals seen
                # on gateway.failover fill in the channels' states.
                shard = self.shards.fresh(resume=messages[0].offset > 0)
            read += len(messages)
            with metrics.replaying():  # the previous owner counted what it sent
                group.feed(shard, self._records(partition, messages))
        if shard is None:
            shard = self.shards.fresh(resume=first > 0)
        self.shards.install(partition, shard, group)
        return read
