"""`pantau demo`: embedded broker, a worker and simulated traffic, with a live terminal view."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from streams.broker import (
    EmbeddedBroker,
    client_options,
    die_with_parent,
    ensure_topics,
    free_port,
)
from streams.replay import event_time_fields
from streams.settings import Settings
from streams.topics import Topics

WORKER_STOP_TIMEOUT_S = 15.0
REFRESH_S = 0.5


class DemoError(RuntimeError):
    """The demo could not run (a process it started died or never came up)."""


# ---- traffic ---------------------------------------------------------------------------------

DEFAULT_SPEED = 30.0  # event-time seconds per wall-clock second: an incident every minute or two
MESSAGES_PER_TRANSACTION = 2.0  # a payment brings its callbacks (and the odd balance, label)
SCENARIO_CYCLE = timedelta(minutes=105)  # every scenario's window fits in one loop


def traffic(
    settings: Settings, *, seed: int, rate: float, speed: float, start: datetime
) -> Iterator[tuple[str, str | None, dict[str, Any]]]:
    """The simulator looping through every scenario, with event time starting now and running
    `speed` times faster than the wall clock when sent at `rate` messages per second."""
    from streams.scenarios import SCENARIOS
    from streams.simulator import generate

    events = generate(
        scenarios=list(SCENARIOS),
        seed=seed,
        start=start,
        duration=SCENARIO_CYCLE,
        tx_per_second=max(0.05, rate / speed / MESSAGES_PER_TRANSACTION),
        loop=True,
        invalid_rate=0.002,  # the odd broken message shows the dead-letter path
        diurnal=False,
        settings=settings,
    )
    return ((e.topic, e.key, e.value) for e in events)


# ---- what the view shows ---------------------------------------------------------------------


WINDOW_S = 30.0  # the view's rates are over the last half minute of wall-clock time
FLAGGED = ("review", "decline")


@dataclass
class ChannelRow:
    """One channel's traffic as the view saw it: totals and a sliding window of outcomes."""

    attempts: int = 0
    failed: int = 0
    recent: deque[tuple[float, bool]] = field(default_factory=deque)  # (seen at, failed)
    latencies: deque[int] = field(default_factory=lambda: deque(maxlen=500))
    state: str = "-"

    def add(self, failed: bool, now: float) -> None:
        self.attempts += 1
        self.failed += failed
        self.recent.append((now, failed))

    def window(self, now: float) -> tuple[float, float | None]:
        """(attempts per second, failed share) over the last WINDOW_S seconds."""
        while self.recent and self.recent[0][0] < now - WINDOW_S:
            self.recent.popleft()
        n = len(self.recent)
        if not n:
            return 0.0, None
        return n / WINDOW_S, sum(f for _, f in self.recent) / n


