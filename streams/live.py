"""Running stages against Kafka: batches in, outputs sent together, failures dead-lettered."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.partitioner import DefaultPartitioner

from models.pan import mask_pans
from streams import metrics
from streams.broker import bootstrap_servers, client_options
from streams.codec import dead_letter
from streams.core import Out, Record, Stage
from streams.settings import Settings

log = logging.getLogger(__name__)

# send(topic, key, value, partition) schedules one message and returns the future of its delivery
# (partition None: the producer's partitioner decides by key).
SendFn = Callable[[str, bytes | None, bytes | None, int | None], Awaitable[Awaitable[Any]]]
# A message ready for the producer: topic, key, value (None: a tombstone) and partition (None:
# the partitioner decides by key).
Raw = tuple[str, bytes | None, bytes | None, int | None]

SEND_RETRY_MAX_S = 5.0
# An output larger than this is sent on its own (a record batch of the others stays small).
BATCH_ALONE_BYTES = 256 * 1024
BROADCAST_WAIT_MS = 100  # how long a broadcast reader (rule packs, labels) waits for records


def encode(out: Out) -> tuple[bytes | None, bytes]:
    """An output's key and value as the bytes a topic carries (UTF-8 JSON value)."""
    key = out.key.encode("utf-8") if out.key is not None else None
    return key, orjson.dumps(out.value)


def log_failure(what: str, exc: BaseException) -> None:
    """Log an error with where it happened, its message card-masked and no local values."""
    where = mask_pans("".join(traceback.format_tb(exc.__traceback__, limit=-3)))
    log.error("%s: %s: %s\n%s", what, type(exc).__name__, mask_pans(str(exc))[:500], where)


class BrokerStatus:
    """Whether the broker is reachable, as the last send or probe found it: sets the connected
    gauge and logs the outage and the recovery once each (the client's retries are not)."""

    def __init__(self) -> None:
        self.up: bool | None = None
        self._down_since = 0.0

    def report(self, ok: bool) -> None:
        metrics.BROKER_CONNECTED.set(1 if ok else 0)
        if not ok and self.up is not False:
            self._down_since = time.monotonic()
            log.warning("broker unreachable; inputs wait and outputs are retried until it is back")
        elif ok and self.up is False:
            away = time.monotonic() - self._down_since
            log.warning("broker reachable again after about %.0f s", away)
        self.up = ok


