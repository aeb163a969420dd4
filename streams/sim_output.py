"""Where simulated events go: a replay file (plus ground-truth labels), or Kafka at a set speed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from streams.simulator import SimEvent
from streams.topics import Topics

LABEL_DELAY = timedelta(days=7)  # ground-truth labels: reported a week after the payment
PROGRESS_EVERY = 5_000


@dataclass
class SimSummary:
    """What a simulation wrote: events per topic, special events per tag, labels written."""

    topics: Counter[str] = field(default_factory=Counter)
    tags: Counter[str] = field(default_factory=Counter)
    events: int = 0
    labels: int = 0
    fraud: int = 0
    first_at: float | None = None
    last_at: float | None = None


def replay_line(event: SimEvent) -> bytes:
    """One line of the replay format (DESIGN.md §5): {"topic", "key", "value"}."""
    return orjson.dumps({"topic": event.topic, "key": event.key, "value": event.value}) + b"\n"


class GroundTruth:
    """Collects every transaction's fraud truth (any fraudulent attempt makes it fraud)."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.truth: dict[str, list[Any]] = {}

    def see(self, event: SimEvent) -> None:
        if event.topic != self.topics.transactions or event.fraud is None:
            return
        if event.tag is not None and event.tag.startswith("invalid:"):
            return
        tid = event.value.get("transaction_id")
        if not isinstance(tid, str):
            return
        known = self.truth.get(tid)
        if known is None:
            self.truth[tid] = [event.fraud, event.at]
        elif event.fraud:
            known[0] = True

    def lines(self, delay: timedelta | None = None) -> Iterator[bytes]:
        """FraudLabel lines in the replay format, one per transaction, `delay` (default a week)
        after its first attempt."""
        seconds = (LABEL_DELAY if delay is None else delay).total_seconds()
        for tid, (fraud, at) in self.truth.items():
            reported = datetime.fromtimestamp(at + seconds, UTC).isoformat(timespec="milliseconds")
            value = {
                "transaction_id": tid,
                "fraud": fraud,
                "reported_at": reported.replace("+00:00", "Z"),
            }
            yield orjson.dumps({"topic": self.topics.labels, "key": tid, "value": value}) + b"\n"


def _count(summary: SimSummary, event: SimEvent) -> None:
    summary.events += 1
    summary.topics[event.topic] += 1
    if event.tag is not None:
        summary.tags[event.tag] += 1
    if event.fraud:
        summary.fraud += 1
    if summary.first_at is None:
        summary.first_at = event.at
    summary.last_at = event.at


def write_file(
    events: Iterable[SimEvent],
    out: Path,
    *,
    labels: Path | None = None,
    label_delay: timedelta | None = None,
    topics: Topics | None = None,
    progress: Callable[[SimSummary], None] | None = None,
) -> SimSummary:
    """Write events to `out` in the replay format; with `labels`, also every transaction's
    ground-truth FraudLabel (for `pantau train`), reported `label_delay` after it (default
    LABEL_DELAY, a week)."""
    topics = topics or Topics()
    summary = SimSummary()
    truth = GroundTruth(topics) if labels is not None else None
    dumps = orjson.dumps
    with out.open("wb") as fh:
        buf: list[bytes] = []
        for event in events:
            buf.append(dumps({"topic": event.topic, "key": event.key, "value": event.value}))
            _count(summary, event)
            if truth is not None:
                truth.see(event)
            if len(buf) >= PROGRESS_EVERY:
                fh.write(b"\n".join(buf) + b"\n")
                buf.clear()
                if progress is not None:
                    progress(summary)
        if buf:
            fh.write(b"\n".join(buf) + b"\n")
    if truth is not None and labels is not None:
        with labels.open("wb") as fh:
            for line in truth.lines(label_delay):
                fh.write(line)
                summary.labels += 1
    if progress is not None:
        progress(summary)
    return summary


def bootstrap_servers(broker: str) -> str:
    """'kafka://a:9092;kafka://b:9092' (Faust's form) → 'a:9092,b:9092' (aiokafka's)."""
    hosts = []
    for part in broker.split(";"):
        part = part.strip()
        if "://" in part:
            part = part.split("://", 1)[1]
        if part:
            hosts.append(part.rstrip("/"))
    return ",".join(hosts)


async def produce(
    events: Iterable[SimEvent],
    broker: str,
    *,
    speed: float | None = None,
    progress: Callable[[SimSummary], None] | None = None,
    stop: Callable[[], bool] | None = None,
    paced_until: float | None = None,
) -> SimSummary:
    """Send events to Kafka (aiokafka), keyed as DESIGN.md §2 says. `speed` is event-time seconds
    per wall-clock second (1 = real time, 60 = an hour a minute); None sends as fast as the broker
    takes them. Events after `paced_until` (epoch seconds: the tail of late callbacks and labels
    that follows the simulated period) are sent at once rather than hours later."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(broker),
        linger_ms=20,
        max_batch_size=256 * 1024,
        acks=1,
        enable_idempotence=False,  # Tansu refuses InitProducerId
    )
    summary = SimSummary()
    await producer.start()
    try:
        wall0 = time.monotonic()
        event0: float | None = None
        dumps = orjson.dumps
        for event in events:
            if stop is not None and stop():
                break
            if speed and (paced_until is None or event.at <= paced_until):
                if event0 is None:
                    event0 = event.at
                due = (event.at - event0) / speed - (time.monotonic() - wall0)
                if due > 0.01:
                    await asyncio.sleep(due)
            key = event.key.encode() if event.key is not None else None
            await producer.send(event.topic, value=dumps(event.value), key=key)
            _count(summary, event)
            if progress is not None and summary.events % PROGRESS_EVERY == 0:
                progress(summary)
        await producer.flush()
    finally:
        await producer.stop()
    if progress is not None:
        progress(summary)
    return summary