@dataclass
class DemoView:
    """State built from the output topics, rendered as rich tables."""

    topics: Topics
    broker_url: str
    metrics_url: str
    views_url: str
    started: float = field(default_factory=time.monotonic)
    produced: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    channels: dict[str, ChannelRow] = field(default_factory=dict)
    decisions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=8))
    flagged: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=8))
    actions: Counter[str] = field(default_factory=Counter)
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_dead_letter: str = ""
    first_output_s: float | None = None
    _rate_marks: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=20))
    status: str = "starting"
    interrupted: bool = False  # stopped by Ctrl-C rather than by --duration
    event_time: str = ""  # the simulator's clock: the event time of the last input sent

    def _row(self, channel: str) -> ChannelRow:
        row = self.channels.get(channel)
        if row is None:
            row = self.channels[channel] = ChannelRow()
        return row

    def observe(self, topic: str, value: Any) -> None:
        """Take one output message into account."""
        self.counts[topic] += 1
        if self.first_output_s is None:
            self.first_output_s = time.monotonic() - self.started
        if not isinstance(value, dict):
            return
        t = self.topics
        if topic == t.enriched:
            row = self._row(str(value.get("channel")))
            row.add(value.get("status") == "failed", time.monotonic())
            latency = value.get("latency_ms")
            if isinstance(latency, int):
                row.latencies.append(latency)
        elif topic == t.decisions:
            self.decisions.appendleft(value)
            self.actions[str(value.get("action"))] += 1
            if value.get("action") in FLAGGED:
                self.flagged.appendleft(value)
        elif topic in (t.health, t.failover):
            if value.get("channel") and value.get("state"):
                self._row(str(value["channel"])).state = str(value["state"])
        elif topic == t.alerts:
            fingerprint = str(value.get("fingerprint"))
            if value.get("status") == "firing":
                self.alerts[fingerprint] = value
            else:
                self.alerts.pop(fingerprint, None)
        elif topic == t.deadletter:
            self.last_dead_letter = str(value.get("reason", ""))[:100]

    def rates(self) -> tuple[float, float]:
        """(inputs/s, enriched/s) over the last few seconds."""
        now = time.monotonic()
        self._rate_marks.append((now, self.produced, self.counts[self.topics.enriched]))
        first = self._rate_marks[0]
        span = now - first[0]
        if span <= 0:
            return 0.0, 0.0
        return (self.produced - first[1]) / span, (
            self.counts[self.topics.enriched] - first[2]
        ) / span

    def render(self, height: int = 60) -> Group:
        """The view, cut to fit a terminal of `height` lines."""
        in_rate, out_rate = self.rates()
        uptime = time.monotonic() - self.started
        first = f"{self.first_output_s:.1f} s" if self.first_output_s is not None else "waiting…"
        header = Text.assemble(
            ("Pantau demo ", "bold"),
            (f"{self.status}  ", "green" if self.status == "running" else "yellow"),
            f"up {uptime:.0f} s · in {in_rate:.0f}/s · enriched {out_rate:.0f}/s · "
            f"first output after {first}\n",
            f"event time {self.event_time[:19] or '-'} · produced {self.produced} · "
            f"enriched {self.counts[self.topics.enriched]} · "
            f"dead letters {self.counts[self.topics.deadletter]}",
            (f" (last: {self.last_dead_letter})" if self.last_dead_letter else "", "dim"),
            f"\nbroker {self.broker_url} · metrics {self.metrics_url} · views {self.views_url}",
        )
        alert_rows = min(len(self.alerts), 6)
        shown = self.flagged or self.decisions
        decision_rows = min(len(shown), 5)
        # What fits the terminal: the header panel (5 lines), each table's title, borders and
        # heading (5, and 1 more for the channels' caption), or a one-line placeholder.
        spare = (
            height - 5 - (decision_rows + 5 if shown else 1) - (alert_rows + 5 if alert_rows else 1)
        )
        channel_rows = max(4, spare - 6)
        now = time.monotonic()
        ranked = sorted(self.channels.items(), key=lambda kv: -kv[1].attempts)
        hidden = len(ranked) - channel_rows
        header.no_wrap = True
        header.overflow = "ellipsis"
        channels = Table(
            title=f"Channels (rates over the last {WINDOW_S:.0f} s)",
            caption=f"+{hidden} more channels" if hidden > 0 else None,
            expand=True,
            title_justify="left",
        )
        for col in ("channel", "tx/s", "failed", "total", "p95 latency", "state"):
            channels.add_column(col, justify="left" if col in ("channel", "state") else "right")
        for name, row in ranked[:channel_rows]:
            per_s, failed = row.window(now)
            style = (
                ""
                if failed is None
                else ("red" if failed >= 0.2 else ("yellow" if failed >= 0.05 else ""))
            )
            channels.add_row(
                name,
                f"{per_s:.1f}",
                Text("-" if failed is None else f"{failed:.1%}", style=style),
                str(row.attempts),
                f"{_p95(row.latencies)} ms" if row.latencies else "-",
                Text(row.state, style="red" if row.state not in ("-", "healthy") else "green"),
            )
        counts = " · ".join(f"{a} {n}" for a, n in sorted(self.actions.items()))
        decisions = Table(
            title=f"Fraud decisions ({counts}); {'latest flagged' if self.flagged else 'latest'}",
            expand=True,
            title_justify="left",
        )
        for col, width in (("transaction", 19), ("channel", 10), ("action", 7), ("score", 5)):
            decisions.add_column(col, no_wrap=True, min_width=width)
        decisions.add_column("reason", no_wrap=True, overflow="ellipsis", ratio=1)
        for d in list(shown)[:decision_rows]:
            action = str(d.get("action"))
            decisions.add_row(
                str(d.get("transaction_id")),
                str(d.get("channel") or "-"),
                Text(action, style={"decline": "red", "review": "yellow"}.get(action, "green")),
                f"{d.get('score', 0):.0f}",
                "; ".join(d.get("reasons") or []),
            )
        alerts = Table(title="Firing alerts", expand=True, title_justify="left")
        for col in ("alert", "severity", "labels", "value", "threshold", "since"):
            alerts.add_column(col, no_wrap=True, overflow="ellipsis")
        for a in list(self.alerts.values())[-alert_rows:]:
            alerts.add_row(
                str(a.get("alert")),
                Text(
                    str(a.get("severity")), style="red" if a.get("severity") == "critical" else ""
                ),
                ",".join(f"{k}={v}" for k, v in (a.get("labels") or {}).items()),
                _num(a.get("value")),
                _num(a.get("threshold")),
                str(a.get("started_at", ""))[11:19],  # event time of day (UTC)
            )
        parts: list[Any] = [Panel(header), channels]
        parts.append(decisions if shown else Text("no fraud decisions yet", style="dim"))
        parts.append(alerts if self.alerts else Text("no alerts firing", style="dim"))
        return Group(*parts)

    def summary(self) -> str:
        t = self.topics
        first = f"{self.first_output_s:.1f} s" if self.first_output_s is not None else "never"
        seen = sum(self.counts.values())
        return (
            f"demo: produced {self.produced} inputs; saw {seen} outputs "
            f"({self.counts[t.enriched]} enriched, {self.counts[t.decisions]} decisions, "
            f"{self.counts[t.alerts]} alerts, {self.counts[t.deadletter]} dead letters) "
            f"over {len(self.channels)} channels; first output after {first}"
        )


