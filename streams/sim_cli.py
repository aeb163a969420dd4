"""The work behind `pantau simulate`: parse its options, run the simulator, show progress."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from pathlib import Path

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?"
                       r"(?:(\d+(?:\.\d+)?)s)?$")  # fmt: skip


def parse_duration(text: str, *, allow_zero: bool = False) -> timedelta:
    """'2h', '90m', '1h30m', '45s', '1d' or plain seconds; ValueError when it is none of them."""
    text = text.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        m = _DURATION.match(text)
        if not text or m is None or not any(m.groups()):
            raise ValueError(f"duration {text!r}: use forms like 2h, 90m, 1h30m, 45s") from None
        d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        seconds = d * 86400 + h * 3600 + mi * 60 + s
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"duration {text!r}: must be positive")
    return timedelta(seconds=seconds)


def parse_start(text: str) -> datetime:
    """An ISO-8601 time with its offset (a trailing Z works); naive times are refused."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--start {text!r}: not an ISO-8601 time") from None
    if value.tzinfo is None:
        raise ValueError(f"--start {text!r}: give the offset, e.g. 2026-11-21T10:00:00+07:00")
    return value


def write_secrets_file(path: Path) -> None:
    """The simulator's callback secrets and allowlists as a PANTAU_SECRETS_FILE (YAML)."""
    import yaml

    from streams.sim_callbacks import sim_settings_overrides

    text = "# Simulator callback secrets (test values): PANTAU_SECRETS_FILE=<this file>\n"
    path.write_text(text + yaml.safe_dump(sim_settings_overrides(), sort_keys=True), "utf-8")


def run_simulate(
    *,
    out: Path | None,
    labels: Path | None,
    scenarios: list[str],
    seed: int,
    duration: str,
    rate: float,
    start: str | None,
    customers: int,
    merchants: int,
    invalid_rate: float,
    diurnal: bool,
    broker: str | None,
    speed: float | None,
    loop: bool,
    quiet: bool,
    secrets_file: Path | None = None,
    label_delay: str | None = None,
) -> None:
    """Generate the traffic and write it to a file or produce it to Kafka; bad options exit 2."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from streams.cli import err, usage_error
    from streams.scenarios import SCENARIOS, UnknownScenarioError, resolve
    from streams.sim_output import SimSummary, produce, write_file
    from streams.simulator import DEFAULT_START, generate

    if out is None and broker is None:
        usage_error("simulate: give --out FILE (replay format) or --broker URL")
    if labels is not None and out is None:
        usage_error("simulate: --labels needs --out")
    if label_delay is not None and labels is None:
        usage_error("simulate: --label-delay only with --labels")
    if loop and broker is None:
        usage_error("simulate: --loop only with --broker (a file must end)")
    if speed is not None and broker is None:
        usage_error("simulate: --speed only with --broker")
    for label, path in (("--out", out), ("--labels", labels), ("--secrets-file", secrets_file)):
        if path is not None and not path.parent.exists():
            usage_error(f"{label} {path}: directory {path.parent} does not exist")
    names = [n for raw in scenarios for n in raw.split(",") if n.strip()]
    if "all" in names:
        names = list(SCENARIOS)
    try:
        resolve(names)
        span = parse_duration(duration)
        delay = None if label_delay is None else parse_duration(label_delay, allow_zero=True)
        begin = parse_start(start) if start else DEFAULT_START
    except UnknownScenarioError as exc:
        usage_error(f"--scenario: {exc}")
    except ValueError as exc:
        usage_error(str(exc))
    if secrets_file is not None:
        write_secrets_file(secrets_file)
    settings = None
    if broker is not None:
        from streams.cli import load_settings

        settings = load_settings(broker=broker)
    events = generate(
        scenarios=names,
        seed=seed,
        start=begin,
        duration=span,
        tx_per_second=rate,
        customers=customers,
        merchants=merchants,
        loop=loop,
        invalid_rate=invalid_rate,
        diurnal=diurnal,
        settings=settings,
    )
    total = span.total_seconds()
    t0 = begin.timestamp()
    bar = Progress(
        TextColumn("simulate"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% of event time"),
        TextColumn("{task.fields[events]} events"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=True,
    )

    with bar:
        task = bar.add_task("simulate", total=None if loop else total, events=0)

        def show(summary: SimSummary) -> None:
            done = 0.0 if summary.last_at is None else min(total, summary.last_at - t0)
            bar.update(task, completed=done, events=summary.events)

        if out is not None:
            summary = write_file(events, out, labels=labels, label_delay=delay, progress=show)
        else:
            assert broker is not None and settings is not None
            tail = None if loop else t0 + total
            summary = asyncio.run(
                produce(events, settings.broker, speed=speed, progress=show, paced_until=tail)
            )
    where = str(out) if out is not None else broker
    err.print(f"simulated {summary.events} events into {where}", highlight=False)
    for topic, count in sorted(summary.topics.items()):
        err.print(f"  {topic}: {count}", highlight=False)
    if labels is not None:
        err.print(f"  ground-truth labels: {summary.labels} into {labels}", highlight=False)
