"""bench.replay: the full pipeline over a simulated file in one process: events/s, stage shares."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import Report

TARGET_EVENTS_S = 100_000.0


def bench_settings() -> Any:
    """Default settings that trust the simulator's callbacks (like `simulate --secrets-file`)."""
    from streams.settings import Settings
    from streams.sim_callbacks import sim_settings_overrides

    return Settings(**sim_settings_overrides())


def simulate_file(path: Path, *, hours: float, rate: float, seed: int = 7) -> int:
    """Write a simulated replay file (all scenarios' traffic mix); returns its line count."""
    from streams.sim_output import replay_line
    from streams.simulator import generate

    n = 0
    with path.open("wb") as fh:
        for event in generate(duration=timedelta(hours=hours), tx_per_second=rate, seed=seed):
            fh.write(replay_line(event))
            n += 1
    return n


class StageTimer:
    """Exclusive time per stage (process, tick, close) and per payments component."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.running: set[str] = set()  # labels being timed (a stage's process calls its tick)

    def wrap(self, owner: Any, method: str, label: str) -> None:
        inner: Callable[..., Any] = getattr(owner, method)
        seconds = self.seconds
        running = self.running

        def timed(*args: Any, **kwargs: Any) -> Any:
            if label in running:
                return inner(*args, **kwargs)
            running.add(label)
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                seconds[label] += time.perf_counter() - started
                running.discard(label)

        setattr(owner, method, timed)

    def instrument(self, pipeline: Any) -> None:
        for stage in pipeline.stages:
            for method in ("process", "tick", "close"):
                self.wrap(stage, method, stage.name)
            if stage.name == "payments":
                # Components the payments stage calls: reported apart, subtracted from payments.
                if getattr(stage, "fraud", None) is not None:
                    self.wrap(stage.fraud, "score", "payments: fraud scoring")
                if getattr(stage, "vat", None) is not None:
                    self.wrap(stage.vat, "tag", "payments: VAT")
                for observer in stage.observers:
                    name = f"payments: {type(observer).__name__}"
                    self.wrap(observer, "observe", name)
                    self.wrap(observer, "flush", name)

    def shares(self, total: float) -> list[tuple[str, float]]:
        parts = dict(self.seconds)
        inner = sum(v for k, v in parts.items() if k.startswith("payments: "))
        if "payments" in parts:
            parts["payments: decode and enrich"] = parts.pop("payments") - inner
        # What no stage timer saw (reading, sorting, routing, writing), never below zero.
        parts["driver (read, sort, route, write)"] = max(0.0, total - sum(parts.values()))
        return sorted(((k, v / total) for k, v in parts.items()), key=lambda kv: -kv[1])


def run(*, hours: float = 1.0, rate: float = 10.0, work: Path | None = None) -> Report:
    """Simulate `hours` at `rate` transactions/s, replay it through the full pipeline, report."""
    from streams.pipeline import build_pipeline
    from streams.replay import replay

    report = Report("replay")
    with tempfile.TemporaryDirectory() as tmp:
        base = work or Path(tmp)
        events = base / "events.jsonl"
        lines = simulate_file(events, hours=hours, rate=rate)
        pipeline = build_pipeline(bench_settings())
        timer = StageTimer()
        timer.instrument(pipeline)
        from streams.gctune import tuned_gc

        with tuned_gc():  # as `pantau replay` runs
            cpu0, wall0 = time.process_time(), time.perf_counter()
            result = replay(pipeline, events, base / "out")
            wall = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0
    report.add(
        "replay, full pipeline, one process",
        result.records / wall,
        "events/s",
        target=TARGET_EVENTS_S,
        note=f"{lines:,} events ({hours:g} h simulated at {rate:g} tx/s) in {wall:.1f} s wall",
    )
    report.add(
        "replay per CPU second (the same run)",
        result.records / cpu,
        "events/s",
        note="CPU time of this process; the wall figure includes other processes' share",
    )
    shares = ", ".join(f"{name} {share:.0%}" for name, share in timer.shares(wall))
    report.notes.append(f"share of replay wall time: {shares}")
    report.notes.append("outputs: " + ", ".join(f"{k} {v:,}" for k, v in result.written.items()))
    return report


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours (default 1)")
    parser.add_argument("--rate", type=float, default=10.0, help="mean transactions/s simulated")
    args = parser.parse_args(argv)
    report = run(hours=args.hours, rate=args.rate)
    report.print()
    return report


if __name__ == "__main__":
    main()
