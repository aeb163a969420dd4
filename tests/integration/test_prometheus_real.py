"""The real check: a worker on the embedded broker with simulated traffic, a real Prometheus server
scraping it with the alert rules loaded, and every panel's query of the generated dashboards run
against Prometheus's HTTP API. Fails naming each panel whose query returns no data."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import queries
from dashboards.build import GENERATED
from streams.broker import free_port
from streams.signatures import build_callback
from streams.sim_callbacks import SIM_SECRETS, SIM_SOURCE_IPS
from streams.sim_cli import write_secrets_file
from tests.integration.conftest import PANTAU, Sandbox, WorkerProcess, produce_json

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "dashboards" / "prometheus" / "pantau.rules.yml"
SIM_START = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)
SPEED = 120  # event-time seconds per wall second: an hour of traffic in 30 s
WAIT_S = 150.0  # give up after this long without data for every panel
POLL_S = 5.0


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _wait_http(url: str, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{what} did not answer {url} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Prometheus:
    """The Debian `prometheus` binary on a free loopback port, scraping one worker every second."""

    def __init__(self, tmp: Path, target: str) -> None:
        exe = shutil.which("prometheus")
        assert exe, "prometheus is missing: run `make promtool` (Debian package `prometheus`)"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "pantau-worker", "static_configs": [{"targets": [target]}]}
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = tmp / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.started = time.time()
        self.proc = subprocess.Popen(
            [
                exe,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        _wait_http(f"{self.url}/-/ready", 30, "prometheus", self.proc)

    def query(self, expr: str, *, instant: bool) -> list[Any]:
        """Run a query the way Grafana would (a range over the run, or one instant)."""
        now = time.time()
        if instant:
            params = {"query": expr, "time": f"{now:.3f}"}
            path = "query"
        else:
            params = {"query": expr, "start": f"{self.started:.3f}", "end": f"{now:.3f}",
                      "step": "1"}
            path = "query_range"
        answer = _get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        assert answer["status"] == "success", (expr, answer)
        return list(answer["data"]["result"])

    def stop(self) -> None:
        _stop(self.proc)
        self._log.close()


def _orphan_callback(n: int) -> dict[str, Any]:
    """A trusted (correctly signed) callback for a transaction that never arrives."""
    at = SIM_START + timedelta(minutes=1 + n)
    tx_id = f"trx-never-arrives-{n}"
    body = {
        "transaction_id": tx_id,
        "status": "success",
        "amount": "125000.00",
        "currency": "IDR",
        "channel": "BCA",
        "provider_reference": f"ref-orphan-{n}",
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
    }
    return build_callback(
        "generic", body, SIM_SECRETS["generic"], callback_id=f"cb-orphan-{n}", received_at=at,
        source_ip=SIM_SOURCE_IPS["generic"][0],
    )


@pytest.fixture
def stack(
    sandbox: Sandbox, tmp_path: Path
) -> Iterator[tuple[Prometheus, WorkerProcess, Sandbox]]:
    """A worker trusting the simulator's callbacks, the simulator, and Prometheus scraping it."""
    secrets = tmp_path / "sim-secrets.yaml"
    write_secrets_file(secrets)
    sandbox.env["PANTAU_SECRETS_FILE"] = str(secrets)
    # Payments found missing fill the last panels: with the shipped 4 h deadline for deferred
    # methods that takes two minutes of this test's time, with 30 min fifteen seconds.
    rules = yaml.safe_load((ROOT / "rules" / "settlement.yaml").read_text(encoding="utf-8"))
    for method in ("virtual_account", "bank_transfer", "convenience_store"):
        rules["deadlines_s"][method] = 1800
    settlement = tmp_path / "settlement.yaml"
    settlement.write_text(yaml.safe_dump(rules), encoding="utf-8")
    sandbox.env["PANTAU_SETTLEMENT_RULES"] = str(settlement)
    worker = WorkerProcess(sandbox.env, tmp_path / "worker.log")
    simulator: subprocess.Popen[bytes] | None = None
    prometheus: Prometheus | None = None
    try:
        metrics_port = sandbox.settings.metrics_port
        _wait_http(f"http://127.0.0.1:{metrics_port}/metrics", 60, "worker", worker.process)
        with (tmp_path / "simulator.log").open("wb") as sim_log:
            simulator = subprocess.Popen(
                [PANTAU, "simulate", "--broker", sandbox.broker.url, "--scenario", "all",
                 "--speed", str(SPEED), "--rate", "2", "--flat", "--loop", "--seed", "11",
                 "--start", SIM_START.isoformat(), "--quiet"],
                env=sandbox.env, stdout=sim_log, stderr=subprocess.STDOUT,
            )
        # What the simulator never sends: a rule pack rollout and callbacks without a payment.
        published = subprocess.run(
            [PANTAU, "rules", "publish", str(ROOT / "rules" / "fraud" / "core.yaml")],
            env=sandbox.env, capture_output=True, text=True, timeout=60, check=False,
        )
        assert published.returncode == 0, published.stdout + published.stderr
        produce_json(
            sandbox.broker,
            sandbox.topics.callbacks,
            [(f"trx-never-arrives-{n}", _orphan_callback(n)) for n in range(3)],
        )
        prometheus = Prometheus(tmp_path, f"127.0.0.1:{metrics_port}")
        yield prometheus, worker, sandbox
    finally:
        if prometheus is not None:
            prometheus.stop()
        if simulator is not None:
            _stop(simulator)
        worker.stop()


