"""`pantau report`: replays a file of events and draws PNG plots of it for incident reviews."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from models.outputs import Action, FailoverAction
from streams.core import Out, Record
from streams.pipeline import Pipeline
from streams.replay import replay

# The thresholds drawn as lines, the same the dashboards and alert rules use.
ERROR_RATE_LINE = 0.05
LATENCY_P95_LINE_MS = 800.0
SETTLEMENT_DELAY_LINE_H = 4.0
WINDOW = "5m"  # the channel.health window plotted
BUCKET = timedelta(minutes=5)  # decisions are counted per bucket of event time
MAX_NAMED_CHANNELS = 8  # more channels than this with trouble: the rest are drawn grey
SETTLEMENT_TAP = "pantau.settlement.jsonl"  # the internal topic, written beside the outputs

MARKERS = {
    FailoverAction.FAILOVER.value: ("tab:red", "failover"),
    FailoverAction.RESTORE.value: ("tab:green", "restore"),
}
AMOUNT_LABELS = {Action.REVIEW.value: "IDR sent to review", Action.DECLINE.value: "IDR declined"}
ACTION_COLOURS = {
    Action.APPROVE.value: "tab:green",
    Action.REVIEW.value: "tab:orange",
    Action.DECLINE.value: "tab:red",
}


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else None


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                value = orjson.loads(line)
                if isinstance(value, dict):
                    yield value


# ---- what the plots show, read from the replay's output files ----------------------------------
@dataclass
class ChannelSeries:
    """One channel's provider error rate and p95 latency over event time."""

    times: list[datetime] = field(default_factory=list)
    error_rate: list[float] = field(default_factory=list)
    latency_p95_ms: list[float | None] = field(default_factory=list)


@dataclass
class Marker:
    """A failover or restore of a channel."""

    at: datetime
    channel: str
    action: str


@dataclass
class ReportData:
    """Everything the plots draw."""

    channels: dict[str, ChannelSeries] = field(default_factory=dict)
    markers: list[Marker] = field(default_factory=list)
    settlements: dict[str, list[tuple[datetime, float]]] = field(default_factory=dict)
    decisions: dict[str, dict[datetime, int]] = field(default_factory=dict)
    amounts: dict[str, dict[datetime, float]] = field(default_factory=dict)

    def interesting_channels(self) -> list[str]:
        """Channels that failed over or crossed a threshold, most troubled first."""
        scores: dict[str, float] = {}
        for marker in self.markers:
            scores[marker.channel] = scores.get(marker.channel, 0) + 10
        for name, series in self.channels.items():
            worst = max(series.error_rate, default=0.0)
            slow = max((v for v in series.latency_p95_ms if v is not None), default=0.0)
            if worst >= ERROR_RATE_LINE or slow > LATENCY_P95_LINE_MS:
                scores[name] = scores.get(name, 0) + worst + slow / LATENCY_P95_LINE_MS
        ranked = sorted(scores, key=lambda name: (-scores[name], name))
        return ranked[:MAX_NAMED_CHANNELS]


