"""`pantau train` / `pantau evaluate`: features by the replay core, a time split with the label
delay as a gap, a scikit-learn classifier, its artifact and its model card."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from models.artifact import load_model, save_model
from models.evaluation import measure, plot_curves
from models.features import MODEL_FEATURES, model_matrix
from models.history import History, file_hash, read_labels, replay_history

Progress = Callable[[int, int], None]


class TrainingError(Exception):
    """Training cannot proceed (no labels, too little history)."""


@dataclass
class Dataset:
    """Feature rows of every transaction attempt in event-time order, with what is known of it."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    history: History = field(default_factory=History)

    def matrix(self, index: np.ndarray | None = None) -> np.ndarray:
        rows = self.rows if index is None else [self.rows[i] for i in index]
        return model_matrix(rows)

    def labels(self, known_by: datetime | None = None) -> np.ndarray:
        """1 for attempts of transactions labelled fraud (by `known_by`, when given)."""
        labels = self.history.labels
        out = np.zeros(len(self.ids), dtype=np.int8)
        for i, tx_id in enumerate(self.ids):
            label = labels.get(tx_id)
            if (
                label is not None
                and label.fraud
                and (known_by is None or label.reported_at <= known_by)
            ):
                out[i] = 1
        return out


def build_dataset(
    events: Path,
    labels: Path | None,
    *,
    progress: Progress | None = None,
    partitions: int | None = None,
) -> Dataset:
    """Run the feature core over the history exactly as replay does; targets from LABELS (or,
    without it, from the events file's own fraud.labels). `partitions`: entity state per
    partition (PANTAU_ENTITY_SCOPE=partition)."""
    data = Dataset()
    batches = replay_history(events, history=data.history, progress=progress, partitions=partitions)
    for batch in batches:
        for tx, row in zip(batch.transactions, batch.rows, strict=True):
            data.rows.append(row)
            data.times.append(tx.created_at)
            data.ids.append(tx.transaction_id)
    if labels is not None:
        # The labels file is the target only; features saw just the events file's own labels.
        data.history.labels = read_labels([labels])
        data.history.data_hash = file_hash(events, labels)
    return data


def label_delay(data: Dataset) -> timedelta:
    """The 90th percentile of label delay (reported_at - the transaction's time), whole days."""
    first: dict[str, datetime] = {}
    for tx_id, at in zip(data.ids, data.times, strict=True):
        first.setdefault(tx_id, at)
    delays = [
        (label.reported_at - first[tx_id]).total_seconds()
        for tx_id, label in data.history.labels.items()
        if tx_id in first
    ]
    if not delays:
        return timedelta(days=7)
    days = float(np.ceil(np.percentile(delays, 90) / 86400))
    return timedelta(days=max(1.0, days))


@dataclass
class Split:
    """Train before `train_end`; a gap of the label delay; test from `test_start`."""

    train: np.ndarray
    test: np.ndarray
    start: datetime
    train_end: datetime
    test_start: datetime
    end: datetime
    gap: timedelta


def time_split(data: Dataset, test_fraction: float = 0.25, gap: timedelta | None = None) -> Split:
    """Split by event time: the last `test_fraction` of the span is the holdout, and the label
    delay before it is left out so training never sees a label the holdout period could not."""
    if not data.times:
        raise TrainingError("no transactions in the events file")
    start, end = data.times[0], data.times[-1]
    span = end - start
    test_start = end - span * test_fraction
    gap = gap if gap is not None else label_delay(data)
    if gap > span * (1 - test_fraction) / 2:
        gap = span * (1 - test_fraction) / 2  # keep at least half the rest for training
    train_end = test_start - gap
    times = np.array([t.timestamp() for t in data.times])
    train = np.flatnonzero(times < train_end.timestamp())
    test = np.flatnonzero(times >= test_start.timestamp())
    return Split(train, test, start, train_end, test_start, end, gap)


def make_estimator(kind: str) -> Any:
    """The classifier: logistic regression (default: as good here, 20x smaller) or histogram
    gradient boosting."""
    if kind == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            max_iter=60, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=40,
            l2_regularization=1.0, early_stopping=False, random_state=0,
        )  # fmt: skip
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        return Pipeline(
            [("scale", StandardScaler()), ("logreg", LogisticRegression(max_iter=500, C=1.0))]
        )
    raise TrainingError(f"unknown model kind {kind!r} (hgb or logreg)")


def importances(estimator: Any, x: np.ndarray, y: np.ndarray, top: int = 15) -> dict[str, float]:
    """Permutation importance (drop in average precision) of the top features on held-out data."""
    from sklearn.inspection import permutation_importance

    if y.sum() == 0 or y.sum() == len(y):
        return {}
    if len(y) > 5000:
        pick = np.random.default_rng(0).choice(len(y), 5000, replace=False)
        x, y = x[pick], y[pick]
        if y.sum() == 0:
            return {}
    found = permutation_importance(
        estimator, x, y, scoring="average_precision", n_repeats=3, random_state=0, n_jobs=1
    )
    order = np.argsort(-found.importances_mean)[:top]
    return {MODEL_FEATURES[i]: round(float(found.importances_mean[i]), 5) for i in order}


