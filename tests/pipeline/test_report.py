"""`pantau report`: a replay of an outage and of signed callbacks, read back and drawn as PNGs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.pipeline import build_pipeline
from streams.report import read_outputs, render_report, replay_outputs
from streams.settings import Settings
from streams.signatures import build_callback

START = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)
SECRET = "report-test-generic-secret"
SOURCE_IP = "198.51.100.7"
OUTAGE = (timedelta(minutes=5), timedelta(minutes=12))
PNG = b"\x89PNG\r\n\x1a\n"


def _tx(n: int, channel: str, method: str, at: datetime, failed: bool) -> dict[str, Any]:
    return {
        "transaction_id": f"trx-{channel}-{n:05d}",
        "merchant_id": "m-report",
        "customer_id": f"c-{n % 97}",
        "amount": "150000.00",
        "currency": "IDR",
        "method": method,
        "channel": channel,
        "status": "failed" if failed else "success",
        "error_code": "503" if failed else None,
        "latency_ms": 3000 if failed else 250,
        "created_at": at.isoformat(),
    }


def _settled(tx: dict[str, Any], after: timedelta) -> dict[str, Any]:
    at = datetime.fromisoformat(tx["created_at"]) + after
    body = {
        "transaction_id": tx["transaction_id"],
        "status": "success",
        "amount": tx["amount"],
        "currency": "IDR",
        "channel": tx["channel"],
        "provider_reference": f"ref-{tx['transaction_id']}",
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
    }
    return build_callback(
        "generic", body, SECRET, callback_id=f"cb-{tx['transaction_id']}", received_at=at,
        source_ip=SOURCE_IP,
    )


def write_events(path: Path) -> dict[str, timedelta]:
    """40 minutes of BCA (down from minute 5 to 12) and OVO traffic; some BCA payments settle.

    Returns the settlement delay of each settled transaction."""
    lines = []
    delays: dict[str, timedelta] = {}
    for n in range(480):  # BCA: one attempt every 5 s
        offset = timedelta(seconds=5 * n)
        tx = _tx(n, "BCA", "virtual_account", START + offset, OUTAGE[0] <= offset < OUTAGE[1])
        lines.append({"topic": "payments.transactions", "value": tx})
        if n % 40 == 0 and tx["status"] == "success":
            delay = timedelta(hours=5) if n % 80 == 0 else timedelta(minutes=30)
            delays[tx["transaction_id"]] = delay
            lines.append({"topic": "payments.callbacks", "value": _settled(tx, delay)})
    for n in range(240):  # OVO: healthy, one attempt every 10 s
        tx = _tx(n, "OVO", "ewallet", START + timedelta(seconds=10 * n), False)
        lines.append({"topic": "payments.transactions", "value": tx})
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    return delays


def settings() -> Settings:
    return Settings(
        callback_secrets={"generic": [SECRET]},
        callback_allowlists={"generic": [f"{SOURCE_IP}/32"]},
    )


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, timedelta]]:
    root = tmp_path_factory.mktemp("report")
    events = root / "events.jsonl"
    delays = write_events(events)
    replay_outputs(build_pipeline(settings()), events, root / "out")
    return root, delays


def test_failover_and_restore_of_the_failing_channel_are_marked(
    replayed: tuple[Path, dict[str, timedelta]],
) -> None:
    data = read_outputs(replayed[0] / "out")
    bca = [(m.action, m.at) for m in data.markers if m.channel == "BCA"]
    assert [action for action, _ in bca] == ["failover", "restore"]
    failover_at, restore_at = bca[0][1], bca[1][1]
    assert START + OUTAGE[0] < failover_at < START + OUTAGE[0] + timedelta(minutes=2)
    assert restore_at > START + OUTAGE[1]
    assert not [m for m in data.markers if m.channel == "OVO"]
    assert data.interesting_channels() == ["BCA"]
    errors = data.channels["BCA"].error_rate
    assert max(errors) > 0.5 and errors[0] == 0.0
    assert max(data.channels["OVO"].error_rate) == 0.0


def test_settlement_delays_are_the_callbacks_minus_created_at(
    replayed: tuple[Path, dict[str, timedelta]],
) -> None:
    data = read_outputs(replayed[0] / "out")
    expected = sorted(d.total_seconds() / 3600 for d in replayed[1].values())
    assert sorted(round(h, 6) for _, h in data.settlements["BCA"]) == expected
    assert set(data.settlements) == {"BCA"}
    assert {0.5, 5.0} <= set(expected)


def test_decisions_are_counted_per_bucket(replayed: tuple[Path, dict[str, timedelta]]) -> None:
    data = read_outputs(replayed[0] / "out")
    total = sum(sum(counts.values()) for counts in data.decisions.values())
    assert total == 480 + 240
    buckets = {b for counts in data.decisions.values() for b in counts}
    assert min(buckets) == START and len(buckets) == 8  # 40 minutes in 5-minute buckets


def test_report_writes_three_pngs(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    write_events(events)
    written = render_report(build_pipeline(settings()), events, tmp_path / "plots")
    assert [p.name for p in written] == ["channels.png", "settlement_delay.png", "decisions.png"]
    for path in written:
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 20_000
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(
        p.name for p in written
    )


def test_cli_report_refuses_a_missing_events_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["report", "--events", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "nope.jsonl: no such file" in " ".join(result.output.split())
