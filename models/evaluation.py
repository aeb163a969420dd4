"""Measuring a fraud model: AUC ROC, average precision, precision@100 per day, curves as PNG."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.features import WIB


def precision_at_k_per_day(
    scores: np.ndarray, labels: np.ndarray, times: Sequence[datetime], k: int = 100
) -> dict[str, float]:
    """WIB day → the share of fraud among that day's k highest scores (the Handbook's card
    precision@k, per attempt here): what an analyst team reviewing k a day would find."""
    by_day: dict[str, list[int]] = defaultdict(list)
    for i, at in enumerate(times):
        by_day[at.astimezone(WIB).date().isoformat()].append(i)
    out = {}
    for day, index in sorted(by_day.items()):
        idx = np.asarray(index)
        top = idx[np.argsort(-scores[idx], kind="stable")[:k]]
        out[day] = float(labels[top].mean()) if len(top) else 0.0
    return out


def measure(scores: np.ndarray, labels: np.ndarray, times: Sequence[datetime]) -> dict[str, Any]:
    """The model card's figures for one labelled set."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    positives = int(labels.sum())
    result: dict[str, Any] = {
        "events": len(labels),
        "frauds": positives,
        "fraud_rate": float(positives / len(labels)) if len(labels) else 0.0,
    }
    if 0 < positives < len(labels):
        result["auc_roc"] = float(roc_auc_score(labels, scores))
        result["average_precision"] = float(average_precision_score(labels, scores))
    else:
        result["auc_roc"] = None
        result["average_precision"] = None
    per_day = precision_at_k_per_day(scores, labels, times)
    result["precision_at_100_per_day"] = per_day
    result["precision_at_100_mean"] = float(np.mean(list(per_day.values()))) if per_day else None
    return result


def plot_curves(scores: np.ndarray, labels: np.ndarray, out_dir: Path, title: str) -> list[Path]:
    """roc.png and pr.png (matplotlib, Agg backend) into out_dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if labels.sum() == 0 or labels.sum() == len(labels):
        return written
    fpr, tpr, _ = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=80)
    ax.plot(fpr, tpr, label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC - {title}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = out_dir / "roc.png"
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    written.append(path)
    precision, recall, _ = precision_recall_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=80)
    ax.plot(recall, precision, label="model")
    ax.axhline(labels.mean(), linestyle="--", color="grey", label="fraud rate")
    ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall - {title}")
    ax.legend(loc="lower left")
    fig.tight_layout()
    path = out_dir / "pr.png"
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    written.append(path)
    return written