def train(
    events: Path,
    labels: Path | None,
    out_dir: Path,
    *,
    kind: str = "logreg",
    test_fraction: float = 0.25,
    gap: timedelta | None = None,
    progress: Progress | None = None,
    data: Dataset | None = None,
    partitions: int | None = None,
) -> dict[str, Any]:
    """Fit on the early history, measure on the later holdout, write artifact and model card."""
    if data is None:
        data = build_dataset(events, labels, progress=progress, partitions=partitions)
    split = time_split(data, test_fraction, gap)
    y_train = data.labels(known_by=split.test_start)[split.train]
    y_test = data.labels()[split.test]
    if y_train.sum() < 10:
        raise TrainingError(
            f"only {int(y_train.sum())} fraud labels in the training window "
            f"{split.start:%Y-%m-%d}..{split.train_end:%Y-%m-%d}: need at least 10"
        )
    x_train = data.matrix(split.train)
    x_test = data.matrix(split.test)
    estimator = make_estimator(kind)
    estimator.fit(x_train, y_train)
    test_times = [data.times[i] for i in split.test]
    scores = estimator.predict_proba(x_test)[:, 1] if len(split.test) else np.zeros(0)
    holdout = measure(scores, y_test, test_times)
    version = f"fraud-{split.train_end:%Y-%m-%d}-{data.history.data_hash[:8]}"
    card: dict[str, Any] = {
        "model_version": version,
        "kind": kind,
        "estimator": type(estimator).__name__,
        "params": {k: v for k, v in estimator.get_params().items() if _plain(v)},
        "data_hash": data.history.data_hash,
        "training_window": {"start": _iso(split.start), "end": _iso(split.train_end)},
        "label_delay_gap_days": round(split.gap.total_seconds() / 86400, 2),
        "holdout_window": {"start": _iso(split.test_start), "end": _iso(split.end)},
        "training": {"events": len(split.train), "frauds": int(y_train.sum())},
        "holdout": holdout,
        "features": list(MODEL_FEATURES),
        "feature_importances": importances(estimator, x_test, y_test),
    }
    import sklearn

    card["sklearn_version"] = sklearn.__version__
    save_model(estimator, out_dir, version, {"data_hash": data.history.data_hash, "kind": kind})
    plot_curves(scores, y_test, out_dir, version)
    write_card(card, out_dir)
    return card


def evaluate(
    model_dir: Path,
    events: Path,
    labels: Path | None,
    *,
    progress: Progress | None = None,
    partitions: int | None = None,
) -> dict[str, Any]:
    """Score every attempt of a labelled history with a model directory and measure it."""
    model = load_model(model_dir)
    data = build_dataset(events, labels, progress=progress, partitions=partitions)
    if not data.rows:
        raise TrainingError("no transactions in the events file")
    scores = np.concatenate(
        [model.predict(data.rows[i : i + 500]) for i in range(0, len(data.rows), 500)]
    )
    result = measure(scores, data.labels(), data.times)
    result["model_version"] = model.version
    result["data_hash"] = data.history.data_hash
    return result


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _iso(at: datetime) -> str:
    from models.common import iso_utc

    return iso_utc(at)


def write_card(card: dict[str, Any], out_dir: Path) -> None:
    """model_card.json and model_card.md."""
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    h = card["holdout"]

    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines = [
        f"# Model card: {card['model_version']}",
        "",
        "Fraud probability of one payment attempt, from the features in docs/fraud.md, computed",
        "by the same code as live scoring and replay. Trained with `pantau train`.",
        "",
        f"- Estimator: {card['estimator']} ({card['kind']}), "
        f"scikit-learn {card['sklearn_version']}",
        f"- Data hash (SHA-256 of events + labels): `{card['data_hash']}`",
        f"- Training window: {card['training_window']['start']} to {card['training_window']['end']}"
        f" ({card['training']['events']} attempts, {card['training']['frauds']} labelled fraud)",
        f"- Gap for the label delay: {card['label_delay_gap_days']} days",
        f"- Holdout window: {card['holdout_window']['start']} to {card['holdout_window']['end']}"
        f" ({h['events']} attempts, {h['frauds']} fraud)",
        "",
        "## Holdout",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| AUC ROC | {fmt(h['auc_roc'])} |",
        f"| average precision | {fmt(h['average_precision'])} |",
        f"| precision@100 per day (mean) | {fmt(h['precision_at_100_mean'])} |",
        "",
        "| day (WIB) | precision@100 |",
        "| --- | --- |",
        *[f"| {d} | {p:.2f} |" for d, p in h["precision_at_100_per_day"].items()],
        "",
        "Curves: roc.png, pr.png.",
        "",
        "## Feature importances (permutation, drop in average precision)",
        "",
        "| feature | importance |",
        "| --- | --- |",
        *[f"| {n} | {v:.4f} |" for n, v in card["feature_importances"].items()],
        "",
        "## Features",
        "",
        ", ".join(card["features"]),
        "",
    ]
    (out_dir / "model_card.md").write_text("\n".join(lines))