def _dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.stem: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(GENERATED.glob("*.json"))
    }


def _empty_panels(prometheus: Prometheus, boards: dict[str, dict[str, Any]]) -> list[str]:
    empty = []
    for board in boards.values():
        values = queries.variable_defaults(board)
        for item in queries.panel_queries(board):
            expr = queries.substitute(item.expr, values)
            if not prometheus.query(expr, instant=queries.is_instant(board, item)):
                empty.append(f"{item.where}: {expr}")
    return empty


def _rule_problems(prometheus: Prometheus) -> dict[str, str]:
    """Rules Prometheus could not evaluate (after every rule has been evaluated once)."""
    expected = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    names = {r.get("alert") or r["record"] for g in expected["groups"] for r in g["rules"]}
    deadline = time.monotonic() + 30
    while True:
        groups = _get(f"{prometheus.url}/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if all(r.get("health") != "unknown" for r in rules) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {r["name"] for r in rules} == names
    return {r["name"]: r.get("lastError") or r.get("health") for r in rules if r["health"] != "ok"}


def test_every_panel_query_returns_data_from_a_real_prometheus(
    stack: tuple[Prometheus, WorkerProcess, Sandbox],
) -> None:
    prometheus, worker, _ = stack
    boards = _dashboards()
    assert set(boards) == {"overview", "channel", "settlement", "risk", "pipeline"}
    total = sum(len(queries.panel_queries(b)) for b in boards.values())
    deadline = time.monotonic() + WAIT_S
    empty = ["not asked yet"]
    while empty and time.monotonic() < deadline:
        time.sleep(POLL_S)
        assert worker.process.poll() is None, f"worker died:\n{worker.log()[-3000:]}"
        scrapes = prometheus.query('count_over_time(up{job="pantau-worker"}[10m])', instant=True)
        if not scrapes or float(scrapes[0]["value"][1]) < 3:
            continue
        empty = _empty_panels(prometheus, boards)
    elapsed = time.time() - prometheus.started
    assert not empty, (
        f"{len(empty)} of {total} panel queries returned no data after {elapsed:.0f} s:\n"
        + "\n".join(empty)
    )
    # The alert rules load and evaluate on the same real data, and the SLI sees the traffic.
    assert _rule_problems(prometheus) == {}
    sli = prometheus.query("pantau:payment_provider_errors:ratio_rate5m", instant=True)
    assert sli and 0.0 <= float(sli[0]["value"][1]) <= 1.0, sli
