"""Settlement and callback alerts judged once for all workers, from samples merged per alert."""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from models.outputs import alert_fingerprint
from streams import metrics
from streams.alerts import AlertTracker
from streams.core import EventClock, Out, Record, Stage, by_partition
from streams.durable import PartitionedMaps
from streams.topics import Topics

if TYPE_CHECKING:
    from streams.settlement import SettlementAlerts

# How often (the sender's event time) a sender tells every samples partition how far it has read:
# windows slide, and alerts resolve, even where no sample comes.
PROGRESS_EVERY_S = 30.0
EVALUATE_EVERY_S = 10.0  # how often (event time) a shard re-judges every alert it holds
SAMPLE_BUCKET_S = 10  # a sender keeps its samples in buckets of this much event time
DELAY = "settlement_delay_high"
MISSING = "callbacks_missing"
SIGNATURES = "callback_signature_failures"
ALERT_NAMES = (DELAY, MISSING, SIGNATURES)

# A sample: [event time (epoch s), value (a delay in seconds, or 1), id (what it counts, once)].
Sample = list[Any]


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


# ---- the senders' side -------------------------------------------------------------------------


class SampleLog:
    """One alert's samples as a sending stage keeps them, for the alert's window, in a mapping
    the stage journals: per source partition and SAMPLE_BUCKET_S of event time
    (`<partition>/<subject>@<bucket>` live, `<subject>@<bucket>` in a replay), so a batch
    rewrites only the buckets it added to, not an hour of samples. What is added is sent
    (`drain`); what a partition holds is sent again when a worker takes it over (`resend`), so a
    sample logged but never delivered before a crash still arrives. The judge counts each id
    once, so sending again changes nothing."""

    def __init__(
        self,
        alert: str,
        state: MutableMapping[str, Any],
        window_s: float,
        labels_of: Callable[[str], dict[str, str]],
    ) -> None:
        self.alert = alert
        self.state = state
        self.window_s = window_s
        self.labels_of = labels_of  # subject → the alert's labels
        self.pending: dict[str, list[Sample]] = {}  # subject → samples not yet drained
        self.durable: PartitionedMaps | None = None  # live: who owns each key (journal_state)
        # bucket → its keys, and the buckets in a heap: expiry visits only what it drops or cuts
        self._keys: dict[int, set[str]] = {}
        self._buckets: list[int] = []
        self.reindex()

    def reindex(self) -> None:
        """Rebuild the bucket index from the state (after it was loaded or keys were dropped)."""
        self._keys = {}
        for key in self.state:
            self._keys.setdefault(_bucket_of(key), set()).add(key)
        self._buckets = list(self._keys)
        heapq.heapify(self._buckets)

    def add(self, partition: int | None, subject: str, sample: Sample) -> None:
        """Keep a sample of a subject from a source partition and queue it for sending."""
        bucket = int(float(sample[0]) // SAMPLE_BUCKET_S)
        key = f"{scoped(partition, subject)}@{bucket}"
        if self.durable is not None and partition is not None:
            self.durable.own(key, partition)
        samples = self.state.get(key)
        if samples is None:
            samples = []
            keys = self._keys.get(bucket)
            if keys is None:
                keys = self._keys[bucket] = set()
                heapq.heappush(self._buckets, bucket)
            keys.add(key)
        if samples and samples[-1][0] > sample[0]:
            bisect.insort(samples, sample, key=lambda s: float(s[0]))
        else:
            samples.append(sample)
        self.state[key] = samples  # reassigned: a journaled mapping sees the change
        self.pending.setdefault(subject, []).append(sample)

    def resend(self, partition: int | None) -> None:
        """Queue every sample a partition holds (its state was just taken over; None: all)."""
        prefix = "" if partition is None else f"{partition}/"
        for key, samples in self.state.items():
            if key.startswith(prefix) and samples:
                self.pending.setdefault(subject_of(key), []).extend(samples)

    def expire(self, now: float) -> None:
        """Drop samples that left the window: whole buckets, and the edge bucket's oldest."""
        start = now - self.window_s
        while self._buckets and self._buckets[0] * SAMPLE_BUCKET_S <= start:
            bucket = self._buckets[0]
            keys = self._keys.get(bucket, set())
            if (bucket + 1) * SAMPLE_BUCKET_S > start:  # the edge: cut, keep the rest
                for key in list(keys):
                    samples = self.state.get(key)
                    if samples is None:
                        keys.discard(key)  # dropped with its partition
                        continue
                    cut = bisect.bisect_right(samples, start, key=lambda s: float(s[0]))
                    if cut == len(samples):
                        del self.state[key]
                        keys.discard(key)
                    elif cut:
                        self.state[key] = samples[cut:]
                if keys:
                    return
            heapq.heappop(self._buckets)
            self._keys.pop(bucket, None)
            for key in keys:
                self.state.pop(key, None)

    def of(self, subject: str) -> list[Sample]:
        """A subject's samples over every partition and bucket, in time order."""
        found = [s for key, held in self.state.items() if subject_of(key) == subject for s in held]
        return sorted(found, key=lambda s: float(s[0]))

    def drain(self, topic: str, progress: float) -> list[Out]:
        """One message per subject with what was queued, in the order subjects were first
        queued; `progress` is the sender's event time."""
        out = [
            sample_message(topic, self.alert, self.labels_of(subject), samples, progress)
            for subject, samples in self.pending.items()
        ]
        self.pending.clear()
        return out


def _bucket_of(key: str) -> int:
    return int(key.rpartition("@")[2])


def subject_of(key: str) -> str:
    """The subject a SampleLog key is about (without its partition and bucket)."""
    return unscoped(key.rpartition("@")[0])


def scoped(partition: int | None, key: str) -> str:
    """A key kept per source partition live (`<partition>/<key>`); the key itself where there
    are no partitions (a replay)."""
    return key if partition is None else f"{partition}/{key}"


def unscoped(key: str) -> str:
    """The key a `scoped` key is about."""
    head, sep, rest = key.partition("/")
    return rest if sep and head.isdigit() else key


def sample_message(
    topic: str, alert: str, labels: dict[str, str], samples: Sequence[Sample], progress: float
) -> Out:
    """Samples of one alert subject, keyed by its fingerprint (one partition judges it)."""
    fingerprint = alert_fingerprint(alert, labels)
    value = {"alert": alert, "labels": labels, "progress": progress, "samples": list(samples)}
    return Out(topic, fingerprint, value)


def progress_messages(topic: str, partitions: int, progress: float) -> list[Out]:
    """How far a sender has read, to every partition of the samples topic."""
    return [Out(topic, None, {"progress": progress}, partition=p) for p in range(partitions)]


class ProgressBeat:
    """When a sender next tells the judges its progress (every PROGRESS_EVERY_S event time)."""

    def __init__(self, topic: str, partitions: int) -> None:
        self.topic = topic
        self.partitions = partitions
        self.next = float("-inf")

    def send(self, now: float, *logs: SampleLog) -> list[Out]:
        """What a sender sends at `now` (its event time): each log's queued samples, in order,
        then the beat when due."""
        return [*(m for log in logs for m in log.drain(self.topic, now)), *self.due(now)]

    def due(self, now: float) -> list[Out]:
        if now < self.next:
            return []
        self.next = now + PROGRESS_EVERY_S
        return progress_messages(self.topic, self.partitions, now)


# ---- the judge ---------------------------------------------------------------------------------


@dataclass
class _Subject:
    """One alert's samples within its window: by time (to expire) and by value (quantiles)."""

    alert: str
    labels: dict[str, str]
    by_time: list[tuple[float, str, float]] = field(default_factory=list)  # heap
    values: list[float] = field(default_factory=list)  # sorted
    ids: set[str] = field(default_factory=set)

    def add(self, at: float, value: float, ident: str) -> bool:
        if ident in self.ids:
            return False
        self.ids.add(ident)
        heapq.heappush(self.by_time, (at, ident, value))
        bisect.insort(self.values, value)
        return True

    def expire(self, start: float) -> None:
        while self.by_time and self.by_time[0][0] <= start:
            _, ident, value = heapq.heappop(self.by_time)
            self.ids.discard(ident)
            del self.values[bisect.bisect_left(self.values, value)]


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile of values by the nearest-rank method (values need not be sorted)."""
    return sorted_quantile(sorted(values), q)


def sorted_quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values by the nearest-rank method."""
    if not ordered:
        raise ValueError("no values")
    rank = max(1, -(-int(q * 1000) * len(ordered) // 1000))  # ceil(q * n) without floats drifting
    return ordered[min(rank, len(ordered)) - 1]


class WindowedAlerts(Stage):
    """pantau.alert-samples → ops.alerts: `settlement_delay_high`, `callbacks_missing` and
    `callback_signature_failures`, each judged over the samples of every worker.

    The settlement and callbacks stages see the partitions their worker holds; alone, each
    would need N times a threshold to fire with N workers. They send their samples here instead,
    keyed by the alert's fingerprint, and one place judges each alert. Each sample counts once
    (by id), so a sender's redelivery or re-send changes nothing. What this stage sends is a
    function of its input in order (never of the wall clock, nor of how a consumer batched it):
    every EVALUATE_EVERY_S of event time, each alert is judged when a message from later than
    the last arrives (so whatever a sender sent for one moment is in), and a signature-failure
    burst as soon as its samples come. (A window's p95 moves with every batch of settlements;
    judged on each message, it would flap.) Live, one shard per partition, rebuilt from the
    partition's messages by whoever takes it over, re-sends exactly what its predecessor sent
    (see WindowedAlertShards)."""

    name = "alert-windows"

    def __init__(
        self,
        topics: Topics,
        rules: SettlementAlerts,
        *,
        lateness: timedelta = timedelta(seconds=30),
        max_subjects: int = 10_000,
    ) -> None:
        self.topics = topics
        self.rules = rules
        self.clock = EventClock(lateness=lateness)
        self.alerts = AlertTracker(topics.alerts, names=ALERT_NAMES)
        self.subjects: dict[str, _Subject] = {}
        self.max_subjects = max_subjects
        self._next_evaluation = float("-inf")

    @property
    def consumes(self) -> tuple[str, ...]:
        return (self.topics.alert_samples,)

    def process(self, records: Sequence[Record]) -> list[Out]:
        out: list[Out] = []
        for record in records:
            try:
                value = orjson.loads(record.value)
                progress = float(value["progress"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # an internal topic only our own stages write
            if self.clock.started and _at(progress) > self.clock.latest:
                out.extend(self._due())  # what came up to now is complete: judge it
            self.clock.observe(_at(progress))
            subject = self._take(value) if "alert" in value else None
            if subject is not None and self.subjects[subject].alert == SIGNATURES:
                out.extend(self._judge(subject))  # a burst of forgeries: at once
        return out

    def close(self) -> list[Out]:
        """End of a replay: judge what came last."""
        if not self.clock.started:
            return []
        self._next_evaluation = self.clock.latest.timestamp() + EVALUATE_EVERY_S
        return self._judge_all()

    def _due(self) -> list[Out]:
        now = self.clock.latest.timestamp()
        if now < self._next_evaluation:
            return []
        self._next_evaluation = now + EVALUATE_EVERY_S
        return self._judge_all()

    def _take(self, value: dict[str, Any]) -> str | None:
        alert = str(value["alert"])
        if alert not in ALERT_NAMES:
            return None
        labels = {str(k): str(v) for k, v in dict(value.get("labels") or {}).items()}
        fingerprint = alert_fingerprint(alert, labels)
        subject = self.subjects.get(fingerprint)
        if subject is None:
            if len(self.subjects) >= self.max_subjects:
                return None
            subject = self.subjects[fingerprint] = _Subject(alert, labels)
        start = self._window_start(alert)
        for sample in value.get("samples") or []:
            at, amount, ident = float(sample[0]), float(sample[1]), str(sample[2])
            if at > start:
                subject.add(at, amount, ident)
        return fingerprint

    def _window_start(self, alert: str) -> float:
        if alert == SIGNATURES:  # a burst: counted up to the latest callback
            return self.clock.latest.timestamp() - self.rules.callback_signature_failures.window_s
        now = self.clock.watermark.timestamp()
        if alert == DELAY:
            return now - self.rules.settlement_delay_high.window_s
        return now - self.rules.callbacks_missing.window_s

    def _judge_all(self) -> list[Out]:
        out: list[Out] = []
        for fingerprint in sorted(self.subjects):
            out.extend(self._judge(fingerprint))
        return out

    def _judge(self, fingerprint: str) -> list[Out]:
        subject = self.subjects[fingerprint]
        subject.expire(self._window_start(subject.alert))
        out = self._delay(subject) if subject.alert == DELAY else self._count(subject)
        if not subject.ids and fingerprint not in self.alerts.state:
            del self.subjects[fingerprint]  # nothing in its window and nothing firing
        return out

    def _delay(self, subject: _Subject) -> list[Out]:
        rule = self.rules.settlement_delay_high
        at = self.clock.latest
        values = subject.values
        if not values:
            # Nothing settled in the window: nothing slow to report any more.
            return self.alerts.update(DELAY, subject.labels, False, at=at)
        channel, method = subject.labels["channel"], subject.labels["method"]
        p95 = sorted_quantile(values, 0.95)
        metrics.child(metrics.SETTLEMENT_DELAY_QUANTILE, channel, method, "0.95").set(p95)
        metrics.child(metrics.SETTLEMENT_DELAY_QUANTILE, channel, method, "0.5").set(
            sorted_quantile(values, 0.5)
        )
        if len(values) < rule.min_samples:
            return []
        return self.alerts.update(
            DELAY,
            subject.labels,
            p95 > rule.p95_s,
            at=at,
            value=p95,
            threshold=rule.p95_s,
            severity=rule.severity,
            summary=f"settlement delay p95 {p95 / 3600:.1f} h over {len(values)} "
            f"settlements of {channel} {method}",
        )

    def _count(self, subject: _Subject) -> list[Out]:
        count = len(subject.ids)
        if subject.alert == MISSING:
            miss = self.rules.callbacks_missing
            channel = subject.labels["channel"]
            return self.alerts.update(
                MISSING,
                subject.labels,
                count > miss.threshold,
                at=self.clock.latest,
                value=float(count),
                threshold=float(miss.threshold),
                severity=miss.severity,
                summary=f"{count} {channel} transactions without a final callback past "
                f"their deadline in the last {int(miss.window_s)} s",
            )
        rule = self.rules.callback_signature_failures
        provider = subject.labels["provider"]
        return self.alerts.update(
            SIGNATURES,
            subject.labels,
            count >= rule.threshold > 0 or (rule.threshold == 0 and count > 0),
            at=self.clock.latest,
            value=float(count),
            threshold=float(rule.threshold),
            severity=rule.severity,
            summary=f"{count} untrusted {provider} callbacks in the last {int(rule.window_s)} s",
        )

    def firing(self) -> list[dict[str, Any]]:
        """The alerts firing now (their firing messages)."""
        return self.alerts.firing()


class WindowedAlertShards(Stage):
    """The judge live: one WindowedAlerts per partition of pantau.alert-samples this worker holds.

    A partition taken over gets a new shard fed the partition's messages from the beginning up
    to where the group resumes it, outputs discarded (AlertWindowsRebuilder in
    streams/statelog.py): it then holds what its predecessor held. A replay keeps one shard
    (partition None)."""

    def __init__(self, make: Callable[[], WindowedAlerts]) -> None:
        self.make = make
        self.shards: dict[int | None, WindowedAlerts] = {}
        first = make()
        self.name = first.name
        self.topics = first.topics

    @property
    def consumes(self) -> tuple[str, ...]:
        return (self.topics.alert_samples,)

    def fresh(self) -> WindowedAlerts:
        return self.make()

    def install(self, partition: int | None, shard: WindowedAlerts) -> None:
        self.shards[partition] = shard

    def drop(self, partition: int | None) -> bool:
        """Forget a partition another worker now owns (its firing alerts and delay quantiles
        leave this worker's metrics: the new owner exports them); False if it had no shard."""
        shard = self.shards.pop(partition, None)
        if shard is None:
            return False
        shard.alerts.release()
        for subject in shard.subjects.values():
            if subject.alert == DELAY:
                for q in ("0.5", "0.95"):
                    metrics.forget(
                        metrics.SETTLEMENT_DELAY_QUANTILE,
                        subject.labels["channel"],
                        subject.labels["method"],
                        q,
                    )
        return True

    def process(self, records: Sequence[Record]) -> list[Out]:
        out: list[Out] = []
        for partition, part in by_partition(records).items():
            shard = self.shards.get(partition)
            if shard is None:
                shard = self.shards[partition] = self.make()
            out.extend(shard.process(part))
        return out

    @property
    def clock(self) -> EventClock:
        """The most advanced shard's clock (what the pipeline's lag gauge reads)."""
        clocks = [s.clock for s in self.shards.values() if s.clock.started]
        return max(clocks, key=lambda c: c.latest) if clocks else EventClock()

    def firing(self) -> list[dict[str, Any]]:
        return [a for s in self.shards.values() for a in s.firing()]
