"""The Faust app: an agent per stage on its topics (raw bytes, micro-batches), timers, views."""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import faust
import orjson

from models.pan import mask_pans
from streams.codec import dead_letter
from streams.core import Record, Stage
from streams.live import (
    BroadcastReader,
    BrokerProbe,
    BrokerStatus,
    Sender,
    StageRunner,
    log_failure,
)
from streams.settings import Settings
from streams.transport import PantauApp

log = logging.getLogger(__name__)

TICK_INTERVAL_S = 1.0  # idle stages get a tick() this often (their event time decides what is due)
STATE_FLUSH_INTERVAL_S = 1.0  # payments state changed between batches (labels) is logged this often
PROBE_INTERVAL_S = 5.0
EMBEDDED_SESSION_TIMEOUT_S = 6.0  # Tansu makes every join wait about half the session timeout
EMBEDDED_FETCH_WAIT_MS = 20  # Tansu holds every fetch for its whole wait, data or not
HEALTH_STAGE = "health"


@dataclass
class Runtime:
    """What a running worker holds besides the Faust app: the stages and their runners."""

    settings: Settings
    stages: list[Stage]
    runners: dict[str, StageRunner] = field(default_factory=dict)
    broadcasts: list[BroadcastReader] = field(default_factory=list)
    # stage name → what keeps its state across workers (restore before a batch, write after)
    durables: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    first_batch_s: float | None = None  # seconds from start to the first batch processed
    on_assigned: Any = None
    writer: Any = None  # the PartitionWriter the state logs and the Sender share

    def batch_done(self) -> None:
        if self.first_batch_s is None:
            self.first_batch_s = time.monotonic() - self.started
            print(
                f"pantau worker: first events processed {self.first_batch_s:.1f} s after start",
                file=sys.stderr,
                flush=True,
            )

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)


def faust_config(settings: Settings) -> dict[str, Any]:
    """Faust settings for a Pantau worker; the embedded profile suits Tansu."""
    session = settings.session_timeout_s
    if settings.embedded:
        session = min(session, EMBEDDED_SESSION_TIMEOUT_S)
    heartbeat = min(3.0, session / 3)
    # Pantau keeps no Faust tables (stage state is its own, see streams/statelog.py and
    # PANTAU_STORE): Faust's store is memory and its directory stays out of the working tree.
    datadir = Path(tempfile.gettempdir()) / f"{settings.app_id}-faust"
    config: dict[str, Any] = {
        "broker": settings.broker,
        "store": "memory://",
        "autodiscover": False,
        "processing_guarantee": "at_least_once",  # Tansu cannot do exactly_once
        "broker_session_timeout": session,
        "broker_heartbeat_interval": heartbeat,
        "consumer_auto_offset_reset": "earliest",
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "topic_disable_leader": True,  # no on_leader timers: no leader topic to create
        "web_enabled": settings.web_port != 0,
        "web_port": settings.web_port or 6066,
        "web_bind": "0.0.0.0",
        "producer_linger_ms": 5,
        "stream_buffer_maxsize": max(4096, settings.batch_size * 2),
        "broker_max_poll_records": max(500, settings.batch_size),
        "worker_redirect_stdouts": False,
    }
    config["datadir"] = str(datadir)
    if settings.broker_credentials:
        config["broker_credentials"] = _credentials(settings)
    return config


def fetch_wait_ms(settings: Settings) -> int:
    """How long the worker's consumer lets the broker hold a fetch with no data."""
    if settings.embedded:
        return min(settings.fetch_wait_ms, EMBEDDED_FETCH_WAIT_MS)
    return settings.fetch_wait_ms


def _credentials(settings: Settings) -> Any:
    creds = {k: v.get_secret_value() for k, v in settings.broker_credentials.items()}
    mechanism = creds.get("mechanism", "PLAIN").upper()
    ssl_context = None
    if creds.get("cafile"):
        import ssl

        ssl_context = ssl.create_default_context(cafile=creds["cafile"])
    if "username" in creds:
        if mechanism.startswith("SCRAM"):
            return faust.SASLCredentials(
                username=creds["username"],
                password=creds.get("password", ""),
                mechanism=mechanism,
                ssl_context=ssl_context,
            )
        return faust.SASLCredentials(
            username=creds["username"], password=creds.get("password", ""), ssl_context=ssl_context
        )
    if ssl_context is not None:
        return faust.SSLCredentials(ssl_context)
    return None


