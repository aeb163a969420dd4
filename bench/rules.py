"""bench.rules: µs/event for a 50-rule pack over micro-batches of real feature rows."""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from typing import Any

from bench import Report

TARGET_US = 2.0
RULES = 50


def fifty_rule_pack(n: int = RULES) -> Any:
    """The default pack's rules, then variations of them (thresholds nudged) up to n rules."""
    from rules.pack import default_pack

    base = default_pack()
    rules = list(base.rules)
    while len(rules) < n:
        rule = base.rules[len(rules) % len(base.rules)]
        # A different threshold per copy, so no two rules are the same expression.
        bump = len(rules) // len(base.rules)
        expression = _nudge(rule.expression, bump)
        rules.append(
            rule.model_copy(
                update={
                    "id": f"{rule.id}_v{len(rules)}",
                    "expression": expression,
                    "examples": rule.examples.model_copy(update={"match": [], "no_match": []}),
                }
            )
        )
    return base.model_copy(update={"rules": rules[:n], "version": base.version + 1000})


def _nudge(expression: str, bump: int) -> str:
    """Raise each `>= <int>` threshold of an expression by `bump`."""
    import re

    nudged = re.sub(r">= (\d+)\b(?!\.)", lambda m: f">= {int(m.group(1)) + bump}", expression)
    if nudged == expression:  # no integer threshold: add an amount floor instead
        nudged = f"({expression.strip()}) && amount >= {bump * 1000}.0"
    return nudged


def feature_rows(count: int, seed: int = 3) -> list[dict[str, Any]]:
    """Feature rows of simulated transactions, as the fraud scorer computes them."""
    from models.features import FeatureStore
    from models.inputs import Transaction
    from streams.simulator import generate
    from streams.topics import Topics

    topic = Topics().transactions
    store = FeatureStore()
    rows: list[dict[str, Any]] = []
    hours = max(0.05, count / 20.0 / 3600 * 2)
    for event in generate(
        duration=timedelta(hours=hours), tx_per_second=20.0, seed=seed, diurnal=False
    ):
        if event.topic != topic:
            continue
        try:
            tx = Transaction.model_validate(event.value)
        except ValueError:
            continue
        rows.append(store.apply(tx))
        if len(rows) >= count:
            break
    return rows


def run(*, events: int = 20_000, batch: int = 500, repeat: int = 3) -> Report:
    """Time CompiledPack.evaluate (columns + 50 rules) over micro-batches."""
    from rules.engine import CompiledPack, batch_columns

    report = Report("rules")
    pack = CompiledPack(fifty_rule_pack())
    rows = feature_rows(min(events, 5_000))
    while len(rows) < events:
        rows = rows + rows[: events - len(rows)]
    batches = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    pack.evaluate(batches[0])  # warm up

    def timed(fn: Any) -> float:
        best = float("inf")
        for _ in range(repeat):
            started = time.process_time()
            for b in batches:
                fn(b)
            best = min(best, time.process_time() - started)
        return best / len(rows) * 1e6

    total = timed(pack.evaluate)
    cols = timed(lambda b: batch_columns(b, pack.names))
    hits = pack.evaluate(rows[:batch])
    reference = pack.evaluate_rows(rows[:100])
    assert (hits[:, :100] == reference).all(), "numpy and CEL disagree"
    started = time.process_time()
    pack.evaluate_rows(rows[:200])
    cel = (time.process_time() - started) / 200 * 1e6
    report.add(
        f"{len(pack.rules)} rules, micro-batches of {batch} (columns + rules)",
        total,
        "µs/event",
        target=TARGET_US,
        higher=False,
        note=f"{len(rows):,} feature rows, best of {repeat}, CPU time; "
        f"{len(pack.names)} feature names read",
    )
    report.add("of which building the typed columns", cols, "µs/event", note="")
    report.add("the same rules through CEL row by row (reference)", cel, "µs/event")
    report.notes.append(f"numpy path / CEL row by row: {cel / total:.0f}× faster, same hits")
    fallbacks = [r.rule.id for r in pack.rules if r.expression.vector is None]
    if fallbacks:
        report.notes.append(f"rules evaluated row by row (not vectorised): {fallbacks}")
    return report


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(prog="python -m bench.rules", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args(argv)
    report = run(events=args.events, batch=args.batch)
    report.print()
    return report


if __name__ == "__main__":
    main()
