"""`python -m bench` (`make bench`): every bench in turn, then bench/RESULTS.md."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from bench import Report, results_markdown

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def main(argv: list[str] | None = None) -> list[Report]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (proves the harness)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the Markdown table goes")
    parser.add_argument("--skip", action="append", default=[], help="a bench to leave out")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    reports: list[Report] = []
    quick = args.quick
    if "rules" not in args.skip:
        from bench import rules

        reports.append(rules.run(events=2_000 if quick else 20_000, batch=500))
        reports[-1].print()
    if "state" not in args.skip:
        from bench import state

        reports.append(state.run(small=2_000, large=4_000) if quick else state.run())
        reports[-1].print()
    if "store" not in args.skip:
        from bench import store

        reports.append(store.run(customers=2_000) if quick else store.run())
        reports[-1].print()
    if "replay" not in args.skip:
        from bench import replay

        reports.append(replay.run(hours=0.05, rate=5.0) if quick else replay.run())
        reports[-1].print()
    if "live" not in args.skip:
        from bench import live

        reports.append(live.run(events=3_000, max_phase_s=30, latency_s=2) if quick else live.run())
        reports[-1].print()
    args.out.write_text(results_markdown(reports, started), encoding="utf-8")
    print(f"wrote {args.out}")
    return reports


if __name__ == "__main__":
    main()