def create_app(
    settings: Settings, stages: Sequence[Stage] | None = None
) -> tuple[faust.App, Runtime]:
    """The Faust app for these stages (the full pipeline's by default)."""
    if stages is None:
        from streams.pipeline import build_stages

        stages = build_stages(settings)
    app = PantauApp(
        settings.app_id, fetch_wait_ms=fetch_wait_ms(settings), **faust_config(settings)
    )
    runtime = Runtime(settings, _sharded(list(stages)))

    async def send(
        topic: str, key: bytes | None, value: bytes | None, partition: int | None
    ) -> Any:
        return await app.producer.send(topic, key, value, partition, None, None)

    from streams.statelog import PartitionWriter

    # One writer for the stages' state and the outputs: its producer sends each micro-batch's
    # outputs as one record batch per partition (see Sender).
    runtime.writer = PartitionWriter(settings)
    status = BrokerStatus()
    sender = Sender(send, status, producer=runtime.writer.producer)
    for stage in runtime.stages:
        runner = StageRunner(stage, settings, sender)
        runtime.runners[stage.name] = runner
        if stage.broadcast:
            runtime.broadcasts.append(BroadcastReader(runner, settings))
        else:
            _add_agent(app, settings, runner, runtime)
    for reader in runtime.broadcasts:
        app.task(_broadcast_task(reader))
    _add_durable_state(app, runtime)

    @app.timer(interval=TICK_INTERVAL_S, name="pantau-tick")
    async def tick() -> None:
        for runner in runtime.runners.values():
            await runner.tick()

    probe = BrokerProbe(settings, status)

    @app.timer(interval=PROBE_INTERVAL_S, name="pantau-probe")
    async def check_broker() -> None:
        await probe.check()

    _add_views(app, runtime)
    return app, runtime


def _sharded(stages: list[Stage]) -> list[Stage]:
    """Live, the health stage keeps one shard per deltas partition (see HealthShards), and the
    alert-windows judge one per samples partition (see WindowedAlertShards)."""
    from streams.alert_windows import WindowedAlerts, WindowedAlertShards
    from streams.health import FailoverStateStage, HealthShards, HealthStage

    out: list[Stage] = []
    shards: HealthShards | None = None
    for stage in stages:
        if isinstance(stage, WindowedAlerts):

            def judge(proto: WindowedAlerts = stage) -> WindowedAlerts:
                return WindowedAlerts(proto.topics, proto.rules, lateness=proto.clock.lateness)

            out.append(WindowedAlertShards(judge))
        elif isinstance(stage, HealthStage):

            def make(proto: HealthStage = stage) -> HealthStage:
                return HealthStage(proto.topics, proto.rules, lateness=proto.clock.lateness)

            shards = HealthShards(make)
            out.append(shards)
        else:
            out.append(stage)
    for stage in out:
        if isinstance(stage, FailoverStateStage) and shards is not None:
            stage.health = shards
    return out


