"""`make model`: the shipped default fraud model, trained on simulated history (reproducible)."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from models.artifact import DEFAULT_DIR

SEED = 20261120
DAYS = 21  # 7-day label delay gap + a holdout of a quarter of the span
RATE = 0.03  # transactions per second (daily mean): about 2,600 a day
SCENARIOS = ("card-testing", "account-takeover")


def simulate(events: Path, labels: Path) -> None:
    """Write the simulated history and its ground-truth labels (reported a week later)."""
    from streams.sim_output import write_file
    from streams.simulator import DEFAULT_START, SimEvent, generate

    end = (DEFAULT_START + timedelta(days=DAYS)).timestamp()

    def until_end() -> Iterator[SimEvent]:
        for event in generate(
            scenarios=SCENARIOS, seed=SEED, duration=timedelta(hours=24), tx_per_second=RATE,
            customers=1500, merchants=30, loop=True,
        ):  # fmt: skip
            if event.at > end:
                return
            yield event

    write_file(until_end(), events, labels=labels)


def main(out_dir: Path = DEFAULT_DIR) -> int:
    """Simulate, train (logistic regression), write the artifact and model card into out_dir."""
    from models.training import train

    with tempfile.TemporaryDirectory() as tmp:
        events, labels = Path(tmp) / "events.jsonl", Path(tmp) / "labels.jsonl"
        simulate(events, labels)
        card = train(events, labels, out_dir, kind="logreg")
    h = card["holdout"]
    print(
        f"{card['model_version']}: holdout AUC ROC {h['auc_roc']:.4f}, average precision "
        f"{h['average_precision']:.4f}; wrote {out_dir}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR))
