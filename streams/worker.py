"""`pantau worker`: runs the Faust app in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

import faust

from streams import metrics
from streams.settings import Settings

log = logging.getLogger(__name__)

STOP_DEADLINE_S = 10.0
EXIT_STOP_TIMEOUT = 1
LIBRARIES = ("faust", "mode", "aiokafka", "aiohttp", "venusian")
REPEAT_WINDOW_S = 60.0


def quiet_faust_logging() -> None:
    """Faust, mode and aiokafka log at WARNING; Pantau's own modules keep INFO."""
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


class RepeatFilter(logging.Filter):
    """Lets a library's message through once per window (per logger and message template), then
    says how many like it were held back. While the broker is away aiokafka logs every reconnect
    attempt at ERROR, dozens a second; the worker logs the outage and the recovery itself."""

    def __init__(self, window_s: float = REPEAT_WINDOW_S) -> None:
        super().__init__()
        self.window_s = window_s
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(LIBRARIES):
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.window_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = (
                f"{record.msg} [{held} like it in the last {self.window_s:.0f} s not shown]"
            )
        return True


class QuietWorker(faust.Worker):
    """A Faust worker without the terminal spinner, whose library logs do not repeat, and which
    exits within STOP_DEADLINE_S of SIGTERM/SIGINT even when the broker is away (Faust's own
    shutdown waits for the broker to commit): what it could not commit is redelivered."""

    _deadline: threading.Timer | None = None

    def _arm_stop_deadline(self) -> None:
        if self._deadline is not None:
            return

        def give_up() -> None:
            log.warning(
                "shutdown did not finish within %.0f s (broker unreachable?); exiting without "
                "committing: the next worker redelivers what was not committed",
                STOP_DEADLINE_S,
            )
            logging.shutdown()
            os._exit(EXIT_STOP_TIMEOUT)

        self._deadline = threading.Timer(STOP_DEADLINE_S, give_up)
        self._deadline.daemon = True
        self._deadline.start()

    def _on_sigterm(self) -> None:
        self._arm_stop_deadline()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._arm_stop_deadline()
        super()._on_sigint()

    pantau_log_level = "INFO"

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        repeat = RepeatFilter()
        for handler in logger.handlers:
            handler.addFilter(repeat)
            handler.setLevel(logging.NOTSET)  # each logger's own level decides
        logging.getLogger("streams").setLevel(self.pantau_log_level)


def make_worker(settings: Settings) -> tuple[Any, Any]:
    """A Faust worker for the full pipeline (not started), without the terminal spinner."""
    from streams.app import create_app

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app, runtime = create_app(settings)
    worker = QuietWorker(
        app,
        loglevel="WARNING",
        quiet=True,
        redirect_stdouts=False,
        loop=loop,
    )
    # The spinner spins on every log record (about 12% of throughput at -l warn): none.
    worker.spinner = None
    worker.pantau_log_level = settings.log_level
    return worker, runtime


def wait_for_broker(url: str, wait_s: float) -> None:
    """Wait until some bootstrap server accepts a TCP connection (works with SASL/SSL too)."""
    from streams.broker import BrokerError, bootstrap_servers

    deadline = time.monotonic() + wait_s
    while True:
        for server in bootstrap_servers(url):
            host, _, port = server.rpartition(":")
            try:
                with socket.create_connection((host.strip("[]"), int(port or 9092)), timeout=2):
                    return
            except (OSError, ValueError):
                continue
        if time.monotonic() > deadline:
            raise BrokerError(
                f"cannot reach the broker at {_safe_url(url)} (PANTAU_BROKER) "
                f"after {wait_s:.0f} s; is it running?"
            )
        time.sleep(0.5)


class ConfigError(ValueError):
    """What the settings point at cannot be used (a rule pack failing its check, a model that
    cannot be trusted): the worker does not start."""


def run(settings: Settings, wait_s: float = 30.0) -> None:
    """Run a worker until it is told to stop; serves /metrics on settings.metrics_port.

    Raises BrokerError when no bootstrap server accepts a connection within `wait_s`, and
    ConfigError when the rule pack, model or store the settings name cannot be used.
    """
    started = time.monotonic()
    wait_for_broker(settings.broker, wait_s)
    quiet_faust_logging()
    try:
        worker, runtime = make_worker(settings)
    except ValueError as exc:  # a rule pack, model or store the settings name is unusable
        raise ConfigError(str(exc)) from None
    runtime.started = started
    from streams.gctune import tune_gc

    tune_gc()
    stop_metrics = None
    if settings.metrics_port:
        stop_metrics = metrics.serve(settings.metrics_port)
    print(
        f"pantau worker: broker {_safe_url(settings.broker)}, "
        f"views on :{settings.web_port}, metrics on :{settings.metrics_port}",
        file=sys.stderr,
        flush=True,
    )
    metrics.WORKER_UP.set(1)
    metrics.set_build_info()
    try:
        worker.execute_from_commandline()
    finally:
        metrics.WORKER_UP.set(0)
        metrics.BROKER_CONNECTED.set(0)
        if stop_metrics is not None:
            stop_metrics()


def _safe_url(url: str) -> str:
    """A broker URL without any user:password part."""
    parts = []
    for part in url.split(";"):
        scheme, _, rest = part.partition("://")
        parts.append(f"{scheme}://{rest.rsplit('@', 1)[-1]}")
    return ";".join(parts)
