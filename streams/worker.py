"""`pantau worker`: runs the Faust app in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from streams import metrics
from streams.settings import Settings


def quiet_faust_logging() -> None:
    """Faust, mode and aiokafka log at WARNING; Pantau's own modules keep INFO."""
    for name in ("faust", "mode", "aiokafka", "aiohttp", "venusian"):
        logging.getLogger(name).setLevel(logging.WARNING)


def make_worker(settings: Settings) -> tuple[Any, Any]:
    """A Faust worker for the full pipeline (not started), without the terminal spinner."""
    import faust

    from streams.app import create_app

    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    app, runtime = create_app(settings)
    worker = faust.Worker(
        app,
        loglevel="WARNING",
        quiet=True,
        redirect_stdouts=False,
        loop=loop,
    )
    # The spinner spins on every log record (about 12% of throughput at -l warn): none.
    worker.spinner = None
    return worker, runtime


def run(settings: Settings) -> None:
    """Run a worker until it is told to stop; serves /metrics on settings.metrics_port."""
    quiet_faust_logging()
    stop_metrics = None
    if settings.metrics_port:
        stop_metrics = metrics.serve(settings.metrics_port)
    worker, _runtime = make_worker(settings)
    print(
        f"pantau worker: broker {_safe_url(settings.broker)}, "
        f"views on :{settings.web_port}, metrics on :{settings.metrics_port}",
        file=sys.stderr,
        flush=True,
    )
    metrics.WORKER_UP.set(1)
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
