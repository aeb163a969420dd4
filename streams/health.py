"""Channel health: per-partition pre-aggregates, merged per channel into windows, failover, alerts.

Two halves, one per side of the `pantau.health-deltas` topic (keyed by channel):

- `HealthObserver` sits in the payments stage (which is keyed by customer, so one channel's traffic
  is spread over every partition and worker). It classifies each attempt, drops redeliveries, and
  sends, per micro-batch, one delta per (channel, method, 10 s event-time bucket) it touched:
  counts, a sparse latency histogram (fixed log-spaced bins, so histograms add up), the latest
  non-failing attempt's time and the provider failures after it. A `*` delta carries the records
  and dead letters of payments.transactions.
- `HealthStage` ("health") consumes the deltas. The topic is keyed by channel, so one worker owns
  a channel and sees every delta of it, from every partition. It merges them into 10 s buckets
  (an hour of them), and each time its watermark passes a bucket boundary it evaluates every
  active channel: the 1 min,
  5 min and 1 h windows, the consecutive provider failures, the failover state machine
  (rules/failover.py), the alerts, and a ChannelHealth snapshot on channel.health. Evaluation only
  ever reads closed buckets, so replay and live agree.

The watermark: each observer reports its progress, the event time up to which it has read every
partition it consumes (the slowest partition's latest event; the payments stage tells it each
partition's latest through `positions`); the stage's clock follows the slowest worker's progress,
and the watermark is that minus the allowed lateness. So a worker or partition catching up on a
backlog holds judgement back instead of being judged half-read. A partition or worker silent for
SOURCE_IDLE_MS (2 min) of event time stops holding it back.

Consecutive provider failures, across partitions: the provider failures since the latest
non-failing attempt (success, pending, decline or merchant error), by event time. Within a bucket
that is exact (deltas carry the time of their latest non-failure and the times of the failures
after it, and the merge keeps the failures after the bucket's latest non-failure); buckets without
a non-failure add all their provider failures and the walk goes on to the previous bucket.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import os
import socket
from collections import deque
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson

from models.common import SCHEMA_VERSION, Method, iso_utc
from models.inputs import Transaction
from models.outputs import (
    ChannelState,
    FailoverSignal,
    Severity,
    WindowStats,
)
from rules.failover import MachineState, Observation, Transition, resumed, step
from rules.health import HealthRules, load_health_rules
from rules.taxonomy import NO_ERROR, ErrorClass
from streams import metrics
from streams.alerts import AlertTracker
from streams.core import EventClock, Out, Record, Stage, by_partition
from streams.topics import Topics

log = logging.getLogger(__name__)

BUCKET_MS = 10_000
RING = 360  # one hour of 10 s buckets
WINDOWS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000}
RECORDS_KEY = "*"  # the deltas key of the records / dead-letters counts (never a channel name)
MAX_FAILS_PER_DELTA = 64
# A partition or worker that has sent nothing for this long (event time) stops holding the
# watermark back: it went quiet, stopped, or its partitions moved to another worker.
SOURCE_IDLE_MS = 120_000
DEDUP_SIZE = 100_000

# Latency histogram: 20 bins per decade from 1 ms to 100 s (≤ 6% relative error on a quantile),
# plus [0, 1 ms) and [100 s, ∞).
EDGES_MS: tuple[float, ...] = tuple(10 ** (k / 20) for k in range(0, 101))
NBINS = len(EDGES_MS) + 1

# Counter columns of a bucket row, then the histogram bins.
ATTEMPTS, SUCCESSES, PENDING, PROVIDER, DECLINED, MERCHANT, UNKNOWN = range(7)
NCOUNTS = 7
_CLASS_COLUMN = {
    ErrorClass.PROVIDER: PROVIDER,
    ErrorClass.DECLINED: DECLINED,
    ErrorClass.MERCHANT: MERCHANT,
    ErrorClass.UNKNOWN: UNKNOWN,
}


def latency_bin(latency_ms: float) -> int:
    """The histogram bin of a latency."""
    return bisect.bisect_right(EDGES_MS, latency_ms)


def quantiles(hist: Sequence[int] | np.ndarray, qs: Sequence[float]) -> list[float | None]:
    """Latency quantiles (ms) from histogram counts: geometric interpolation inside the bin.

    Plain Python over the ~100 bins: numpy's per-call costs were most of it."""
    counts = hist.tolist() if isinstance(hist, np.ndarray) else [int(c) for c in hist]
    return _quantiles(counts, qs)


def _quantiles(counts: list[int], qs: Sequence[float]) -> list[float | None]:
    """quantiles() of a list of Python ints."""
    cum = list(itertools.accumulate(counts))
    total = cum[-1] if cum else 0
    if total == 0:
        return [None] * len(qs)
    out: list[float | None] = []
    last = len(counts) - 1
    for q in qs:
        rank = q * total
        i = min(bisect.bisect_left(cum, rank), last)
        while counts[i] == 0:  # rank 0 falls before the first non-empty bin
            i += 1
        seen = cum[i] - counts[i]
        frac = (rank - seen) / counts[i]
        if i == 0:
            out.append(EDGES_MS[0] * frac)
        elif i >= len(EDGES_MS):
            out.append(EDGES_MS[-1])
        else:
            lo, hi = EDGES_MS[i - 1], EDGES_MS[i]
            out.append(lo * (hi / lo) ** frac)
    return out