def _bucket(at: datetime) -> datetime:
    seconds = int(BUCKET.total_seconds())
    epoch = int(at.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


def read_outputs(out_dir: Path) -> ReportData:
    """Read a replay's output directory (and the settlement tap) into plot data."""
    data = ReportData()
    for snap in _lines(out_dir / "channel.health.jsonl"):
        at = _time(snap.get("at"))
        window = (snap.get("windows") or {}).get(WINDOW)
        if at is None or not isinstance(window, dict):
            continue
        series = data.channels.setdefault(str(snap.get("channel")), ChannelSeries())
        series.times.append(at)
        series.error_rate.append(float(window.get("provider_error_rate") or 0.0))
        p95 = window.get("latency_p95_ms")
        series.latency_p95_ms.append(float(p95) if p95 is not None else None)
    for signal in _lines(out_dir / "gateway.failover.jsonl"):
        at = _time(signal.get("at"))
        if at is not None and signal.get("action") in MARKERS:
            data.markers.append(Marker(at, str(signal.get("channel")), str(signal["action"])))
    for decision in _lines(out_dir / "fraud.decisions.jsonl"):
        at = _time(decision.get("decided_at"))
        if at is None:
            continue
        action = str(decision.get("action"))
        bucket = _bucket(at)
        counts = data.decisions.setdefault(action, defaultdict(int))
        counts[bucket] += 1
        if decision.get("amount") is not None:
            amounts = data.amounts.setdefault(action, defaultdict(float))
            amounts[bucket] += float(decision["amount"])
    _read_settlement(out_dir / SETTLEMENT_TAP, data)
    return data


def _read_settlement(path: Path, data: ReportData) -> None:
    """Settlement delay = the settled callback's time − the transaction's created_at."""
    created: dict[str, tuple[datetime, str]] = {}
    settled: dict[str, datetime] = {}
    for fact in _lines(path):
        tx_id = str(fact.get("transaction_id"))
        if fact.get("kind") == "transaction":
            at = _time(fact.get("created_at"))
            if at is not None and tx_id not in created:
                created[tx_id] = (at, str(fact.get("channel")))
        elif fact.get("kind") == "callback" and fact.get("status") == "settled":
            at = _time(fact.get("settled_at")) or _time(fact.get("received_at"))
            if at is not None and tx_id not in settled:
                settled[tx_id] = at
    for tx_id, at in settled.items():
        if tx_id in created:
            start, channel = created[tx_id]
            delay_h = max(0.0, (at - start).total_seconds() / 3600)
            data.settlements.setdefault(channel, []).append((at, delay_h))


# ---- running the replay --------------------------------------------------------------------------
class _SettlementTap:
    """Writes what the settlement stage receives on its internal topic (facts and callbacks)."""

    def __init__(self, pipeline: Pipeline, path: Path) -> None:
        self.stage = pipeline.stage_for(pipeline.topics.settlement)
        self.path = path
        self.fh = path.open("wb")
        if self.stage is not None:
            original = self.stage.process

            def process(records: Sequence[Record]) -> list[Out]:
                for record in records:
                    self.fh.write(record.value + b"\n")
                return original(records)

            self.stage.process = process  # type: ignore[method-assign]

    def close(self) -> None:
        self.fh.close()


def replay_outputs(pipeline: Pipeline, events: Path, out_dir: Path) -> None:
    """Replay events into out_dir: every output topic's file plus the settlement tap."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tap = _SettlementTap(pipeline, out_dir / SETTLEMENT_TAP)
    try:
        replay(pipeline, events, out_dir)
    finally:
        tap.close()


# ---- plots ---------------------------------------------------------------------------------------
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mark(ax: Any, data: ReportData, channels: set[str]) -> None:
    seen: set[str] = set()
    for marker in data.markers:
        if marker.channel not in channels:
            continue
        colour, label = MARKERS[marker.action]
        ax.axvline(
            marker.at, color=colour, linestyle="--", linewidth=1,
            label=label if label not in seen else None,
        )
        seen.add(label)
        ax.annotate(
            marker.channel, (marker.at, 1.0), xycoords=("data", "axes fraction"),
            rotation=90, va="top", ha="right", fontsize=7, color=colour,
        )


def plot_channels(data: ReportData, path: Path) -> Path:
    """Provider error rate and p95 latency per channel, failovers and restores marked."""
    plt = _pyplot()
    named = data.interesting_channels()
    fig, (err_ax, lat_ax) = plt.subplots(2, 1, figsize=(14, 8), sharex=True)
    for name, series in sorted(data.channels.items()):
        style: dict[str, Any] = (
            {"label": name, "linewidth": 1.5}
            if name in named
            else {"color": "0.8", "linewidth": 0.6}
        )
        err_ax.plot(series.times, series.error_rate, **style)
        latency = [v if v is not None else float("nan") for v in series.latency_p95_ms]
        lat_ax.plot(series.times, latency, **style)
    err_ax.axhline(ERROR_RATE_LINE, color="black", linestyle=":", label="5% alert line")
    lat_ax.axhline(LATENCY_P95_LINE_MS, color="black", linestyle=":", label="800 ms line")
    marked = set(named) or set(data.channels)
    _mark(err_ax, data, marked)
    _mark(lat_ax, data, marked)
    err_ax.set_ylabel(f"provider error rate ({WINDOW})")
    err_ax.yaxis.set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0))
    lat_ax.set_ylabel(f"latency p95 ({WINDOW}), ms (log)")
    if any(v for s in data.channels.values() for v in s.latency_p95_ms):
        lat_ax.set_yscale("log")
    lat_ax.set_xlabel("event time (UTC); grey: channels without trouble")
    err_ax.set_title("Channels: provider error rate and latency, failovers and restores")
    for ax in (err_ax, lat_ax):
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        ax.grid(alpha=0.3)
    if not data.channels:
        err_ax.text(0.5, 0.5, "no channel.health snapshots", transform=err_ax.transAxes,
                    ha="center")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_settlement(data: ReportData, path: Path) -> Path:
    """Settlement delay of each settled transaction by channel, with the 4 h line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(14, 5))
    for channel, points in sorted(data.settlements.items()):
        times = [at for at, _ in points]
        delays = [delay for _, delay in points]
        ax.scatter(times, delays, s=6, label=f"{channel} ({len(points)})", alpha=0.7)
    ax.axhline(SETTLEMENT_DELAY_LINE_H, color="black", linestyle=":", label="4 h alert line")
    ax.set_ylabel("settlement delay, hours")
    ax.set_xlabel("settlement time (event time, UTC)")
    ax.set_title("Settlement delay by channel")
    if not data.settlements:
        ax.text(0.5, 0.5, "no settled callbacks matched a transaction in this replay\n"
                "(are the callback secrets configured? PANTAU_SECRETS_FILE)",
                transform=ax.transAxes, ha="center", va="center")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_decisions(data: ReportData, path: Path) -> Path:
    """Decisions per bucket by action, and the IDR amount reviewed and declined."""
    plt = _pyplot()
    fig, (count_ax, idr_ax) = plt.subplots(2, 1, figsize=(14, 7), sharex=True)
    buckets = sorted({b for counts in data.decisions.values() for b in counts})
    for action, colour in ACTION_COLOURS.items():
        counts = data.decisions.get(action, {})
        count_ax.plot(buckets, [counts.get(b, 0) for b in buckets], label=action, color=colour,
                      marker="o", markersize=3)
    if buckets:
        count_ax.set_yscale("symlog", linthresh=1)
    for action, label in AMOUNT_LABELS.items():
        amounts = data.amounts.get(action, {})
        idr_ax.plot(buckets, [amounts.get(b, 0.0) for b in buckets], label=label,
                    color=ACTION_COLOURS[action], marker=".")
    count_ax.set_ylabel(f"decisions per {int(BUCKET.total_seconds() // 60)} min (log)")
    count_ax.set_title("Fraud decisions over time")
    idr_ax.set_ylabel("amount, IDR")
    idr_ax.set_xlabel("decision time (event time, UTC)")
    for ax in (count_ax, idr_ax):
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        ax.grid(alpha=0.3)
    if not buckets:
        count_ax.text(0.5, 0.5, "no fraud decisions", transform=count_ax.transAxes, ha="center")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot(data: ReportData, out_dir: Path) -> list[Path]:
    """Every plot of a report into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        plot_channels(data, out_dir / "channels.png"),
        plot_settlement(data, out_dir / "settlement_delay.png"),
        plot_decisions(data, out_dir / "decisions.png"),
    ]


def render_report(pipeline: Pipeline, events: Path, out_dir: Path) -> list[Path]:
    """Replay events into a temporary directory and plot from its output files."""
    with tempfile.TemporaryDirectory(prefix="pantau-report-") as tmp:
        replay_dir = Path(tmp)
        replay_outputs(pipeline, events, replay_dir)
        data = read_outputs(replay_dir)
    return plot(data, out_dir)
