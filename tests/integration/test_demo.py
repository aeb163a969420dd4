"""`pantau demo` end to end: traffic flows within seconds, and it stops everything it started."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from streams.broker import free_port
from tests.integration.conftest import PANTAU

pytestmark = pytest.mark.integration


def _demo(tmp_path: Path, *args: str, metrics_port: int = 0) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANTAU_")}
    env.update(
        PANTAU_WEB_PORT=str(free_port()),
        PANTAU_METRICS_PORT=str(metrics_port or free_port()),
        TMPDIR=str(tmp_path),
        COLUMNS="120",
    )
    return subprocess.Popen(
        [PANTAU, "demo", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _check_summary(stdout: str, stderr: str, min_enriched: int = 100) -> None:
    summary = re.search(
        r"produced (\d+) inputs; saw (\d+) outputs \((\d+) enriched.*first output after ([\d.]+) s",
        stderr,
    )
    assert summary, stderr[-3000:]
    produced, _seen, enriched, first = summary.groups()
    assert int(produced) > 100 and int(enriched) >= min_enriched
    assert float(first) < 20
    # The live view's last frame names the channels it saw traffic on.
    assert "Channels" in stdout and "BCA" in stdout
    # Every process it started is gone: the broker and the worker's ports are closed.
    broker_port = int(re.search(r"broker kafka://127\.0\.0\.1:(\d+)", stdout).group(1))  # type: ignore[union-attr]
    metrics_port = int(re.search(r"metrics http://localhost:(\d+)", stdout).group(1))  # type: ignore[union-attr]
    assert _closed(broker_port) and _closed(metrics_port)


def test_demo_with_duration_exits_0(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "--duration", "20", "--rate", "150")
    stdout, stderr = demo.communicate(timeout=90)
    assert demo.returncode == 0, stderr[-3000:]
    _check_summary(stdout, stderr)


def _processed(metrics_port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('pantau_events_processed_total{topic="payments.transactions"}')
    )


def test_demo_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    metrics_port = free_port()
    demo = _demo(tmp_path, "--rate", "150", metrics_port=metrics_port)
    deadline = time.monotonic() + 60
    # Interrupt once the worker has processed traffic (its metrics say so).
    while _processed(metrics_port) < 200 and time.monotonic() < deadline:
        assert demo.poll() is None, demo.communicate()[1][-3000:]
        time.sleep(0.5)
    time.sleep(3)  # and the view has had time to read the outputs
    assert demo.poll() is None
    demo.send_signal(signal.SIGINT)
    stdout, stderr = demo.communicate(timeout=60)
    assert demo.returncode == 130, stderr[-3000:]
    _check_summary(stdout, stderr, min_enriched=1)
