"""bench.live: Faust workers on the embedded broker: no-op ceiling, Pantau, two workers, latency.

Every phase reads its own copy of the same pre-loaded transactions (its own topics and consumer
group), so the ratios compare like with like in one run. Workers run as subprocesses
(`python -m bench.live --worker noop|pantau`) and report progress after each micro-batch.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import Report

TARGET_EVENTS_S = 12_000.0
TARGET_CEILING_RATIO = 0.8
TARGET_TWO_WORKERS = 1.7
TARGET_P99_S = 0.100
PROGRESS = "PANTAU-BENCH"


# ---- the worker side (a subprocess) --------------------------------------------------------------


def _report(count: int) -> None:
    sys.stdout.write(f"{PROGRESS} {time.time():.6f} {count}\n")
    sys.stdout.flush()


def serve_noop() -> None:
    """A Faust worker whose agent takes the same micro-batches as Pantau's and only counts."""
    from streams.app import faust_config, fetch_wait_ms
    from streams.settings import Settings
    from streams.transport import PantauApp
    from streams.worker import QuietWorker, quiet_faust_logging

    settings = Settings()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # The same Faust app and consumer settings as Pantau's worker: only the agent differs.
    app = PantauApp(
        settings.app_id, fetch_wait_ms=fetch_wait_ms(settings), **faust_config(settings)
    )
    topic = app.topic(
        settings.topics.transactions,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    counted = [0]

    async def count(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            counted[0] += len(events)
            _report(counted[0])

    app.agent(topic, name="bench-noop")(count)
    quiet_faust_logging()
    worker = QuietWorker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False, loop=loop)
    worker.spinner = None
    worker.execute_from_commandline()


def serve_pantau() -> None:
    """The full Pantau worker (`pantau worker` without /metrics), reporting the payments stage's
    progress after each micro-batch."""
    from streams.settings import Settings
    from streams.worker import make_worker, quiet_faust_logging

    quiet_faust_logging()
    worker, runtime = make_worker(Settings())
    from streams.gctune import tune_gc

    tune_gc()  # as `pantau worker` does
    runner = runtime.runners["payments"]
    handle = runner.handle

    async def counted(records: Sequence[Any], *args: Any) -> None:
        await handle(records, *args)
        _report(runner.processed)

    runner.handle = counted  # type: ignore[method-assign,unused-ignore]
    worker.execute_from_commandline()


# ---- the driver side ----------------------------------------------------------------------


def transaction_values(count: int, seed: int = 11) -> list[tuple[bytes, bytes]]:
    """(key, value) of `count` simulated transactions (no callbacks), as the gateway sends them."""
    import orjson

    from streams.simulator import generate
    from streams.topics import Topics

    topic = Topics().transactions
    out: list[tuple[bytes, bytes]] = []
    hours = max(0.1, count / 25.0 / 3600)
    while len(out) < count:
        for event in generate(
            duration=timedelta(hours=hours), tx_per_second=25.0, seed=seed, diurnal=False
        ):
            if event.topic == topic:
                out.append(((event.key or "").encode(), orjson.dumps(event.value)))
                if len(out) >= count:
                    break
        seed += 1
    return out


@dataclass
class Phase:
    """One phase's own topic names, app id and worker environment."""

    name: str
    broker_url: str
    tmp: Path
    settings: Any = None
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from streams.settings import Settings
        from streams.topics import Topics

        run = f"{self.name}{uuid.uuid4().hex[:6]}"
        names = {name: f"b{run}.{default}" for name, default in Topics().model_dump().items()}
        self.settings = Settings(
            broker=self.broker_url,
            app_id=f"bench-{run}",
            topics=Topics(**names),
            embedded=True,
            web_port=0,
            metrics_port=0,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PANTAU_")}
        env.update(
            PANTAU_BROKER=self.broker_url,
            PANTAU_APP_ID=self.settings.app_id,
            PANTAU_EMBEDDED="1",
            PANTAU_WEB_PORT="0",
            PANTAU_METRICS_PORT="0",
            PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            TMPDIR=str(self.tmp),
        )
        for name, topic in names.items():
            env[f"PANTAU_TOPICS__{name.upper()}"] = topic
        self.env = env


class WorkerProcess:
    """A bench worker subprocess whose progress lines are read by a thread."""

    def __init__(self, kind: str, phase: Phase, log: Path) -> None:
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.live", "--worker", kind],
            env=phase.env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=Path(__file__).resolve().parent.parent,  # where `bench` imports from
            start_new_session=True,
        )
        self.progress: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(PROGRESS.encode()):
                _, at, count = line.split()
                self.progress.append((float(at), int(count)))

    @property
    def count(self) -> int:
        return self.progress[-1][1] if self.progress else 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._thread.join(2)
        self._log.close()


async def create_phase_topics(phase: Phase) -> None:
    from streams.broker import create_topics

    s = phase.settings
    await create_topics(
        s.broker, s.topics.all(), partitions=s.partitions, compacted=s.topics.compacted()
    )


async def preload(url: str, topic: str, messages: list[tuple[bytes, bytes]]) -> float:
    """Produce every message with send_batch (partitioned by key like Kafka's default
    partitioner); returns messages/s."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

    from streams.broker import bootstrap_servers

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(url),
        enable_idempotence=False,
        linger_ms=0,
        max_batch_size=1 << 20,
        max_request_size=8 << 20,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        choose = DefaultPartitioner()
        by_part: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in partitions}
        for key, value in messages:
            by_part[choose(key, partitions, partitions)].append((key, value))
        futures = []
        for part, items in by_part.items():
            batch = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=part))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            futures.append(await producer.send_batch(batch, topic, partition=part))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(messages) / (time.perf_counter() - started)


def wait_for(workers: list[WorkerProcess], total: int, max_s: float, idle_s: float = 20.0) -> None:
    """Until the workers together processed `total`, `max_s` passed, or nothing moved for
    `idle_s` after the first batch (or 90 s before it: start-up and the group join)."""
    started = time.monotonic()
    last_change, last = time.monotonic(), -1
    while time.monotonic() - started < max_s:
        done = sum(w.count for w in workers)
        if done >= total:
            return
        if done != last:
            last, last_change = done, time.monotonic()
        limit = idle_s if done else 90.0
        if time.monotonic() - last_change > limit:
            return
        if any(w.process.poll() is not None for w in workers):
            return
        time.sleep(0.1)


def rate(workers: list[WorkerProcess]) -> tuple[float, int, float]:
    """(events/s, events, seconds) from the first batch to the last, over every worker.

    The first batch of each worker is left out of the count (it ends the timing's start)."""
    firsts = [w.progress[0] for w in workers if w.progress]
    if not firsts:
        return 0.0, 0, 0.0
    start = min(at for at, _ in firsts)
    end = max(w.progress[-1][0] for w in workers if w.progress)
    events = sum(w.count for w in workers) - sum(n for at, n in firsts if at == start)
    seconds = end - start
    return (events / seconds if seconds > 0 else 0.0), events, seconds


def run_phase(
    kind: str, phase: Phase, workers: int, total: int, max_s: float
) -> tuple[float, int, float, list[str]]:
    procs = [
        WorkerProcess(kind, phase, phase.tmp / f"{phase.name}-{i}.log") for i in range(workers)
    ]
    try:
        wait_for(procs, total, max_s)
    finally:
        for proc in procs:
            proc.stop()
    failed = [
        f"{phase.name} worker {i} exited {p.process.returncode}"
        for i, p in enumerate(procs)
        if not p.progress
    ]
    return (*rate(procs), failed)


async def latency_run(
    phase: Phase, messages: list[tuple[bytes, bytes]], per_s: float, seconds: float
) -> tuple[list[float], int]:
    """Produce at `per_s` (every 10 ms a paced slice) to a running worker; latency of each
    decision = its message timestamp − the transaction's produce timestamp."""
    import orjson
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from streams.broker import bootstrap_servers

    topics = phase.settings.topics
    servers = bootstrap_servers(phase.broker_url)
    producer = AIOKafkaProducer(bootstrap_servers=servers, enable_idempotence=False, linger_ms=0)
    consumer = AIOKafkaConsumer(
        topics.decisions,
        bootstrap_servers=servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await producer.start()
    await consumer.start()
    sent_at: dict[str, int] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batches.values():
                for rec in records:
                    tid = orjson.loads(rec.value)["transaction_id"]
                    at = sent_at.pop(tid, None)
                    if at is not None:
                        latencies.append((rec.timestamp - at) / 1000)

    reader = asyncio.create_task(read())
    try:
        # Warm up until the worker answers (join, first batch), then measure.
        warm = messages[:50]
        for key, value in warm:
            await producer.send(topics.transactions, value=value, key=key)
        await producer.flush()
        deadline = time.monotonic() + 120
        while len(latencies) < len(warm) * 0.9 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        latencies.clear()
        sent_at.clear()
        step = 0.01
        started = time.monotonic()
        i = len(warm)
        total = int(per_s * seconds)
        while i < min(len(messages), len(warm) + total):
            due = len(warm) + int((time.monotonic() - started) * per_s)
            while i < min(due, len(messages)):
                key, value = messages[i]
                now_ms = int(time.time() * 1000)
                sent_at[orjson.loads(value)["transaction_id"]] = now_ms
                await producer.send(topics.transactions, value=value, key=key, timestamp_ms=now_ms)
                i += 1
            await asyncio.sleep(step)
        await producer.flush()
        deadline = time.monotonic() + 10
        while sent_at and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        done.set()
        await reader
        await consumer.stop()
        await producer.stop()
    return latencies, len(sent_at)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(
    *,
    events: int = 120_000,
    max_phase_s: float = 60.0,
    latency_s: float = 15.0,
    two_workers: bool = True,
) -> Report:
    from streams.broker import EmbeddedBroker
    from streams.settings import Settings

    report = Report("live")
    messages = transaction_values(events)
    size = sum(len(v) for _, v in messages) / len(messages)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(Settings(embedded=True)) as broker:
        base = Path(tmp)
        phases = {name: Phase(name, broker.url, base) for name in ("noop", "one", "two", "lat")}
        produced = 0.0
        for name in ("noop", "one", "two") if two_workers else ("noop", "one"):
            asyncio.run(create_phase_topics(phases[name]))
            produced = asyncio.run(
                preload(broker.url, phases[name].settings.topics.transactions, messages)
            )
        ceiling, n0, s0, fails0 = run_phase("noop", phases["noop"], 1, events, max_phase_s)
        one, n1, s1, fails1 = run_phase("pantau", phases["one"], 1, events, max_phase_s)
        two, n2, s2 = 0.0, 0, 0.0
        fails2: list[str] = []
        if two_workers:
            two, n2, s2, fails2 = run_phase("pantau", phases["two"], 2, events, max_phase_s)
        report.notes.extend(fails0 + fails1 + fails2)
        report.add(
            "no-op Faust agent, one worker (the ceiling)",
            ceiling,
            "events/s",
            note=f"{n0:,} events in {s0:.1f} s; pre-load by send_batch {produced:,.0f} msg/s",
        )
        report.add(
            "Pantau full pipeline, one worker",
            one,
            "transactions/s",
            target=TARGET_EVENTS_S,
            note=f"{n1:,} transactions in {s1:.1f} s",
        )
        report.add(
            "one worker / ceiling (same run)",
            one / ceiling if ceiling else 0.0,
            "",
            target=TARGET_CEILING_RATIO,
        )
        if two_workers:
            report.add(
                "Pantau, two workers",
                two,
                "transactions/s",
                note=f"{n2:,} transactions in {s2:.1f} s",
            )
            report.add(
                "two workers / one (same run)",
                two / one if one else 0.0,
                "",
                target=TARGET_TWO_WORKERS,
            )
        half = max(100.0, one / 2)
        lat_phase = phases["lat"]
        asyncio.run(create_phase_topics(lat_phase))
        proc = WorkerProcess("pantau", lat_phase, base / "lat.log")
        try:
            latencies, lost = asyncio.run(latency_run(lat_phase, messages, half, latency_s))
        finally:
            proc.stop()
        note = f"{len(latencies):,} decisions at {half:,.0f} transactions/s for {latency_s:g} s"
        if lost:
            note += f"; {lost:,} without a decision within 10 s after the end"
        report.add(
            "decision latency p50 at half of the one-worker rate",
            percentile(latencies, 0.5) * 1000,
            "ms",
            note=note,
        )
        report.add(
            "decision latency p99 at half load",
            percentile(latencies, 0.99) * 1000,
            "ms",
            target=TARGET_P99_S * 1000,
            higher=False,
        )
    report.notes.append(
        f"{events:,} simulated transactions ({size:.0f} bytes each) pre-loaded per phase on "
        f"8 partitions; rates run from each phase's first micro-batch to its last "
        f"(cap {max_phase_s:g} s); the Pantau figures count the payments stage's transactions, "
        "with every other stage running in the same worker"
    )
    return report


def main(argv: list[str] | None = None) -> Report | None:
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__)
    parser.add_argument("--events", type=int, default=120_000)
    parser.add_argument("--max-phase-s", type=float, default=60.0)
    parser.add_argument("--latency-s", type=float, default=15.0)
    parser.add_argument("--worker", choices=["noop", "pantau"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "noop":
        serve_noop()
        return None
    if args.worker == "pantau":
        serve_pantau()
        return None
    report = run(events=args.events, max_phase_s=args.max_phase_s, latency_s=args.latency_s)
    report.print()
    return report


if __name__ == "__main__":
    main()
