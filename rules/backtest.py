"""`pantau rules backtest`: a candidate pack's decisions against the active pack's on history."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from models.artifact import Model
from models.features import WIB, FeatureStore
from models.history import History, read_labels, replay_history
from models.outputs import Action, FraudDecision
from rules.engine import CompiledPack


@dataclass
class Tally:
    """Decisions of one pack over some attempts."""

    attempts: int = 0
    reviewed: int = 0
    declined: int = 0
    amount_reviewed: Decimal = Decimal(0)
    amount_declined: Decimal = Decimal(0)
    true_positives: int = 0  # acted on (review or decline) and labelled fraud
    frauds: int = 0

    def add(self, decision: FraudDecision, amount: Decimal, fraud: bool) -> None:
        self.attempts += 1
        acted = decision.action != Action.APPROVE
        if decision.action == Action.REVIEW:
            self.reviewed += 1
            self.amount_reviewed += amount
        elif decision.action == Action.DECLINE:
            self.declined += 1
            self.amount_declined += amount
        self.frauds += int(fraud)
        self.true_positives += int(acted and fraud)

    @property
    def precision(self) -> float | None:
        acted = self.reviewed + self.declined
        return self.true_positives / acted if acted else None

    @property
    def recall(self) -> float | None:
        return self.true_positives / self.frauds if self.frauds else None


@dataclass
class RuleTally:
    """Hits of one rule under each pack (shadow hits included, marked by mode)."""

    mode: str = "enabled"
    candidate: int = 0
    active: int = 0
    candidate_frauds: int = 0


@dataclass
class BacktestResult:
    """Everything the table and CSV show."""

    candidate: str
    active: str
    labelled: bool
    total: dict[str, Tally] = field(
        default_factory=lambda: {"candidate": Tally(), "active": Tally()}
    )
    days: dict[str, dict[str, Tally]] = field(default_factory=dict)
    rules: dict[str, RuleTally] = field(default_factory=dict)
    changed: int = 0
    changes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    history: History = field(default_factory=History)


def backtest(
    candidate: CompiledPack,
    active: CompiledPack,
    events: Path,
    *,
    labels: Path | None = None,
    model: Model | None = None,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 500,
    partitions: int | None = None,
) -> BacktestResult:
    """Replay EVENTS through the feature core once; decide every attempt under both packs
    (`partitions`: entity state per partition, as live with PANTAU_ENTITY_SCOPE=partition)."""
    from streams.fraud import FraudScorer

    result = BacktestResult(candidate.label, active.label, labelled=labels is not None)
    truth = read_labels([labels]) if labels is not None else None
    scorer = FraudScorer(active, model, FeatureStore())
    for compiled, side in ((candidate, "candidate"), (active, "active")):
        for rule in compiled.rules:
            tally = result.rules.setdefault(rule.rule.id, RuleTally(mode=rule.rule.mode.value))
            if side == "candidate":
                tally.mode = rule.rule.mode.value
    for batch in replay_history(
        events, store=scorer.store, batch_size=batch_size, history=result.history,
        progress=progress, partitions=partitions,
    ):  # fmt: skip
        txs = batch.transactions
        scores = scorer.model_scores(batch.rows)
        new = scorer.decide_rows(txs, batch.rows, candidate, scores)
        old = scorer.decide_rows(txs, batch.rows, active, scores)
        labels_now = truth if truth is not None else result.history.labels
        for tx, a, b in zip(txs, new, old, strict=True):
            label = labels_now.get(tx.transaction_id)
            fraud = bool(label is not None and label.fraud)
            day = tx.created_at.astimezone(WIB).date().isoformat()
            per_day = result.days.setdefault(day, {"candidate": Tally(), "active": Tally()})
            for side, decision in (("candidate", a), ("active", b)):
                result.total[side].add(decision, tx.amount, fraud)
                per_day[side].add(decision, tx.amount, fraud)
            if a.action != b.action:
                result.changed += 1
                result.changes[f"{b.action.value}→{a.action.value}"] += 1
            for hit in a.rule_hits:
                rt = result.rules[hit.rule_id]
                rt.candidate += 1
                rt.candidate_frauds += int(fraud)
            for hit in b.rule_hits:
                result.rules[hit.rule_id].active += 1
    if truth is None:
        result.labelled = bool(result.history.labels)
    return result


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def rows_for_csv(result: BacktestResult) -> list[dict[str, Any]]:
    """One row per (scope, key, pack): total, each day, each rule."""
    out: list[dict[str, Any]] = []

    def tally_row(scope: str, key: str, side: str, tally: Tally) -> dict[str, Any]:
        return {
            "scope": scope, "key": key,
            "pack": result.candidate if side == "candidate" else result.active,
            "attempts": tally.attempts, "reviewed": tally.reviewed, "declined": tally.declined,
            "amount_reviewed_idr": str(tally.amount_reviewed),
            "amount_declined_idr": str(tally.amount_declined),
            "precision": _pct(tally.precision) if result.labelled else "",
            "recall": _pct(tally.recall) if result.labelled else "",
            "hits": "", "hit_frauds": "", "mode": "",
        }  # fmt: skip

    for side in ("candidate", "active"):
        out.append(tally_row("total", "all", side, result.total[side]))
    for day, sides in sorted(result.days.items()):
        for side in ("candidate", "active"):
            out.append(tally_row("day", day, side, sides[side]))
    for rule_id, rt in sorted(result.rules.items()):
        for side, hits in (("candidate", rt.candidate), ("active", rt.active)):
            row: dict[str, Any] = {k: "" for k in out[0]} if out else {}
            row.update(
                scope="rule", key=rule_id,
                pack=result.candidate if side == "candidate" else result.active,
                hits=hits, mode=rt.mode,
                hit_frauds=rt.candidate_frauds if side == "candidate" and result.labelled else "",
            )  # fmt: skip
            out.append(row)
    return out


def write_csv(result: BacktestResult, path: Path) -> None:
    """The backtest as CSV (one row per scope, key and pack)."""
    rows = rows_for_csv(result)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def render(result: BacktestResult) -> list[Any]:
    """Rich tables: summary, per rule, per day."""
    from rich.table import Table

    def idr(value: Decimal) -> str:
        return f"{value:,.0f}"

    summary = Table(title=f"Backtest: {result.candidate} (candidate) vs {result.active} (active)")
    summary.add_column("")
    summary.add_column(result.candidate, justify="right")
    summary.add_column(result.active, justify="right")
    c, a = result.total["candidate"], result.total["active"]
    summary.add_row("attempts", str(c.attempts), str(a.attempts))
    summary.add_row("reviewed", str(c.reviewed), str(a.reviewed))
    summary.add_row("declined", str(c.declined), str(a.declined))
    summary.add_row("IDR reviewed", idr(c.amount_reviewed), idr(a.amount_reviewed))
    summary.add_row("IDR declined", idr(c.amount_declined), idr(a.amount_declined))
    if result.labelled:
        summary.add_row("precision", _pct(c.precision), _pct(a.precision))
        summary.add_row("recall", _pct(c.recall), _pct(a.recall))
    changes = ", ".join(f"{k}: {v}" for k, v in sorted(result.changes.items())) or "none"
    summary.add_row("decisions changed", str(result.changed), changes)

    rules = Table(title="Rule hits")
    for col in ("rule", "mode", result.candidate, result.active):
        rules.add_column(col, justify="right" if col not in {"rule", "mode"} else "left")
    if result.labelled:
        rules.add_column("hit precision", justify="right")
    for rule_id, rt in sorted(result.rules.items()):
        cells = [rule_id, rt.mode, str(rt.candidate), str(rt.active)]
        if result.labelled:
            cells.append(_pct(rt.candidate_frauds / rt.candidate if rt.candidate else None))
        rules.add_row(*cells)

    days = Table(title=f"Per day (WIB): {result.candidate} / {result.active}")
    days.add_column("day")
    days.add_column("attempts", justify="right")
    days.add_column("acted", justify="right")
    days.add_column("IDR declined", justify="right")
    if result.labelled:
        days.add_column("recall", justify="right")

    def millions(value: Decimal) -> str:
        return f"{value / 1_000_000:,.1f}M"

    for day, sides in sorted(result.days.items()):
        cs, as_ = sides["candidate"], sides["active"]
        cells = [
            day,
            str(cs.attempts),
            f"{cs.reviewed + cs.declined} / {as_.reviewed + as_.declined}",
            f"{millions(cs.amount_declined)} / {millions(as_.amount_declined)}",
        ]
        if result.labelled:
            cells.append(f"{_pct(cs.recall)} / {_pct(as_.recall)}")
        days.add_row(*cells)
    return [summary, rules, days]