def _add_durable_state(app: faust.App, runtime: Runtime) -> None:
    """The payments, callbacks and settlement stages' state to their changelogs, the health
    and alert-windows shards rebuilt on takeover; all follow the group's assignment."""
    from streams.alert_windows import WindowedAlertShards
    from streams.health import HealthShards
    from streams.payments import PaymentsStage
    from streams.settlement import CallbacksStage, SettlementStage
    from streams.statelog import (
        AlertWindowsRebuilder,
        HealthRestorer,
        KeyedStateLog,
        PartitionReader,
        PaymentsStateLog,
    )

    # A reader each (the stages restore at the same time, and a reader's consumer reads one
    # partition at a time; it is closed once a restore is done), one writer for all.
    settings = runtime.settings
    writer = runtime.writer
    for stage in runtime.stages:
        if isinstance(stage, PaymentsStage) and stage.durable is not None:
            runtime.durables[stage.name] = PaymentsStateLog(
                stage, settings, writer, PartitionReader(settings)
            )
        elif isinstance(stage, SettlementStage | CallbacksStage):
            runtime.durables[stage.name] = KeyedStateLog(stage, writer, PartitionReader(settings))
        elif isinstance(stage, HealthShards):
            runtime.durables[stage.name] = HealthRestorer(stage, PartitionReader(settings))
        elif isinstance(stage, WindowedAlertShards):
            runtime.durables[stage.name] = AlertWindowsRebuilder(stage, PartitionReader(settings))
    if not runtime.durables:
        return
    topic_of = {s.name: s.consumes[0] for s in runtime.stages if s.name in runtime.durables}
    payments_logs = [d for d in runtime.durables.values() if isinstance(d, PaymentsStateLog)]
    if payments_logs:

        @app.timer(interval=STATE_FLUSH_INTERVAL_S, name="pantau-state-flush")
        async def flush() -> None:
            for payments_log in payments_logs:
                try:
                    await payments_log.flush()
                except Exception as exc:  # (the writer itself retries while the broker is away)
                    log_failure("writing the payments state between batches failed", exc)

    async def on_assigned(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        current = app.consumer.assignment()
        for name, durable in runtime.durables.items():
            durable.assigned({tp.partition for tp in current if tp.topic == topic_of[name]})

    # mode's Signal types want a positional-only sender; Faust calls it as sender=app.
    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]
    runtime.on_assigned = on_assigned  # keep a reference: signals hold receivers weakly


def _broadcast_task(reader: BroadcastReader) -> Any:
    async def run() -> None:
        while True:
            try:
                await reader.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Read again from the beginning: a broadcast stage keeps the latest per key.
                log_failure(
                    f"broadcast reader of {reader.runner.stage.name} failed; restarting", exc
                )
                await asyncio.sleep(2.0)

    run.__name__ = run.__qualname__ = f"broadcast_{reader.runner.stage.name}"
    return run


def _add_agent(app: faust.App, settings: Settings, runner: StageRunner, runtime: Runtime) -> None:
    topic = app.topic(
        *runner.stage.consumes,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    async def agent(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            # take_events acks the batch whatever happens here: nothing may escape unhandled.
            records = [
                Record(
                    topic=e.message.topic,
                    value=e.message.value or b"",
                    key=e.message.key,
                    partition=e.message.partition,
                    offset=e.message.offset,
                )
                for e in events
            ]
            durable = runtime.durables.get(runner.stage.name)
            timestamps = [e.message.timestamp for e in events]
            try:
                if durable is None:
                    await runner.handle(records, timestamps)
                else:
                    await durable.before(records)
                    await runner.handle(records, timestamps, partial(durable.logged, records))
            except Exception as exc:
                # Not the stage (StageRunner isolates those): dead-letter the batch, never drop it.
                log_failure(f"worker failed on a batch of {runner.stage.name}", exc)
                reason = f"worker failed: {type(exc).__name__}: {exc}"
                deadletter = settings.topics.deadletter
                await runner.sender.send_all([dead_letter(r, reason, deadletter) for r in records])
            runtime.batch_done()

    app.agent(topic, name=f"pantau-{runner.stage.name}")(agent)


def _add_views(app: faust.App, runtime: Runtime) -> None:
    def health() -> Any:
        return runtime.stage(HEALTH_STAGE)

    def as_json(view: Any, data: Any, status: int = 200) -> Any:
        return view.bytes(
            orjson.dumps(data, default=str), content_type="application/json", status=status
        )

    @app.page("/channels")
    async def channels(view: Any, request: Any) -> Any:
        stage = health()
        if stage is None or not hasattr(stage, "channels_view"):
            return as_json(view, {"error": "channel health is not part of this pipeline"}, 404)
        return as_json(view, stage.channels_view())

    @app.page("/channels/{channel}")
    async def channel(view: Any, request: Any, channel: str) -> Any:
        stage = health()
        if stage is None or not hasattr(stage, "channel_view"):
            return as_json(view, {"error": "channel health is not part of this pipeline"}, 404)
        data = stage.channel_view(channel)
        if data is None:
            return as_json(view, {"error": f"unknown channel {mask_pans(channel)[:64]}"}, 404)
        return as_json(view, data)
