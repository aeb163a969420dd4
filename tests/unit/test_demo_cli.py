"""`pantau demo` against an unreachable PANTAU_BROKER fails fast with a message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from streams.broker import free_port

PANTAU = str(Path(sys.executable).parent / "pantau")


def test_demo_names_an_unreachable_broker_and_exits_1(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANTAU_")}
    env.update(PANTAU_BROKER=f"kafka://127.0.0.1:{port}", TMPDIR=str(tmp_path))
    result = subprocess.run(
        [PANTAU, "demo", "--duration", "5"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert f"cannot reach the broker at 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "Unable connect" not in result.stderr  # the client's own retries stay quiet
