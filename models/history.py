"""Labelled history: an events file replayed through the feature core in event-time order."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from models.features import FeatureStore, partition_of
from models.inputs import FraudLabel, Transaction
from streams.core import Record
from streams.topics import Topics


class HistoryError(Exception):
    """An input file that cannot be used (missing, unreadable)."""


@dataclass
class Batch:
    """Consecutive transactions with their feature rows, computed as replay computes them."""

    transactions: list[Transaction]
    rows: list[dict[str, Any]]


@dataclass
class History:
    """What reading the files found: fraud labels by transaction id, skipped lines, data hash."""

    labels: dict[str, FraudLabel] = field(default_factory=dict)
    transactions: int = 0
    skipped: int = 0
    data_hash: str = ""


def file_hash(*paths: Path | None) -> str:
    """SHA-256 over the files' bytes, in order (the model card's data hash)."""
    digest = hashlib.sha256()
    for path in paths:
        if path is None:
            continue
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 16), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _records(paths: Sequence[Path], topics: Topics) -> list[tuple[datetime, int, int, Record]]:
    from streams.replay import ReplayInputError, read_events

    merged: list[tuple[datetime, int, int, Record]] = []
    for index, path in enumerate(paths):
        try:
            good, _bad = read_events(path, topics)
        except ReplayInputError as exc:
            raise HistoryError(str(exc)) from None
        merged.extend((at, index, line, record) for at, line, record in good)
    merged.sort(key=lambda item: (item[0], item[1], item[2]))
    return merged


def read_labels(paths: Sequence[Path], topics: Topics | None = None) -> dict[str, FraudLabel]:
    """Every fraud label in the files, by transaction id (the latest report wins)."""
    topics = topics or Topics()
    out: dict[str, FraudLabel] = {}
    for _, _, _, record in _records(paths, topics):
        if record.topic != topics.labels:
            continue
        try:
            label = FraudLabel.model_validate_json(record.value)
        except ValidationError:
            continue
        out[label.transaction_id] = label
    return out


def replay_history(
    events: Path,
    *,
    store: FeatureStore | None = None,
    batch_size: int = 500,
    history: History | None = None,
    progress: Callable[[int, int], None] | None = None,
    partitions: int | None = None,
) -> Iterator[Batch]:
    """Yield batches of transactions and their features; the file's fraud.labels reach the store
    at their reported_at, exactly as replay and live scoring see them. `partitions`: keep
    device, card, IP and merchant state per partition of that many (PANTAU_ENTITY_SCOPE)."""
    topics = Topics()
    records = _records([events], topics)
    store = store if store is not None else FeatureStore()
    history = history if history is not None else History()
    history.data_hash = file_hash(events)
    pending: list[Transaction] = []
    total = len(records)

    def flush() -> Batch:
        if partitions is None:
            rows = [store.apply(tx) for tx in pending]
        else:
            rows = [store.apply(tx, partition_of(tx.customer_id, partitions)) for tx in pending]
        batch = Batch(list(pending), rows)
        pending.clear()
        return batch

    for done, (_, _, _, record) in enumerate(records, start=1):
        if record.topic == topics.transactions:
            try:
                tx = Transaction.model_validate_json(record.value)
            except ValidationError:
                history.skipped += 1
                continue
            pending.append(tx)
            history.transactions += 1
            if len(pending) >= batch_size:
                yield flush()
        elif record.topic == topics.labels:
            try:
                label = FraudLabel.model_validate_json(record.value)
            except ValidationError:
                history.skipped += 1
                continue
            if pending:
                yield flush()
            store.add_label(label)
            store.expire_labels(label.reported_at)
            history.labels[label.transaction_id] = label
        if progress is not None and done % 1000 == 0:
            progress(done, total)
    if pending:
        yield flush()
    if progress is not None:
        progress(total, total)