class Sender:
    """Sends a batch of outputs without awaiting each one, then awaits all deliveries together. A
    failed delivery is retried until it succeeds, so a batch is only acknowledged once its
    outputs are in Kafka.

    Given `producer` (live: the state writer's aiokafka producer), outputs go as one record batch
    per topic partition through aiokafka's batch API, partitioned by key as the producer's own
    default partitioner would (the Java client's murmur2): a micro-batch's thousand outputs cost
    a few requests instead of a thousand sends. Without it, or for an output too large to share a
    batch, each output goes through `send`."""

    def __init__(
        self,
        send: SendFn,
        status: BrokerStatus | None = None,
        producer: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self._send = send
        self._producer = producer
        self._partitioner = DefaultPartitioner()
        self.status = status or BrokerStatus()
        self.sent = 0

    async def send_all(self, outs: Sequence[Out]) -> None:
        if not outs:
            return
        await self.send_raw([(out.topic, *encode(out), out.partition) for out in outs])

    async def send_raw(self, messages: Sequence[Raw]) -> None:
        """Send encoded messages (a partition each, or None), retried like `send_all`."""
        pending = list(messages)
        delay = 0.1
        while pending:
            if self._producer is not None:
                results = await self._batched(pending)
            else:
                results = await self._each(pending)
            failed = []
            for msg, res in zip(pending, results, strict=True):
                if not isinstance(res, BaseException):
                    continue
                if retriable(res):
                    failed.append(msg)
                else:
                    self._drop(msg[0], len(msg[2] or b""), res)
            self.sent += sum(not isinstance(r, BaseException) for r in results)
            if not failed:
                self.status.report(True)
                return
            self.status.report(False)
            first = next(r for r in results if isinstance(r, BaseException) and retriable(r))
            log.warning(
                "%d of %d outputs not delivered (%s); retrying in %.1f s",
                len(failed),
                len(pending),
                type(first).__name__,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, SEND_RETRY_MAX_S)
            pending = failed

    async def _each(self, messages: Sequence[Raw]) -> list[Any]:
        """One send per message; each one's result (or exception)."""
        futures: list[Any] = []
        for topic, key, value, partition in messages:
            try:
                futures.append(await self._send(topic, key, value, partition))
            except Exception as exc:  # refused before it was queued
                futures.append(_failed(exc))
        return await asyncio.gather(*futures, return_exceptions=True)

    async def _batched(self, messages: Sequence[Raw]) -> list[Any]:
        """One record batch per topic partition; each message's result (or exception). A batch
        refused for good (too large) is sent again message by message, so only the culprit is
        dropped."""
        assert self._producer is not None
        results: list[Any] = [None] * len(messages)
        try:
            producer = await self._producer()
            groups: dict[tuple[str, int], list[int]] = {}
            alone: list[int] = []
            chosen: dict[tuple[bytes, int], int] = {}  # (key, partition count) → partition
            for i, (topic, key, value, partition) in enumerate(messages):
                if len(value or b"") + len(key or b"") > BATCH_ALONE_BYTES:
                    alone.append(i)
                    continue
                if partition is None:
                    partition = await self._partition(producer, topic, key, chosen)
                groups.setdefault((topic, partition), []).append(i)
            waits: list[tuple[Any, list[int]]] = []
            for (topic, partition), indexes in groups.items():
                waits += await self._send_group(producer, topic, partition, messages, indexes)
        except Exception as exc:  # no producer or no metadata (the broker away): all retried
            return [exc] * len(messages)
        outcomes = await asyncio.gather(*(w for w, _ in waits), return_exceptions=True)
        for (_, members), outcome in zip(waits, outcomes, strict=True):
            if isinstance(outcome, BaseException) and not retriable(outcome) and len(members) > 1:
                alone += members  # which one is too large: each on its own
                continue
            for i in members:
                results[i] = outcome
        if alone:
            one_by_one = await self._each([messages[i] for i in alone])
            for i, result in zip(alone, one_by_one, strict=True):
                results[i] = result
        return results

    async def _send_group(
        self, producer: Any, topic: str, partition: int, messages: Sequence[Raw], indexes: list[int]
    ) -> list[tuple[Any, list[int]]]:
        """Submit one partition's messages as record batches: (delivery future, members) each."""
        waits: list[tuple[Any, list[int]]] = []
        batch = producer.create_batch()
        members: list[int] = []
        for i in indexes:
            _, key, value, _ = messages[i]
            if batch.append(key=key, value=value, timestamp=None) is None:  # full
                waits.append((await _submit(producer, batch, topic, partition), members))
                batch, members = producer.create_batch(), []
                batch.append(key=key, value=value, timestamp=None)  # (the first always fits)
            members.append(i)
        if members:
            waits.append((await _submit(producer, batch, topic, partition), members))
        return waits

    async def _partition(
        self,
        producer: Any,
        topic: str,
        key: bytes | None,
        chosen: dict[tuple[bytes, int], int],
    ) -> int:
        """The partition the producer would choose for the key (its default partitioner). A
        key's depends only on the topic's partition count (ids run 0..n-1), so `chosen` keeps it
        for the other topics of that count (a payment's enriched value and decision)."""
        cluster = producer.client.cluster
        partitions = cluster.partitions_for_topic(topic)
        if partitions is None:
            partitions = await producer.partitions_for(topic)  # waits for the metadata
        if key is not None:
            found = chosen.get((key, len(partitions)))
            if found is not None:
                return found
        available = cluster.available_partitions_for_topic(topic)
        partition = int(self._partitioner(key, list(partitions), list(available or partitions)))
        if key is not None:
            chosen[(key, len(partitions))] = partition
        return partition

    def _drop(self, topic: str, size: int, exc: BaseException) -> None:
        error = type(exc.__cause__ or exc).__name__
        metrics.child(metrics.OUTPUTS_DROPPED, topic, error).inc()
        log.error("an output to %s (%d bytes) was refused for good: %s", topic, size, error)


async def _failed(exc: BaseException) -> None:
    raise exc


async def _submit(producer: Any, batch: Any, topic: str, partition: int) -> Any:
    """send_batch's delivery future, or a failed one if it refused the batch outright."""
    try:
        return await producer.send_batch(batch, topic, partition=partition)
    except Exception as exc:
        return _failed(exc)


def retriable(exc: BaseException) -> bool:
    """False only for a message the broker will never take (too large); everything else
    (connection, timeout, leadership, even authorization) is retried: a stalled partition with
    loud warnings is better than lost outputs. Faust wraps client errors in ProducerSendError."""
    cause = exc.__cause__ if isinstance(exc.__cause__, BaseException) else exc
    return "TooLarge" not in type(cause).__name__


def _letter_source(out: Out) -> tuple[str, str]:
    value = out.value
    return str(value.get("source_topic") or "unknown"), metrics.reason_class(
        str(value.get("reason") or "")
    )


class StageRunner:
    """Feeds micro-batches to one stage, sends what it returns and keeps the pipeline metrics.

    A stage that raises on a batch does not lose it: the batch is retried record by record and
    the records that still fail are dead-lettered with the error as their reason (a stage's state
    may see the records before the failing one twice; a bug in a stage should be rare and loud).
    """

    def __init__(self, stage: Stage, settings: Settings, sender: Sender) -> None:
        self.stage = stage
        self.sender = sender
        self.deadletter_topic = settings.topics.deadletter
        self._batch_seconds = metrics.child(metrics.BATCH_SECONDS, stage.name)
        self._batch_size = metrics.child(metrics.BATCH_SIZE, stage.name)
        self._lag = metrics.child(metrics.CONSUMER_LAG_SECONDS, stage.name)
        self.processed = 0

    def _run(self, records: Sequence[Record]) -> list[Out]:
        try:
            return self.stage.process(records)
        except Exception as exc:
            log_failure(f"stage {self.stage.name} failed on a batch of {len(records)}", exc)
        outs: list[Out] = []
        for record in records:
            try:
                outs.extend(self.stage.process([record]))
            except Exception as exc:
                reason = f"stage {self.stage.name} failed: {type(exc).__name__}: {exc}"
                outs.append(dead_letter(record, reason, self.deadletter_topic))
        return outs

    def _tick(self) -> list[Out]:
        try:
            return self.stage.tick()
        except Exception as exc:
            log_failure(f"stage {self.stage.name} failed in tick", exc)
            return []

    async def handle(
        self,
        records: Sequence[Record],
        timestamps: Sequence[float] = (),
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Process one micro-batch (records of the stage's topics, in order), send the outputs
        (once `before_send` has returned, when given: the stage's state is logged there)."""
        if not records:
            return
        started = time.perf_counter()
        outs = self._run(records)
        outs.extend(self._tick())
        if before_send is not None:
            await before_send()
        await self.sender.send_all(outs)
        self._batch_seconds.observe(time.perf_counter() - started)
        self._batch_size.observe(len(records))
        self._count(records, outs)
        self._observe_lag(timestamps)
        self.processed += len(records)

    async def tick(self) -> None:
        """Let the stage emit what its event time makes due, and send it."""
        await self.sender.send_all(self._tick())

    def _count(self, records: Sequence[Record], outs: Sequence[Out]) -> None:
        per_topic: dict[str, int] = {}
        for record in records:
            per_topic[record.topic] = per_topic.get(record.topic, 0) + 1
        for topic, n in per_topic.items():
            metrics.child(metrics.EVENTS, topic).inc(n)
        for out in outs:
            if out.topic == self.deadletter_topic:
                metrics.child(metrics.DEAD_LETTERS, *_letter_source(out)).inc()

    def _observe_lag(self, timestamps: Sequence[float]) -> None:
        clock = getattr(self.stage, "clock", None)
        latest: float | None = None
        if clock is not None and getattr(clock, "started", False):
            latest = clock.latest.timestamp()
        elif timestamps:
            latest = max(timestamps)
        if latest is not None:
            self._lag.set(max(0.0, datetime.now(UTC).timestamp() - latest))


class BroadcastReader:
    """Reads a broadcast stage's topics from the beginning, every partition, outside the consumer
    group (so every worker sees everything), and runs the stage on each batch."""

    def __init__(self, runner: StageRunner, settings: Settings, url: str | None = None) -> None:
        self.runner = runner
        self.settings = settings
        self.url = url or settings.broker
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()  # set once it has caught up with the topics' ends

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            **client_options(self.settings, self.url),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{self.settings.app_id}-broadcast-{self.runner.stage.name}",
        )
        await consumer.start()
        try:
            found = await topic_partitions(
                self.url, self.runner.stage.consumes, client_options(self.settings, self.url)
            )
            parts = [TopicPartition(t, p) for t, ps in found.items() for p in sorted(ps)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            # rule packs and labels need no millisecond latency: no busy polling when idle
            timeout_ms = max(BROADCAST_WAIT_MS, int(self.settings.batch_within_s * 1000))
            while not self._stopping.is_set():
                batches = await consumer.getmany(
                    timeout_ms=timeout_ms, max_records=self.settings.batch_size
                )
                for tp, messages in batches.items():
                    records = [
                        Record(tp.topic, m.value or b"", m.key, tp.partition, m.offset)
                        for m in messages
                    ]
                    await self.runner.handle(records, [m.timestamp / 1000 for m in messages])
                if not self.ready.is_set() and await _caught_up(consumer, ends):
                    self.ready.set()
                if not batches:
                    await self.runner.tick()
        finally:
            await consumer.stop()

    def stop(self) -> None:
        self._stopping.set()


async def topic_partitions(
    url: str,
    topics: Sequence[str],
    options: dict[str, Any] | None = None,
    wait_s: float = 5.0,
) -> dict[str, set[int]]:
    """The partition numbers of each topic (waiting briefly for topics still being created)."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(**{"bootstrap_servers": bootstrap_servers(url), **(options or {})})
    await client.bootstrap()
    try:
        deadline = time.monotonic() + wait_s
        while True:
            cluster = await client.fetch_all_metadata()
            found = {t: set(cluster.partitions_for_topic(t) or ()) for t in topics}
            missing = [t for t, parts in found.items() if not parts]
            if not missing:
                return found
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics missing on the broker: {', '.join(missing)}")
            await asyncio.sleep(0.2)
    finally:
        await client.close()


async def _caught_up(consumer: Any, ends: dict[Any, int]) -> bool:
    # Tansu reports a partition's end as its last batch's base offset + 1, so "position ≥ end"
    # is the most that can be asked.
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


class BrokerProbe:
    """Checks the broker is reachable (a metadata round trip) and reports it to the status."""

    def __init__(self, settings: Settings, status: BrokerStatus) -> None:
        self.options = client_options(settings)
        self.status = status
        self._client: Any = None

    async def check(self) -> bool:
        from aiokafka.client import AIOKafkaClient
        from aiokafka.errors import KafkaError

        try:
            if self._client is None:
                client = AIOKafkaClient(**self.options)
                await client.bootstrap()
                self._client = client
            ok = bool(await self._client.fetch_all_metadata())
        except (KafkaError, OSError):
            ok = False
        self.status.report(ok)
        return ok

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
