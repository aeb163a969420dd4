"""`pantau replay`: the whole pipeline over a file of events, in event-time order."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from streams.codec import dead_letter
from streams.core import EPOCH, Out, Record
from streams.pipeline import Pipeline
from streams.topics import Topics

# Which field of each input topic's value holds its event time.
_TIME_FIELDS = {
    "transactions": "created_at",
    "callbacks": "received_at",
    "balances": "at",
    "labels": "reported_at",
    "rules": "published_at",
}


class ReplayInputError(Exception):
    """The replay input cannot be used at all (missing file, unreadable format)."""


@dataclass
class ReplayResult:
    """What a replay read and wrote."""

    lines: int = 0
    records: int = 0
    unreadable: int = 0
    written: dict[str, int] = field(default_factory=dict)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else None


def event_time_fields(topics: Topics) -> dict[str, str]:
    """Input topic name → the value field that carries its event time."""
    return {getattr(topics, attr): fld for attr, fld in _TIME_FIELDS.items()}


def read_events(
    path: Path, topics: Topics
) -> tuple[list[tuple[datetime, int, Record]], list[Record]]:
    """Read a replay file: (records with their event time and line, unreadable lines as records)."""
    if not path.exists():
        raise ReplayInputError(f"{path}: no such file")
    if path.is_dir():
        raise ReplayInputError(f"{path}: is a directory, expected a JSON-lines file")
    if path.suffix == ".parquet":
        raise ReplayInputError(
            f"{path}: Parquet input needs pyarrow, which this install does not include; "
            'convert to JSON lines ({"topic", "value"} per line)'
        )
    fields = event_time_fields(topics)
    inputs = set(topics.inputs())
    good: list[tuple[datetime, int, Record]] = []
    bad: list[Record] = []
    last_time = EPOCH
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            stripped = line.strip()
            if not stripped:
                continue
            try:
                item = orjson.loads(stripped)
                if not isinstance(item, dict):
                    raise ValueError("line must be a JSON object")
                topic = item.get("topic")
                if topic not in inputs:
                    raise ValueError(f"topic must be one of the input topics, got {topic!r}")
                value = item.get("value")
                if isinstance(value, str):
                    raw = value.encode("utf-8")
                    parsed: Any = None
                    with contextlib.suppress(orjson.JSONDecodeError):
                        parsed = orjson.loads(raw)
                elif isinstance(value, dict):
                    raw = orjson.dumps(value)
                    parsed = value
                else:
                    raise ValueError("value must be a JSON object (or its text)")
                key = item.get("key")
                key_bytes = str(key).encode("utf-8") if key is not None else None
            except (orjson.JSONDecodeError, ValueError) as exc:
                bad.append(
                    Record(topic="replay.input", value=stripped, line=lineno, key=str(exc).encode())
                )
                continue
            at = None
            if isinstance(parsed, dict):
                at = _parse_time(parsed.get(fields[topic]))
            if at is None:
                at = last_time  # keeps its place among its neighbours
            last_time = at
            good.append((at, lineno, Record(topic=topic, value=raw, key=key_bytes, line=lineno)))
    good.sort(key=lambda item: (item[0], item[1]))  # stable: file order breaks ties
    return good, bad


# Replay hands the pipeline the events of up to WINDOW_S of event time (and `size` events) at
# once, one batch per topic in the order the topics first appear. Transactions and callbacks
# interleave closely in a file, so strict event order made batches of one or two events and the
# per-batch costs (rule columns, model scoring) dominated; live, different topics are different
# partitions and arrive far less ordered than this. Rule packs and fraud labels change how later
# events are judged, so they stay exactly in place.
WINDOW_S = 10.0


def _batches(
    records: list[tuple[datetime, int, Record]],
    size: int,
    barriers: frozenset[str] = frozenset(),
    window_s: float = WINDOW_S,
) -> Iterator[list[Record]]:
    """Batches in event order: each window's records grouped by topic (each group in file
    order); a record of a `barriers` topic ends the window and is a batch of its own."""
    window: dict[str, list[Record]] = {}
    count = 0
    start: datetime | None = None
    for at, _, record in records:
        if count and (
            count >= size
            or record.topic in barriers
            or (start is not None and (at - start).total_seconds() >= window_s)
        ):
            yield from window.values()
            window, count, start = {}, 0, None
        if record.topic in barriers:
            yield [record]
            continue
        if start is None:
            start = at
        window.setdefault(record.topic, []).append(record)
        count += 1
    yield from window.values()


class JsonlSink:
    """One JSON-lines file per output topic in a directory (created empty up front)."""

    def __init__(self, out_dir: Path, topics: list[str]) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, IO[bytes]] = {}
        self.counts: dict[str, int] = {}
        self.out_dir = out_dir
        for topic in topics:
            self._open(topic)

    def _open(self, topic: str) -> IO[bytes]:
        fh = (self.out_dir / f"{topic}.jsonl").open("wb")
        self.files[topic] = fh
        self.counts[topic] = 0
        return fh

    def __call__(self, out: Out) -> None:
        fh = self.files.get(out.topic) or self._open(out.topic)
        fh.write(orjson.dumps(out.value))
        fh.write(b"\n")
        self.counts[out.topic] += 1

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()


def replay(
    pipeline: Pipeline,
    path: Path,
    out_dir: Path,
    *,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Run every event of a replay file through the pipeline; write DIR/<topic>.jsonl."""
    topics = pipeline.topics
    records, bad = read_events(path, topics)
    sink = JsonlSink(out_dir, topics.outputs())
    result = ReplayResult(records=len(records), unreadable=len(bad))
    result.lines = len(records) + len(bad)
    try:
        for record in bad:
            reason = f"line {record.line}: " + (record.key or b"").decode()
            record.key = None
            sink(dead_letter(record, reason, topics.deadletter))
        size = batch_size or pipeline.settings.batch_size
        done = 0
        barriers = frozenset((topics.rules, topics.labels))
        for batch in _batches(records, size, barriers):
            pipeline.process(batch, sink)
            pipeline.tick(sink)
            done += len(batch)
            if progress is not None:
                progress(done, len(records))
        pipeline.close(sink)
    finally:
        sink.close()
    result.written = dict(sink.counts)
    return result