def quantile(hist: Sequence[int] | np.ndarray, q: float) -> float | None:
    """One latency quantile (ms) from histogram counts."""
    return quantiles(hist, (q,))[0]


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _dt(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


# ---- the observer, in the payments stage ---------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    counts: list[int] = field(default_factory=lambda: [0] * NCOUNTS)
    latency: dict[int, int] = field(default_factory=dict)
    last_ok: int | None = None
    fails: list[int] = field(default_factory=list)
    src: dict[int, int] = field(default_factory=dict)  # source partition → highest offset


class HealthObserver:
    """Pre-aggregates this worker's share of every channel into 10 s deltas (a BatchObserver).

    Redeliveries: an attempt is identified by (transaction_id, created_at, status); the last
    `dedup_size` identities this observer saw are remembered, and a repeat is left out of the
    windows (and counted in pantau_duplicate_attempts_total). A retry is a new attempt (a later
    created_at), so it counts.

    A redelivery that lands on another worker (the first one was killed after sending its deltas
    but before committing its offsets) is caught by source offsets: every delta names, per source
    partition, the highest offset it counts (`src`), and after a worker takes a partition over
    (`restored`) the records the previous owner may have counted are sent one delta each, with
    their own offset (`one`); the health stage skips those at or below what it has counted.
    """

    def __init__(
        self,
        topics: Topics,
        rules: HealthRules | None = None,
        dedup_size: int = DEDUP_SIZE,
        source: str | None = None,
    ) -> None:
        self.topic = topics.health_deltas
        # Names this worker's deltas, so the health stage can wait for its slowest worker.
        self.source = source or f"{socket.gethostname()}:{os.getpid()}"
        self._partitions: dict[int | None, int] = {}  # partition → latest event time (ms)
        self.rules = rules or load_health_rules()
        self.classify = self.rules.classifier.error_class
        self.clock = EventClock()
        self._seen: set[int] = set()
        self._order: deque[int] = deque()
        self._dedup_size = dedup_size
        # bucket → [records, dead letters, {source partition: highest offset}]
        self._records: dict[int, list[Any]] = {}
        self._labels: dict[str, str] = {}
        self._origins: Sequence[tuple[int | None, int | None]] = ()
        self._careful: dict[int, int] = {}  # partition → offsets up to here are sent one by one
        self._dead: list[Record] = []  # the batch's dead letters, counted by `observe`
        self._dead_deltas: list[Out] = []
        # (channel label, method, status, error class) → transactions counted in this batch
        self._tally: dict[tuple[str, str, str, str], int] = {}

    def _duplicate(self, tx: Transaction, at_ms: int) -> bool:
        return self._seen_before(hash((tx.transaction_id, at_ms, tx.status.value)))

    def _seen_before(self, ident: int) -> bool:
        if ident in self._seen:
            return True
        self._seen.add(ident)
        self._order.append(ident)
        if len(self._order) > self._dedup_size:
            self._seen.discard(self._order.popleft())
        return False

    def origins(self, origins: Sequence[tuple[int | None, int | None]]) -> None:
        """The (partition, offset) of each transaction of the coming `observe` (optional hook)."""
        self._origins = origins

    def restored(self, partition: int, careful_until: int) -> None:
        """This worker took `partition` over; its records up to `careful_until` may have been
        counted by the previous owner (optional hook, called by the payments stage)."""
        self._careful[partition] = careful_until

    def _single(self, partition: int, offset: int) -> bool:
        until = self._careful.get(partition)
        return until is not None and offset <= until

    def _settle_careful(self, highest: Mapping[int, int]) -> None:
        for partition, offset in highest.items():
            until = self._careful.get(partition)
            if until is not None and offset > until:
                del self._careful[partition]  # past what the previous owner can have seen

    def observe(self, transactions: Sequence[Transaction]) -> list[Out]:
        """The batch's valid transactions (and the dead letters `rejected` handed over): its
        deltas, one-record ones first in offset order, then one per (channel, method, bucket)."""
        pending: dict[tuple[str, str, int], _Pending] = {}
        self._tally = {}  # (not what a failed batch left)
        origins = self._origins if len(self._origins) == len(transactions) else ()
        self._origins = ()
        singles: list[tuple[int, int, tuple[str, str, int], _Pending | None]] = []
        highest: dict[int, int] = {}
        for i, tx in enumerate(transactions):
            at_ms = _ms(tx.created_at)
            self.clock.observe(tx.created_at)
            bucket = at_ms - at_ms % BUCKET_MS
            if self._duplicate(tx, at_ms):
                metrics.DUPLICATE_ATTEMPTS.inc()
                continue
            partition, offset = origins[i] if origins else (None, None)
            key = (tx.channel, tx.method.value, bucket)
            if self._careful and partition is not None and offset is not None:  # a takeover
                if offset > highest.get(partition, -1):
                    highest[partition] = offset
                if self._single(partition, offset):
                    agg = _Pending()
                    singles.append((partition, offset, key, agg))
                    self._count(tx, at_ms, agg)
                    continue
            found = pending.get(key)
            if found is None:
                found = pending[key] = _Pending()
            rec = self._records.get(bucket)
            if rec is None:
                rec = self._records[bucket] = [0, 0, {}]
            rec[0] += 1
            if partition is not None and offset is not None:
                if offset > found.src.get(partition, -1):
                    found.src[partition] = offset
                if offset > rec[2].get(partition, -1):
                    rec[2][partition] = offset
            self._count(tx, at_ms, found)
        tally, self._tally = self._tally, {}
        for labels, n in tally.items():  # one increment per label set and batch
            metrics.child(metrics.TRANSACTIONS, *labels).inc(n)
        dead_bucket = self._dead_letters(singles, highest)
        self._settle_careful(highest)
        progress = self.progress()
        # One-record deltas first, in offset order: they precede the aggregated ones of their
        # partition, and the health stage expects a partition's offsets to only go up.
        out: list[Out] = []
        for partition, offset, key, one in sorted(singles, key=lambda s: (s[0], s[1])):
            if one is None:  # a dead letter
                one_dead = self._records_delta(dead_bucket, 1, 1, progress, one=(partition, offset))
                out.append(one_dead)
            else:
                out.append(self._delta(key, one, progress, one=(partition, offset)))
                out.append(self._records_delta(key[2], 1, 0, progress, one=(partition, offset)))
        out.extend(self._delta(key, agg, progress) for key, agg in pending.items())
        out.extend(self._records_deltas(progress))
        for delta in self._dead_deltas:  # one per batch, so its offsets only go up too
            delta.value["progress"] = progress
            out.append(delta)
        self._dead_deltas = []
        return out

    def _dead_letters(
        self,
        singles: list[tuple[int, int, tuple[str, str, int], _Pending | None]],
        highest: dict[int, int],
    ) -> int:
        """Count the dead letters `rejected` handed over, at this worker's latest event time (a
        dead letter has none of its own); returns that bucket."""
        dead, self._dead = self._dead, []
        latest = _ms(self.clock.latest)
        bucket = latest - latest % BUCKET_MS
        if not dead or not self.clock.started:
            return bucket
        count = 0
        src: dict[int, int] = {}
        for r in dead:
            if r.offset is not None:
                ident = hash(("dead", r.topic, r.partition, r.offset))
            elif r.line is not None:
                ident = hash(("dead", r.topic, r.line))
            else:
                ident = hash(("dead", r.value))
            if self._seen_before(ident):
                continue
            if r.partition is not None and r.offset is not None:
                if self._careful:  # a takeover
                    if r.offset > highest.get(r.partition, -1):
                        highest[r.partition] = r.offset
                    if self._single(r.partition, r.offset):
                        singles.append((r.partition, r.offset, ("", RECORDS_KEY, bucket), None))
                        continue
                if r.offset > src.get(r.partition, -1):
                    src[r.partition] = r.offset
            count += 1
        if count:
            self._dead_deltas.append(self._records_delta(bucket, count, count, 0, src))
        return bucket

    def _count(self, tx: Transaction, at_ms: int, agg: _Pending) -> None:
        status = tx.status.value
        method = tx.method.value
        cls = self.classify(status, tx.error_code)
        label = self._labels.get(tx.channel)
        if label is None:
            label = self._labels[tx.channel] = self.rules.metric_channel(tx.channel)
        labels = (label, method, status, cls.value if cls else NO_ERROR)
        self._tally[labels] = self._tally.get(labels, 0) + 1
        counts = agg.counts
        counts[ATTEMPTS] += 1
        if cls is None:
            counts[SUCCESSES if status == "success" else PENDING] += 1
        else:
            counts[_CLASS_COLUMN[cls]] += 1
        if cls is ErrorClass.PROVIDER:
            agg.fails.append(at_ms)
        elif cls is not ErrorClass.UNKNOWN and (agg.last_ok is None or at_ms > agg.last_ok):
            agg.last_ok = at_ms  # the provider answered: a run of failures ends here
        if tx.latency_ms is not None and cls is not ErrorClass.PROVIDER:
            # A provider error's latency is its timeout: it counts as an error, not as speed.
            b = latency_bin(tx.latency_ms)
            agg.latency[b] = agg.latency.get(b, 0) + 1
            metrics.child(metrics.ATTEMPT_LATENCY, label, method).observe(tx.latency_ms / 1000)

    def positions(self, latest: Mapping[int | None, datetime]) -> None:
        """The latest event time of each partition in the coming batch (the optional hook)."""
        for partition, at in latest.items():
            ms = _ms(at)
            if ms > self._partitions.get(partition, -1):
                self._partitions[partition] = ms

    def progress(self) -> int:
        """Event time up to which this worker has read every partition that is still sending
        (a partition silent for SOURCE_IDLE_MS of event time no longer holds it back)."""
        if not self._partitions:
            return _ms(self.clock.latest)
        top = max(self._partitions.values())
        return min(v for v in self._partitions.values() if v >= top - SOURCE_IDLE_MS)

    def rejected(self, records: Sequence[Record]) -> list[Out]:
        """The payments stage dead-lettered these records of the batch (the optional hook, called
        before `observe`, which counts them with the valid ones, so one pass sees a partition's
        offsets in order).

        A redelivered dead letter counts once: it is known by its topic, partition and offset
        (its line in a replay file, else its bytes)."""
        self._dead.extend(records)
        return []

    def flush(self) -> list[Out]:
        """Everything is sent with the batch that produced it; nothing waits here."""
        return []

    def _delta(
        self,
        key: tuple[str, str, int],
        agg: _Pending,
        progress: int,
        one: tuple[int, int] | None = None,
    ) -> Out:
        channel, method, bucket = key
        fails = agg.fails
        if agg.last_ok is not None:
            last_ok = agg.last_ok
            fails = [f for f in fails if f > last_ok]
        fails.sort()
        more = max(0, len(fails) - MAX_FAILS_PER_DELTA)
        value: dict[str, Any] = {
            "kind": "channel",
            "channel": channel,
            "method": method,
            "bucket": bucket,
            "source": self.source,
            "progress": progress,
            "n": agg.counts,
            "lat": sorted(agg.latency.items()),
            "last_ok": agg.last_ok,
            "fails": fails[more:],
        }
        if agg.src:
            value["src"] = {str(p): o for p, o in sorted(agg.src.items())}
        if one is not None:
            value["one"] = list(one)
        return Out(self.topic, channel, value)

    def _records_delta(
        self,
        bucket: int,
        records: int,
        dead: int,
        progress: int,
        src: Mapping[int, int] | None = None,
        one: tuple[int, int] | None = None,
    ) -> Out:
        value: dict[str, Any] = {
            "kind": "records",
            "bucket": bucket,
            "source": self.source,
            "progress": progress,
            "records": records,
            "dead": dead,
        }
        if src:
            value["src"] = {str(p): o for p, o in sorted(src.items())}
        if one is not None:
            value["one"] = list(one)
        return Out(self.topic, RECORDS_KEY, value)

    def _records_deltas(self, progress: int) -> list[Out]:
        out = [
            self._records_delta(b, r, d, progress, src)
            for b, (r, d, src) in sorted(self._records.items())
        ]
        self._records.clear()
        return out


# ---- the health stage ----------------------------------------------------------------------------


class _Ring:
    """An hour of 10 s buckets: counts and latency bins per bucket, summed over any range.

    `held` is the sum of every row, kept as rows change, so a window as long as the ring (the
    1 h one) is that sum less the few rows outside it, not a sum of all 360 rows; a shorter
    window sums only the slots its buckets map to."""

    __slots__ = ("held", "rows", "starts")

    def __init__(self) -> None:
        self.rows = np.zeros((RING, NCOUNTS + NBINS), dtype=np.int32)  # 157 kB a channel
        self.starts = np.full(RING, -1, dtype=np.int64)
        self.held = np.zeros(NCOUNTS + NBINS, dtype=np.int64)

    def slot(self, bucket: int) -> int | None:
        i = (bucket // BUCKET_MS) % RING
        start = int(self.starts[i])
        if start == bucket:
            return i
        if start > bucket:
            return None  # older than an hour behind what this slot holds now: dropped
        if start >= 0:
            self.held -= self.rows[i]
        self.rows[i] = 0
        self.starts[i] = bucket
        return i

    def add(self, bucket: int, counts: Sequence[int], latency: Sequence[Sequence[int]]) -> bool:
        i = self.slot(bucket)
        if i is None:
            return False
        row = self.rows[i]
        held = self.held
        n = min(len(counts), NCOUNTS)
        if n:
            added = np.asarray(counts[:n], dtype=np.int32)
            row[:n] += added
            held[:n] += added
        for b, n in latency:
            row[NCOUNTS + int(b)] += int(n)
            held[NCOUNTS + int(b)] += int(n)
        return True

    def total(self, lo: int, hi: int) -> np.ndarray:
        """Every count of the buckets that start in [lo, hi), summed."""
        first = lo - lo % BUCKET_MS  # the slot of a bucket starting in [lo, hi) is among
        span = -(-(hi - first) // BUCKET_MS)  # those of first, first + 10 s, … before hi
        if span <= 0:
            return np.zeros(NCOUNTS + NBINS, dtype=np.int64)
        if span < RING:
            i = (first // BUCKET_MS) % RING
            if i + span <= RING:
                starts, rows = self.starts[i : i + span], self.rows[i : i + span]
            else:
                idx = np.arange(i, i + span) % RING
                starts, rows = self.starts[idx], self.rows[idx]
            mask = (starts >= lo) & (starts < hi)
            return np.asarray(rows[mask].sum(axis=0, dtype=np.int64))
        starts = self.starts
        outside = ((starts < lo) & (starts >= 0)) | (starts >= hi)
        if not outside.any():
            return self.held.copy()
        if np.count_nonzero(outside) <= RING // 4:
            return self.held - self.rows[outside].sum(axis=0, dtype=np.int64)
        mask = (starts >= lo) & (starts < hi)
        return np.asarray(self.rows[mask].sum(axis=0, dtype=np.int64))

    def provider_errors(self, bucket: int) -> int:
        i = (bucket // BUCKET_MS) % RING
        return int(self.rows[i, PROVIDER]) if int(self.starts[i]) == bucket else 0


def window_stats(row: np.ndarray) -> WindowStats:
    """WindowStats from a summed bucket row."""
    attempts = int(row[ATTEMPTS])
    p50, p95, p99 = quantiles(row[NCOUNTS:], (0.50, 0.95, 0.99))
    return WindowStats(
        attempts=attempts,
        successes=int(row[SUCCESSES]),
        provider_errors=int(row[PROVIDER]),
        declines=int(row[DECLINED]),
        merchant_errors=int(row[MERCHANT]),
        unknown_errors=int(row[UNKNOWN]),
        provider_error_rate=round(int(row[PROVIDER]) / attempts, 6) if attempts else 0.0,
        decline_rate=round(int(row[DECLINED]) / attempts, 6) if attempts else 0.0,
        latency_p50_ms=_round(p50),
        latency_p95_ms=_round(p95),
        latency_p99_ms=_round(p99),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class _Window:
    """One window's figures, held as channel.health carries them: WindowStats's JSON, built
    without validating a model per window (tests compare it with the contract's own dump)."""

    __slots__ = ("json", "samples")

    def __init__(self, json: dict[str, Any], samples: int = 0) -> None:
        self.json = json
        self.samples = samples  # latency samples (the histogram's total)

    @property
    def attempts(self) -> int:
        return int(self.json["attempts"])

    @property
    def provider_errors(self) -> int:
        return int(self.json["provider_errors"])

    @property
    def provider_error_rate(self) -> float:
        return float(self.json["provider_error_rate"])

    @property
    def decline_rate(self) -> float:
        return float(self.json["decline_rate"])

    @property
    def latency_p50_ms(self) -> float | None:
        return self.json["latency_p50_ms"]

    @property
    def latency_p95_ms(self) -> float | None:
        return self.json["latency_p95_ms"]

    @property
    def latency_p99_ms(self) -> float | None:
        return self.json["latency_p99_ms"]


def _window(row: np.ndarray) -> _Window:
    """window_stats(row), as the JSON channel.health carries."""
    attempts, successes, _, provider, declined, merchant, unknown = row[:NCOUNTS].tolist()
    bins = row[NCOUNTS:].tolist()
    p50, p95, p99 = _quantiles(bins, (0.50, 0.95, 0.99))
    return _Window(
        {
            "attempts": attempts,
            "successes": successes,
            "provider_errors": provider,
            "declines": declined,
            "merchant_errors": merchant,
            "unknown_errors": unknown,
            "provider_error_rate": round(provider / attempts, 6) if attempts else 0.0,
            "decline_rate": round(declined / attempts, 6) if attempts else 0.0,
            "latency_p50_ms": _round(p50),
            "latency_p95_ms": _round(p95),
            "latency_p99_ms": _round(p99),
        },
        sum(bins),
    )


# MachineState's fields, to store it as a dict without dataclasses.asdict's deep copies (every
# field is a number, a string or None).
_MACHINE_FIELDS = tuple(f.name for f in fields(MachineState))


def _machine_dict(st: MachineState) -> dict[str, Any]:
    """st.to_dict(), without the deep copy."""
    return {name: getattr(st, name) for name in _MACHINE_FIELDS}


def _snapshot(
    ev: _Eval, state: str, since: float, at: str, windows: dict[str, Any]
) -> dict[str, Any]:
    """The ChannelHealth JSON of one evaluation (tests compare it with the contract's dump)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "channel": ev.channel,
        "method": ev.method,
        "state": ChannelState(state).value,
        "since": iso_utc(_dt(since * 1000)),
        "consecutive_provider_failures": ev.obs.consecutive_failures,
        "windows": windows,
        "at": at,
    }


@dataclass
class _Channel:
    """One channel: a ring of buckets per method (most channels have one), runs of failures."""

    methods: dict[str, _Ring] = field(default_factory=dict)
    # bucket → [latest non-failure (ms) or None, provider failure times after it]
    runs: dict[int, list[Any]] = field(default_factory=dict)
    first_bucket: int = -1
    last_bucket: int = -1
    heard: int = -1  # the event time (its source's progress) of the latest delta of it (ms)
    method_attempts: dict[str, int] = field(default_factory=dict)  # the channel's main method

    def add(self, method: str, bucket: int, counts: Sequence[int], latency: Any) -> bool:
        ring = self.methods.get(method)
        if ring is None:
            if len(self.methods) >= len(Method):
                return False  # methods are a closed set; this cannot happen with valid input
            ring = self.methods[method] = _Ring()
        return ring.add(bucket, counts, latency)

    def total(self, lo: int, hi: int) -> np.ndarray:
        rings = iter(self.methods.values())
        row = next(rings).total(lo, hi)
        for ring in rings:
            row = row + ring.total(lo, hi)
        return row

    def provider_errors(self, bucket: int) -> int:
        return sum(ring.provider_errors(bucket) for ring in self.methods.values())


@dataclass
class _Eval:
    channel: str
    method: str | None
    windows: dict[str, _Window]
    obs: Observation
    samples_5m: int = 0


class _ChannelGauges:
    """One known channel's gauges, bound once (the health stage sets about 25 per evaluation)."""

    __slots__ = ("channel", "consecutive", "states", "windows")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.consecutive = metrics.child(metrics.CONSECUTIVE_FAILURES, channel)
        self.states = tuple(
            (s.value, metrics.child(metrics.CHANNEL_STATE, channel, s.value)) for s in ChannelState
        )
        self.windows: dict[str, tuple[Any, ...]] = {}

    def window(self, name: str) -> tuple[Any, ...]:
        """Error ratio, decline ratio, attempts and p50/p95/p99 latency of one window."""
        found = self.windows.get(name)
        if found is None:
            c = self.channel
            found = self.windows[name] = (
                metrics.child(metrics.PROVIDER_ERROR_RATIO, c, name),
                metrics.child(metrics.DECLINE_RATIO, c, name),
                metrics.child(metrics.WINDOW_ATTEMPTS, c, name),
                *(
                    metrics.child(metrics.LATENCY_QUANTILE, c, name, q)
                    for q in ("0.5", "0.95", "0.99")
                ),
            )
        return found

    def forget(self) -> None:
        """Stop exporting this channel's gauges (another worker owns it now)."""
        c = self.channel
        metrics.forget(metrics.CONSECUTIVE_FAILURES, c)
        for s in ChannelState:
            metrics.forget(metrics.CHANNEL_STATE, c, s.value)
        for name in self.windows:
            metrics.forget(metrics.PROVIDER_ERROR_RATIO, c, name)
            metrics.forget(metrics.DECLINE_RATIO, c, name)
            metrics.forget(metrics.WINDOW_ATTEMPTS, c, name)
            for q in ("0.5", "0.95", "0.99"):
                metrics.forget(metrics.LATENCY_QUANTILE, c, name, q)


class HealthStage(Stage):
    """Merges health deltas per channel; windows, failover signals, snapshots and alerts."""

    name = "health"

    def __init__(
        self,
        topics: Topics,
        rules: HealthRules | None = None,
        *,
        lateness: timedelta = timedelta(seconds=30),
        machines: MutableMapping[str, Any] | None = None,
        alert_state: MutableMapping[str, Any] | None = None,
    ) -> None:
        self.topics = topics
        self.rules = rules or load_health_rules()
        self.clock = EventClock(lateness=lateness)
        self.channels: dict[str, _Channel] = {}
        self.records = _Ring()
        # channel → MachineState as a dict (pass a Faust table live; a dict in replay)
        self.machines: MutableMapping[str, Any] = machines if machines is not None else {}
        self.alerts = AlertTracker(topics.alerts, alert_state, names=ALERT_NAMES)
        self.next_eval: int | None = None
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.last_signal: dict[str, dict[str, Any]] = {}
        self.dropped: set[str] = set()  # channels beyond max_channels (bounded)
        self.sources: dict[str, int] = {}  # observer → the event time it has read up to (ms)
        self.applied: dict[int, int] = {}  # deltas partition → highest offset merged
        # (source partition, channel, method, bucket) → the highest source offset counted there
        # (channel "" and method "*" for the records counts); see HealthObserver
        self.counted: dict[tuple[int, str, str, int], int] = {}
        self._counted_pruned = 0
        # channel → the state, method and time of its latest gateway.failover signal
        self.known: dict[str, dict[str, Any]] = {}
        self._gauges: dict[str, _ChannelGauges] = {}  # known channels (bounded by max_channels)

    @property
    def consumes(self) -> tuple[str, ...]:
        return (self.topics.health_deltas,)

    # -- input -------------------------------------------------------------------------------------

    def process(self, records: Sequence[Record]) -> list[Out]:
        sources = self.sources
        applied = self.applied
        for record in records:
            if record.offset is not None:
                # Kafka redelivers a partition from the last committed offset: what this stage
                # has merged already (up to its highest offset there) is skipped.
                part = record.partition if record.partition is not None else -1
                if record.offset <= applied.get(part, -1):
                    continue
                applied[part] = record.offset
            try:
                delta = orjson.loads(record.value)
                source, progress = str(delta.get("source", "")), int(delta["progress"])
                if self._fresh(delta):
                    self._merge(delta)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
                # An internal topic only our observers write: a bad delta is a bug, not input.
                log.warning("health: unusable delta at offset %s: %r", record.offset, exc)
                continue
            if progress > sources.get(source, -1):
                sources[source] = progress
        latest = self._progress()
        if latest:
            self.clock.observe(_dt(latest))
            if self.counted:
                self._prune_counted(latest)
            if self.next_eval is None:
                first = min(
                    (c.first_bucket for c in self.channels.values() if c.first_bucket >= 0),
                    default=latest - latest % BUCKET_MS,
                )
                self.next_eval = first + BUCKET_MS
        return self.tick()

    def _progress(self) -> int:
        """Event time every worker still sending has read up to (the slowest one's); a worker
        silent for SOURCE_IDLE_MS of event time (stopped, or its partitions moved) is left out."""
        if not self.sources:
            return 0
        top = max(self.sources.values())
        for source in [s for s, v in self.sources.items() if v < top - WINDOWS["1h"]]:
            del self.sources[source]  # long gone: forget it
        return min(v for v in self.sources.values() if v >= top - SOURCE_IDLE_MS)

    def _fresh(self, delta: dict[str, Any]) -> bool:
        """False for a one-record delta whose record is counted already (sent again by the
        worker that took its partition over); records the offsets a delta counts."""
        if delta.get("kind") == "records":
            if int(delta.get("dead") or 0) > 0:
                # Dead letters, not by bucket: one has no event time, so its bucket is wherever
                # its worker had got to, which differs between a delivery and a redelivery.
                tail: tuple[str, str, int] = ("", "dead", 0)
            else:
                tail = ("", RECORDS_KEY, int(delta["bucket"]))
        else:
            tail = (str(delta["channel"]), str(delta["method"]), int(delta["bucket"]))
        counted = self.counted
        one = delta.get("one")
        if one is not None:
            key = (int(one[0]), *tail)
            offset = int(one[1])
            if offset <= counted.get(key, -1):
                metrics.count(metrics.DUPLICATE_ATTEMPTS)
                return False
            counted[key] = offset
            return True
        for partition, offset in (delta.get("src") or {}).items():
            key = (int(partition), *tail)
            if int(offset) > counted.get(key, -1):
                counted[key] = int(offset)
        return True

    def _prune_counted(self, now: int) -> None:
        """Forget the offsets of buckets older than the ring (at most every 10 min event time)."""
        if now - self._counted_pruned < 600_000:
            return
        self._counted_pruned = now
        horizon = now - RING * BUCKET_MS - WINDOWS["1h"]
        for key in [k for k in self.counted if 0 < k[3] < horizon]:
            del self.counted[key]

    def _merge(self, delta: dict[str, Any]) -> None:
        bucket = int(delta["bucket"])
        if delta.get("kind") == "records":
            self.records.add(bucket, [int(delta["records"]), int(delta["dead"])], ())
            return
        channel = str(delta["channel"])
        method = str(delta["method"])
        ch = self.channels.get(channel)
        if ch is None:
            if len(self.channels) >= self.rules.max_channels:
                if channel not in self.dropped and len(self.dropped) < 1000:
                    self.dropped.add(channel)
                    if len(self.dropped) <= 10:  # the first few by name; the log stays bounded
                        log.warning(
                            "health: channel %s left out: max_channels %d reached",
                            channel,
                            self.rules.max_channels,
                        )
                return
            ch = self.channels[channel] = _Channel()
        counts = delta["n"]
        if not ch.add(method, bucket, counts, delta["lat"]):
            return  # more than an hour late
        ch.method_attempts[method] = ch.method_attempts.get(method, 0) + int(counts[ATTEMPTS])
        ch.last_bucket = max(ch.last_bucket, bucket)
        ch.heard = max(ch.heard, int(delta["progress"]))
        if ch.first_bucket < 0 or bucket < ch.first_bucket:
            ch.first_bucket = bucket
        last_ok = delta.get("last_ok")
        fails = delta.get("fails") or []
        if last_ok is None and not fails:
            return
        run = ch.runs.get(bucket)
        if run is None:
            run = ch.runs[bucket] = [None, []]
        if last_ok is not None and (run[0] is None or last_ok > run[0]):
            run[0] = int(last_ok)
        merged = run[1] + [int(f) for f in fails]
        if run[0] is not None:
            merged = [f for f in merged if f > run[0]]
        run[1] = sorted(merged)[-MAX_FAILS_PER_DELTA:]

    # -- evaluation --------------------------------------------------------------------------------

    def tick(self) -> list[Out]:
        if self.next_eval is None or not self.clock.started:
            return []
        return self._evaluate_until(_ms(self.clock.watermark))

    def close(self) -> list[Out]:
        """End of a replay: every bucket up to the latest event time is due."""
        if self.next_eval is None or not self.clock.started:
            return []
        latest = _ms(self.clock.latest)
        return self._evaluate_until(latest - latest % BUCKET_MS + BUCKET_MS)

    def _evaluate_until(self, watermark: int) -> list[Out]:
        out: list[Out] = []
        assert self.next_eval is not None
        if watermark - self.next_eval > WINDOWS["1h"]:  # a long gap: nothing left to judge there
            self.next_eval = watermark - watermark % BUCKET_MS - WINDOWS["1h"]
        while self.next_eval <= watermark:
            out.extend(self._evaluate(self.next_eval))
            self.next_eval += BUCKET_MS
        return out

    def _consecutive(self, ch: _Channel, boundary: int) -> int:
        count = 0
        bucket = boundary - BUCKET_MS
        oldest = boundary - WINDOWS["1h"]
        while bucket >= oldest:
            run = ch.runs.get(bucket)
            if run is not None and run[0] is not None:
                return count + len(run[1])
            count += ch.provider_errors(bucket)
            bucket -= BUCKET_MS
        return count

    def _measure(self, channel: str, ch: _Channel, boundary: int, st: MachineState) -> _Eval:
        th = self.rules.for_channel(channel)
        rows = {name: ch.total(boundary - length, boundary) for name, length in WINDOWS.items()}
        windows = {name: _window(row) for name, row in rows.items()}
        if len(ch.methods) > 1:  # per method too, as "<method>/<window>"
            for m, ring in sorted(ch.methods.items()):
                for name, length in WINDOWS.items():
                    windows[f"{m}/{name}"] = _window(ring.total(boundary - length, boundary))
        rate_window = int(th.error_rate_window_s * 1000)
        lo = max(boundary - rate_window, int(st.evidence_from * 1000))
        # The rate window is the 5 min one unless a channel's rules or a restore say otherwise.
        rate = windows["5m"] if lo == boundary - WINDOWS["5m"] else _window(ch.total(lo, boundary))
        one = windows["1m"]
        method = max(ch.method_attempts, key=ch.method_attempts.__getitem__, default=None)
        obs = Observation(
            at=boundary / 1000,
            attempts=rate.attempts,
            provider_errors=rate.provider_errors,
            consecutive_failures=self._consecutive(ch, boundary),
            attempts_1m=one.attempts,
            provider_errors_1m=one.provider_errors,
            latency_p95_1m_ms=one.latency_p95_ms,
            latency_samples_1m=one.samples,
            latency_p95_ms=rate.latency_p95_ms,
            latency_samples=rate.samples,
        )
        return _Eval(channel, method, windows, obs, windows["5m"].samples)

    def _machine(self, channel: str, boundary: int) -> MachineState:
        data = self.machines.get(channel)
        if data is None:
            return MachineState(since=boundary / 1000)
        return MachineState.from_dict(dict(data))

    def _evaluate(self, boundary: int) -> list[Out]:
        out: list[Out] = []
        at = _dt(boundary)
        evals: list[tuple[_Eval, MachineState]] = []
        for channel, ch in self.channels.items():
            st = self._machine(channel, boundary)
            if ch.first_bucket < 0 or ch.first_bucket >= boundary:
                continue  # nothing of this channel is closed yet
            if ch.heard < boundary - SOURCE_IDLE_MS:
                # Nothing heard of it for 2 minutes: it has no traffic, or a rebalance gave it to
                # another worker. Either way there is no new evidence, and judging it here could
                # contradict its new owner.
                continue
            evals.append((self._measure(channel, ch, boundary, st), st))
            self._prune(ch, boundary)
        by_channel = {e.channel: e for e, _ in evals}
        at_text = iso_utc(at)
        for ev, st in evals:
            th = self.rules.for_channel(ev.channel)
            new, tr = step(st, ev.obs, th)
            self.machines[ev.channel] = _machine_dict(new)
            if tr is not None:
                out.append(self._signal(ev, tr, by_channel))
            out.extend(self._channel_alerts(ev, new, at))
            windows = {name: w.json for name, w in ev.windows.items()}
            snapshot = _snapshot(ev, new.state, new.since, at_text, windows)
            health = Out(self.topics.health, ev.channel, snapshot)
            out.append(health)
            self.snapshots[ev.channel] = health.value
            self._export(ev, new)
        out.extend(self._deadletter_alert(boundary, at))
        return out

    def _prune(self, ch: _Channel, boundary: int) -> None:
        # Runs older than the hour are never read again. An active channel has a run in about
        # every bucket, so they are dropped in bulk (past 1.5 hours' worth), not on every boundary.
        oldest = boundary - WINDOWS["1h"]
        if len(ch.runs) > RING + RING // 2:
            for bucket in [b for b in ch.runs if b < oldest]:
                del ch.runs[bucket]

    def alternatives(self, ev: _Eval, by_channel: dict[str, _Eval]) -> list[str]:
        """Healthy channels of the same method, best first: those this worker judges, ranked by
        health, then those other workers judge (known from gateway.failover), by name."""
        ranked = []
        for other in by_channel.values():
            if other.channel == ev.channel or other.method != ev.method:
                continue
            data = self.machines.get(other.channel)
            if data is not None and data["state"] != ChannelState.HEALTHY.value:
                continue
            w = other.windows["5m"]
            if w.attempts == 0:
                continue
            p95 = w.latency_p95_ms if w.latency_p95_ms is not None else math.inf
            ranked.append((w.provider_error_rate, p95, -w.attempts, other.channel))
        elsewhere = sorted(
            name
            for name, signal in self.known.items()
            if name not in by_channel
            and name != ev.channel
            and signal.get("method") == ev.method
            and signal.get("state") == ChannelState.HEALTHY.value
        )
        return [name for *_, name in sorted(ranked)] + elsewhere

    def resume(self, signal: dict[str, Any]) -> None:
        """Learn a channel's latest gateway.failover signal (every worker reads them all). A
        channel this worker has not judged yet (after a restart or a rebalance) carries on from
        that state; it also ranks among the alternatives of channels this worker judges."""
        channel = str(signal["channel"])
        at = datetime.fromisoformat(str(signal["at"]))
        current = self.known.get(channel)
        if current is not None and current["at"] > at:
            return  # an older signal (the topic is read from the beginning)
        if current is None and len(self.known) >= 5 * self.rules.max_channels:
            return
        self.known[channel] = {"state": signal["state"], "method": signal.get("method"), "at": at}
        data = self.machines.get(channel)
        if data is not None and data.get("transitions", 0) > 0:
            return  # this worker's own judgement is newer than any signal it did not send
        since = datetime.fromisoformat(str(signal.get("since") or signal["at"]))
        th = self.rules.for_channel(channel)
        st = resumed(str(signal["state"]), at.timestamp(), since.timestamp(), th)
        self.machines[channel] = st.to_dict()

    def _signal(self, ev: _Eval, tr: Transition, by_channel: dict[str, _Eval]) -> Out:
        signal = FailoverSignal(
            channel=ev.channel,
            method=ev.method,
            action=tr.action,
            state=tr.state,
            reason=tr.reason,
            figures=tr.figures,
            alternatives=self.alternatives(ev, by_channel),
            probe_ratio=tr.probe_ratio,
            at=_dt(tr.at * 1000),
            since=_dt(tr.since * 1000),
            rules_version=self.rules.version,
        )
        label = self.rules.metric_channel(ev.channel)
        metrics.child(metrics.FAILOVER_TRANSITIONS, label, tr.action.value).inc()
        out = Out.of(self.topics.failover, ev.channel, signal)
        self.last_signal[ev.channel] = out.value
        return out

    # -- alerts ------------------------------------------------------------------------------------

    def _hysteresis(self, fingerprint: str, value: float, threshold: float, enough: bool) -> bool:
        if fingerprint in self.alerts.state:
            return value > threshold * self.rules.alerts.resolve_ratio
        return enough and value > threshold

    def _channel_alerts(self, ev: _Eval, st: MachineState, at: datetime) -> list[Out]:
        # AlertTracker.update sends only when a condition starts or stops firing; most boundaries
        # change nothing, so the call (and its summary text) is made only when one does.
        a = self.rules.alerts
        th = self.rules.for_channel(ev.channel)
        firing_now = self.alerts.state
        labels = {"channel": ev.channel}
        w = ev.windows["5m"]
        out: list[Out] = []
        fingerprint = f"api_error_rate_high/{ev.channel}"
        firing = self._hysteresis(
            fingerprint, w.provider_error_rate, a.api_error_rate, w.attempts >= a.min_attempts
        )
        if firing != (fingerprint in firing_now):
            out += self.alerts.update(
                "api_error_rate_high",
                labels,
                firing,
                at=at,
                value=w.provider_error_rate,
                threshold=a.api_error_rate,
                severity=Severity.CRITICAL,
                summary=f"{ev.channel}: provider error rate {w.provider_error_rate:.1%} over "
                f"5 min ({w.provider_errors}/{w.attempts})",
            )
        p95 = w.latency_p95_ms
        samples = ev.samples_5m
        fingerprint = f"latency_high/{ev.channel}"
        firing = p95 is not None and self._hysteresis(
            fingerprint, p95, a.latency_p95_ms, samples >= th.min_latency_samples
        )
        if firing != (fingerprint in firing_now):
            out += self.alerts.update(
                "latency_high",
                labels,
                firing,
                at=at,
                value=p95,
                threshold=a.latency_p95_ms,
                severity=Severity.WARNING,
                summary=f"{ev.channel}: p95 latency {p95 or 0:.0f} ms over 5 min",
            )
        firing = st.state in (ChannelState.FAILED_OVER.value, ChannelState.PROBING.value)
        if firing != (f"channel_failed_over/{ev.channel}" in firing_now):
            out += self.alerts.update(
                "channel_failed_over",
                labels,
                firing,
                at=at,
                value=float(ev.obs.consecutive_failures),
                severity=Severity.CRITICAL,
                summary=f"{ev.channel} is {st.state}: routers send it only probe traffic",
            )
        return out

    def _deadletter_alert(self, boundary: int, at: datetime) -> list[Out]:
        a = self.rules.alerts
        row = self.records.total(boundary - WINDOWS["5m"], boundary)
        records, dead = int(row[0]), int(row[1])
        if records == 0 and "deadletter_rate_high/payments.transactions" not in self.alerts.state:
            return []
        ratio = dead / records if records else 0.0
        metrics.DEADLETTER_RATIO.set(ratio)
        return self.alerts.update(
            "deadletter_rate_high",
            {"topic": self.topics.transactions},
            self._hysteresis(
                f"deadletter_rate_high/{self.topics.transactions}",
                ratio,
                a.deadletter_rate,
                records >= a.deadletter_min_records,
            ),
            at=at,
            value=round(ratio, 6),
            threshold=a.deadletter_rate,
            severity=Severity.WARNING,
            summary=f"{dead} of {records} transactions dead-lettered over 5 min",
        )

    # -- metrics and views -------------------------------------------------------------------------

    def _export(self, ev: _Eval, st: MachineState) -> None:
        c = ev.channel
        gauges = self._gauges.get(c)
        if gauges is None:
            if self.rules.metric_channel(c) != c:
                return  # an unknown channel: no gauges of its own (see rules/health.yaml)
            gauges = self._gauges[c] = _ChannelGauges(c)
        for name, w in ev.windows.items():
            error, decline, attempts, p50, p95, p99 = gauges.window(name)
            values = w.json
            error.set(values["provider_error_rate"])
            decline.set(values["decline_rate"])
            attempts.set(values["attempts"])
            for gauge, v in (
                (p50, values["latency_p50_ms"]),
                (p95, values["latency_p95_ms"]),
                (p99, values["latency_p99_ms"]),
            ):
                if v is not None:
                    gauge.set(v / 1000)
        gauges.consecutive.set(ev.obs.consecutive_failures)
        for value, gauge in gauges.states:
            gauge.set(1 if value == st.state else 0)

    def release_metrics(self) -> None:
        """This shard's partition went to another worker: its channels' gauges and firing
        alerts leave this worker's metrics (the new owner exports them)."""
        for gauges in self._gauges.values():
            gauges.forget()
        self._gauges.clear()
        self.alerts.release()

    def channel_view(self, channel: str) -> dict[str, Any] | None:
        """The latest snapshot, state and signal of one channel (this worker's), or None."""
        channel = channel.strip().upper()
        snapshot = self.snapshots.get(channel)
        if snapshot is None:
            return None
        data = self.machines.get(channel) or {}
        view = dict(snapshot)
        view["rules_version"] = self.rules.version
        view["thresholds"] = self.rules.for_channel(channel).model_dump()
        view["last_signal"] = self.last_signal.get(channel)
        view["probe_ratio"] = (
            self.rules.for_channel(channel).probe_ratio
            if data.get("state") in (ChannelState.FAILED_OVER.value, ChannelState.PROBING.value)
            else 0.0
        )
        view["alerts"] = [
            a for a in self.alerts.firing() if a.get("labels", {}).get("channel") == channel
        ]
        return view

    def channels_view(self) -> dict[str, Any]:
        """Every channel this worker owns: its latest snapshot and state."""
        return {
            "at": iso_utc(self.clock.latest) if self.clock.started else None,
            "watermark": iso_utc(self.clock.watermark) if self.clock.started else None,
            "rules_version": self.rules.version,
            "channels": {
                name: {
                    "state": snap["state"],
                    "since": snap["since"],
                    "method": snap["method"],
                    "consecutive_provider_failures": snap["consecutive_provider_failures"],
                    "windows": snap["windows"],
                    "at": snap["at"],
                }
                for name, snap in sorted(self.snapshots.items())
            },
        }


class DeltaGroup:
    """Feeds a shard its partition's deltas one observer batch at a time (consecutive deltas with
    the same `source` and `progress`), judging after each, and holds the latest batch back until
    a delta of another one arrives. What a shard sends then depends on its partition's deltas
    alone, not on how a consumer happened to fetch them: a shard rebuilt by another worker from
    the same deltas re-sends exactly what the previous owner sent. (A delta comes only with
    traffic, and without traffic the watermark does not move either: holding the latest batch
    back delays no judgement; the views show it one batch late.)"""

    __slots__ = ("key", "records", "upto")

    def __init__(self) -> None:
        self.key: tuple[Any, Any] | None = None
        self.records: list[Record] = []
        self.upto = -1  # the highest offset taken (a redelivered delta is skipped)

    def feed(self, shard: HealthStage, records: Sequence[Record]) -> list[Out]:
        out: list[Out] = []
        for record in records:
            if record.offset is not None:
                if record.offset <= self.upto:
                    continue
                self.upto = record.offset
            key = _batch_of(record.value)
            if self.records and key != self.key:
                out.extend(self.flush(shard))
            self.key = key
            self.records.append(record)
        return out

    def flush(self, shard: HealthStage) -> list[Out]:
        """Judge the deltas held back (end of a replay)."""
        if not self.records:
            return []
        records, self.records = self.records, []
        return shard.process(records)


def _batch_of(value: bytes) -> tuple[Any, Any]:
    """The observer batch a delta belongs to: its (source, progress)."""
    try:
        delta = orjson.loads(value)
    except orjson.JSONDecodeError:
        return (None, None)
    if not isinstance(delta, dict):
        return (None, None)
    return (delta.get("source"), delta.get("progress"))


class HealthShards(Stage):
    """The health stage live: one HealthStage per partition of pantau.health-deltas.

    A worker judges the channels of the deltas partitions it owns. Keeping each partition's state
    apart lets a worker hand a partition over (its shard is dropped) and take one over: the new
    shard is rebuilt by reading the partition's deltas from the beginning up to where the group
    resumes it (streams/app.py), so it holds what the previous owner held, counted once. Replay
    has no partitions: one shard holds everything, as a HealthStage would."""

    name = "health"

    def __init__(self, make: Callable[[], HealthStage]) -> None:
        self.make = make
        self.shards: dict[int | None, HealthStage] = {}
        self.groups: dict[int | None, DeltaGroup] = {}  # per shard: the deltas held back
        self.signals: dict[str, dict[str, Any]] = {}  # the latest gateway.failover per channel
        first = make()
        self.topics = first.topics
        self.rules = first.rules

    @property
    def consumes(self) -> tuple[str, ...]:
        return (self.topics.health_deltas,)

    def fresh(self, resume: bool = True) -> HealthStage:
        """A new shard that knows every failover signal seen so far (`resume=False`: none, for a
        shard about to be rebuilt from its partition's whole history)."""
        shard = self.make()
        if resume:
            for signal in self.signals.values():
                shard.resume(signal)
        return shard

    def install(self, partition: int | None, shard: HealthStage, group: DeltaGroup) -> None:
        """Make a (rebuilt) shard the one of a partition, with the deltas it holds back."""
        self.shards[partition] = shard
        self.groups[partition] = group

    def shard(self, partition: int | None) -> HealthStage:
        """The shard of a partition, a fresh one if absent."""
        shard = self.shards.get(partition)
        if shard is None:
            shard = self.shards[partition] = self.fresh()
        return shard

    def drop(self, partition: int | None) -> bool:
        """Forget a partition another worker now owns, its metrics included; False if it had
        no shard."""
        self.groups.pop(partition, None)
        shard = self.shards.pop(partition, None)
        if shard is None:
            return False
        shard.release_metrics()
        return True

    def process(self, records: Sequence[Record]) -> list[Out]:
        out: list[Out] = []
        for partition, part in by_partition(records).items():
            shard = self.shard(partition)
            group = self.groups.get(partition)
            if group is None:
                group = self.groups[partition] = DeltaGroup()
            out.extend(group.feed(shard, part))
        return out

    def tick(self) -> list[Out]:
        out: list[Out] = []
        for shard in list(self.shards.values()):
            out.extend(shard.tick())
        return out

    def close(self) -> list[Out]:
        out: list[Out] = []
        for partition, shard in list(self.shards.items()):
            group = self.groups.get(partition)
            if group is not None:
                out.extend(group.flush(shard))
            out.extend(shard.close())
        return out

    def resume(self, signal: dict[str, Any]) -> None:
        """A gateway.failover signal: every shard learns it (see HealthStage.resume)."""
        channel = str(signal["channel"])
        current = self.signals.get(channel)
        at = datetime.fromisoformat(str(signal["at"]))
        if (current is None and len(self.signals) < 5 * self.rules.max_channels) or (
            current is not None and datetime.fromisoformat(str(current["at"])) <= at
        ):
            self.signals[channel] = signal
        for shard in self.shards.values():
            shard.resume(signal)

    @property
    def clock(self) -> EventClock:
        """The most advanced shard's clock (what the pipeline's lag gauge reads)."""
        clocks = [s.clock for s in self.shards.values() if s.clock.started]
        return max(clocks, key=lambda c: c.latest) if clocks else EventClock()

    def channel_view(self, channel: str) -> dict[str, Any] | None:
        for shard in self.shards.values():
            view = shard.channel_view(channel)
            if view is not None:
                return view
        return None

    def channels_view(self) -> dict[str, Any]:
        views = [s.channels_view() for s in self.shards.values()]
        if not views:
            return {"at": None, "watermark": None, "rules_version": None, "channels": {}}
        started = [v for v in views if v["at"] is not None]
        channels: dict[str, Any] = {}
        for v in views:
            channels.update(v["channels"])
        return {
            "at": max((v["at"] for v in started), default=None),
            "watermark": min((v["watermark"] for v in started), default=None),
            "rules_version": views[0]["rules_version"],
            "channels": dict(sorted(channels.items())),
        }


ALERT_NAMES = ("api_error_rate_high", "latency_high", "channel_failed_over", "deadletter_rate_high")


class FailoverStateStage(Stage):
    """Every worker reads gateway.failover from the beginning (a broadcast stage) and hands each
    signal to its health stage: a channel whose owner restarted or moved carries on from its last
    state instead of starting healthy (which would leave routers with a failover never restored),
    and alternatives include the channels other workers judge. Replay never feeds it: there the
    one health stage has judged every channel itself."""

    name = "health-state"
    broadcast = True

    def __init__(self, topics: Topics, health: HealthStage | HealthShards) -> None:
        self.topics = topics
        self.health: HealthStage | HealthShards = health

    @property
    def consumes(self) -> tuple[str, ...]:
        return (self.topics.failover,)

    def process(self, records: Sequence[Record]) -> list[Out]:
        for record in records:
            if not record.value:
                continue  # a tombstone
            try:
                self.health.resume(orjson.loads(record.value))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                log.warning("health: unusable gateway.failover message: %r", exc)
        return []
