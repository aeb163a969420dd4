"""The pure core's frame: records in, outputs out, stages that consume topics, an event clock."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel


@dataclass(slots=True)
class Record:
    """One message as a stage receives it: from Kafka (partition, offset) or a file (line)."""

    topic: str
    value: bytes
    key: bytes | None = None
    partition: int | None = None
    offset: int | None = None
    line: int | None = None


@dataclass(slots=True)
class Out:
    """One message a stage wants sent: a JSON-ready value (or a model), its key and, rarely, the
    partition it must go to (None: the producer's partitioner decides by key)."""

    topic: str
    key: str | None
    value: dict[str, Any]
    partition: int | None = None

    @classmethod
    def of(cls, topic: str, key: str | None, model: BaseModel) -> Out:
        """An output from a contract model, serialised as the topic will carry it."""
        return cls(topic, key, model.model_dump(mode="json"))


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def by_partition(records: Sequence[Record]) -> dict[int | None, list[Record]]:
    """Records grouped by partition, each group in its original order."""
    groups: dict[int | None, list[Record]] = {}
    for record in records:
        groups.setdefault(record.partition, []).append(record)
    return groups


@dataclass(slots=True)
class EventClock:
    """Event time as a stage has seen it: the latest event time and the watermark behind it."""

    lateness: timedelta = timedelta(seconds=30)
    latest: datetime = EPOCH
    _seen: bool = field(default=False, repr=False)

    def observe(self, at: datetime) -> None:
        """Move the clock forward to an event's time (never backwards)."""
        if at > self.latest:
            self.latest = at
        self._seen = True

    @property
    def started(self) -> bool:
        """True once the clock has seen an event."""
        return self._seen

    @property
    def watermark(self) -> datetime:
        """Event time up to which the stage treats its input as complete."""
        return self.latest - self.lateness


class Stage(ABC):
    """A pure processing step: consumes records of some topics, returns outputs.

    The same instance runs live (a Faust agent per consumed topic calls `process` with each
    micro-batch, then `tick`) and in replay (the driver calls them in event-time order). State lives
    in plain mappings the stage owns; nothing here imports faust.
    """

    name: str = "stage"
    # A broadcast stage sees every partition of its topics on every worker (rule packs, labels
    # summaries): live, it reads with its own consumer from the beginning, outside the group.
    broadcast: bool = False

    @property
    @abstractmethod
    def consumes(self) -> tuple[str, ...]:
        """Topic names this stage reads."""

    @abstractmethod
    def process(self, records: Sequence[Record]) -> list[Out]:
        """Handle one micro-batch of records (in order) and return what to send."""

    def tick(self) -> list[Out]:
        """Emit what is due by the stage's own event-time watermark (snapshots, timeouts)."""
        return []

    def close(self) -> list[Out]:
        """Flush at the end of a replay (everything pending is due); default: a final tick."""
        return self.tick()