def _height(console: Console) -> int:
    """Lines the view may use: the terminal's height, or everything when not a terminal."""
    return console.height if console.is_terminal else 200


def _p95(values: deque[int]) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def _num(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "-"


# ---- processes -------------------------------------------------------------------------------


def _port(preferred: int) -> int:
    """The preferred port if it is free, else any free one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", preferred))
            return preferred
        except OSError:
            return free_port()


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def simulator_secrets(settings: Settings, directory: Path) -> Path | None:
    """A secrets file with the simulator's callback keys and source networks, so the worker
    trusts the simulated callbacks; None when the user configured callback secrets already."""
    if settings.callback_secrets or os.environ.get("PANTAU_SECRETS_FILE"):
        return None
    from streams.sim_callbacks import sim_settings_overrides

    path = directory / "demo-secrets.json"
    path.write_bytes(orjson.dumps(sim_settings_overrides()))
    path.chmod(0o600)
    return path


def start_worker(settings: Settings, log_dir: Path) -> WorkerProcess:
    """`pantau worker` as a subprocess on the given settings (broker, ports, embedded profile)."""
    env = dict(os.environ)
    secrets = simulator_secrets(settings, log_dir)
    if secrets is not None:
        env["PANTAU_SECRETS_FILE"] = str(secrets)
    env.update(
        PANTAU_BROKER=settings.broker,
        PANTAU_EMBEDDED="1" if settings.embedded else "0",
        PANTAU_WEB_PORT=str(settings.web_port),
        PANTAU_METRICS_PORT=str(settings.metrics_port),
        PANTAU_APP_ID=settings.app_id,
        PYTHONUNBUFFERED="1",
    )
    log_path = log_dir / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops the worker in order
            preexec_fn=die_with_parent,
        )
    return WorkerProcess(process, log_path)


# ---- the loop --------------------------------------------------------------------------------


async def _produce(
    settings: Settings, view: DemoView, rate: float, seed: int, speed: float
) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(linger_ms=5, **client_options(settings))
    await producer.start()
    events = traffic(settings, seed=seed, rate=rate, speed=speed, start=datetime.now(UTC))
    time_fields = event_time_fields(settings.topics)
    step = 0.1
    owed = 0.0
    try:
        next_at = time.monotonic()
        while True:
            owed += rate * step
            futures = []
            while owed >= 1:
                owed -= 1
                topic, key, value = next(events)
                view.event_time = value.get(time_fields.get(topic, ""), view.event_time)
                futures.append(
                    await producer.send(
                        topic, orjson.dumps(value), key=key.encode() if key is not None else None
                    )
                )
            if futures:
                await asyncio.gather(*futures)
                view.produced += len(futures)
            next_at += step
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        await producer.stop()


async def _consume(settings: Settings, view: DemoView, from_start: bool) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *settings.topics.outputs(),
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_start else "latest",
    )
    await consumer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for tp, messages in batches.items():
                for m in messages:
                    try:
                        value = orjson.loads(m.value) if m.value else None
                    except orjson.JSONDecodeError:
                        value = None
                    view.observe(tp.topic, value)
    finally:
        await consumer.stop()


async def _watch(view: DemoView, worker: WorkerProcess, live: Live, duration: float | None) -> None:
    deadline = time.monotonic() + duration if duration else None
    while deadline is None or time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise DemoError(
                f"the worker exited with code {worker.process.returncode}:\n{worker.tail()}"
            )
        if view.first_output_s is not None:
            view.status = "running"
        live.update(view.render(_height(live.console)))
        await asyncio.sleep(REFRESH_S)


async def _run(
    settings: Settings,
    view: DemoView,
    worker: WorkerProcess,
    console: Console,
    *,
    duration: float | None,
    rate: float,
    seed: int,
    speed: float,
    from_start: bool,
) -> None:
    with Live(view.render(), console=console, refresh_per_second=4, transient=False) as live:
        tasks = [
            asyncio.create_task(_produce(settings, view, rate, seed, speed)),
            asyncio.create_task(_consume(settings, view, from_start)),
        ]
        watcher = asyncio.create_task(_watch(view, worker, live, duration))
        try:
            done, _ = await asyncio.wait([watcher, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raises what stopped it
        finally:
            for task in [watcher, *tasks]:
                task.cancel()
            await asyncio.gather(watcher, *tasks, return_exceptions=True)
            view.status = "stopped"
            live.update(view.render(_height(live.console)))


def run(
    settings: Settings,
    *,
    duration: float | None,
    rate: float,
    seed: int = 7,
    speed: float = DEFAULT_SPEED,
    console: Console | None = None,
) -> DemoView:
    """Run the demo until `duration` seconds pass (or Ctrl-C); every process started is stopped."""
    console = console or Console()
    started = time.monotonic()
    # The view shows the state of things; the demo's own clients' retries would only garble it.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    external = bool(os.environ.get("PANTAU_BROKER"))
    embedded: EmbeddedBroker | None = None
    with tempfile.TemporaryDirectory(prefix="pantau-demo-") as tmp:
        try:
            if external:
                ensure_topics(settings)
                url = settings.broker
            else:
                embedded = EmbeddedBroker(settings.model_copy(update={"embedded": True}))
                url = embedded.start()
            live_settings = settings.model_copy(
                update={
                    "broker": url,
                    "embedded": settings.embedded or not external,
                    "web_port": _port(settings.web_port),
                    "metrics_port": _port(settings.metrics_port),
                }
            )
            worker = start_worker(live_settings, Path(tmp))
            view = DemoView(
                topics=settings.topics,
                broker_url=url,
                metrics_url=f"http://localhost:{live_settings.metrics_port}/metrics",
                views_url=f"http://localhost:{live_settings.web_port}/channels",
                started=started,
            )
            try:
                asyncio.run(
                    _run(
                        live_settings,
                        view,
                        worker,
                        console,
                        duration=duration,
                        rate=rate,
                        seed=seed,
                        speed=speed,
                        from_start=not external,
                    )
                )
            except KeyboardInterrupt:
                view.interrupted = True
            finally:
                console.line()
                worker.stop()
        finally:
            if embedded is not None:
                embedded.stop()
    return view
