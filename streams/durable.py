"""Stage state that outlives a worker: which keys changed, per source partition, and their bytes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

import orjson

RAW = b"\x01"  # a changelog value holding bytes as they are (JSON values start with { or [)


def encode_value(value: Any) -> bytes:
    """A state value as a changelog carries it: bytes as they are (tagged), anything else JSON."""
    if isinstance(value, bytes | bytearray | memoryview):
        return RAW + bytes(value)
    return orjson.dumps(value)


def decode_value(data: bytes) -> Any:
    """The state value a changelog message holds (inverse of `encode_value`)."""
    if data[:1] == RAW:
        return data[1:]
    return orjson.loads(data)


class TrackedMap(MutableMapping[str, Any]):
    """A mapping (a dict unless another is given) that remembers the keys starting with `prefix`
    written or deleted since the last `drain`: the state a changelog must carry."""

    __slots__ = ("data", "dirty", "prefix")

    def __init__(self, prefix: str, data: MutableMapping[str, Any] | None = None) -> None:
        self.prefix = prefix
        self.data: MutableMapping[str, Any] = data if data is not None else {}
        self.dirty: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        if key.startswith(self.prefix):
            self.dirty.add(key)

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        if key.startswith(self.prefix):
            self.dirty.add(key)

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def drain(self) -> set[str]:
        """The keys changed since the last drain (and forget them)."""
        dirty, self.dirty = self.dirty, set()
        return dirty

    def load(self, items: Iterable[tuple[str, Any]]) -> None:
        """Put restored values in place (None deletes) without marking them changed."""
        data = self.data
        for key, value in items:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value


class PartitionedState:
    """The state of a TrackedMap by source partition, for a changelog per partition.

    Keys starting with `exclusive` (the customer's state: the input is keyed by customer) belong
    to one partition: a worker taking the partition over loads them, one handing it over drops
    them. Every other key (device, card, IP, merchant: seen on every partition) is shared: each
    worker keeps its own, written to the changelog of the partition whose record last changed it,
    and loaded on takeover only where this worker has not changed the key itself (the newest
    written version wins among those restored, and its partition owns it until a record here
    changes it), so a restarted worker starts warm.

    `side`: a second map whose keys name their partition, `<side_prefix><partition>/<rest>` (the
    transactions kept for late labels, "tx:<partition>/<shard>"); they share the changelog, are
    restored into it and dropped with their partition. Keys without a partition (a replay's) are
    not logged.

    `own(key, partition)` is called for each key of the state a record touches; `changes()`
    returns what changed per partition since the last call, and forgets the owner of a deleted
    key."""

    def __init__(
        self,
        state: TrackedMap,
        exclusive: str,
        side: TrackedMap | None = None,
        side_prefix: str = "",
    ) -> None:
        if side is not None and not side_prefix:
            raise ValueError("a side map needs the prefix of its keys")
        self.state = state
        self.exclusive = exclusive
        self.side = side
        self.side_prefix = side_prefix
        self.owner: dict[str, int] = {}  # key → the source partition that last changed it
        self.restored_at: dict[str, int] = {}  # shared key → write time of the version loaded

    def own(self, key: str, partition: int) -> None:
        self.owner[key] = partition

    def side_partition(self, key: str) -> int | None:
        """The partition a side-map key names (None: none, as in a replay)."""
        head, sep, _ = key[len(self.side_prefix) :].partition("/")
        return int(head) if sep and head.isdigit() else None

    def changes(self) -> dict[int, dict[str, Any]]:
        """partition → {key: current value, or None when deleted} changed since the last call;
        keys of no known partition (replay) are left out."""
        out: dict[int, dict[str, Any]] = {}
        owner = self.owner
        data = self.state.data
        restored_at = self.restored_at
        for key in self.state.drain():
            partition = owner.get(key)
            value = data.get(key)
            if partition is not None:
                out.setdefault(partition, {})[key] = value
                if value is None:
                    del owner[key]  # deleted: its owner goes too (the owners stay as many as keys)
            if restored_at:
                restored_at.pop(key, None)  # changed here: this worker's own from now on
        if self.side is not None:
            side = self.side.data
            for key in self.side.drain():
                partition = self.side_partition(key)
                if partition is not None:
                    out.setdefault(partition, {})[key] = side.get(key)
        return out

    def restore(self, partition: int, items: Iterable[tuple[str, Any, int]]) -> int:
        """Load a partition's changelog (oldest first: key, value or None, write time in ms);
        returns how many of its exclusive keys it holds afterwards."""
        latest: dict[str, tuple[Any, int]] = {}
        for key, value, at in items:
            latest[key] = (value, at)
        data = self.state.data
        held = 0
        for key, (value, at) in latest.items():
            if self.side is not None and key.startswith(self.side_prefix):
                if value is None:
                    self.side.data.pop(key, None)
                else:
                    self.side.data[key] = value
            elif key.startswith(self.exclusive):
                if value is None:
                    data.pop(key, None)
                    self.owner.pop(key, None)
                else:
                    data[key] = value
                    self.owner[key] = partition
                    held += 1
            elif value is not None:
                loaded = self.restored_at.get(key)
                if (key not in data and loaded is None) or (loaded is not None and at >= loaded):
                    data[key] = value
                    self.restored_at[key] = at
                    self.owner[key] = partition  # evicted before it changes here: tombstone there
        return held

    def drop(self, partition: int) -> int:
        """Forget the exclusive keys of a partition this worker no longer owns, and its side-map
        keys; returns how many (shared keys stay: they are this worker's view of entities seen
        everywhere)."""
        prefix = self.exclusive
        gone = [k for k, p in self.owner.items() if p == partition and k.startswith(prefix)]
        data = self.state.data
        for key in gone:
            data.pop(key, None)
            del self.owner[key]
        if self.side is None:
            return len(gone)
        side = self.side.data
        mine = f"{self.side_prefix}{partition}/"
        kept = [k for k in side if k.startswith(mine)]
        for key in kept:
            del side[key]
        # changed or deleted here and not logged yet: the new owner's now, not to be written
        self.side.dirty.difference_update([k for k in self.side.dirty if k.startswith(mine)])
        return len(gone) + len(kept)


class PartitionedMaps:
    """Several TrackedMaps whose every key belongs to one source partition: a stage's state for a
    changelog per partition of its input, when each key is about one input key (a transaction)
    or is kept per partition (`<partition>/<name>`). A key's partition is set by `own` before it
    is first written; a partition taken over loads its keys, one handed over drops them. In the
    changelog a key is `<map name>/<key>`."""

    def __init__(self, maps: dict[str, TrackedMap]) -> None:
        self.maps = maps
        self.owner: dict[str, int] = {}  # key → its source partition (one key names one thing)

    def own(self, key: str, partition: int) -> None:
        self.owner[key] = partition

    def changes(self) -> dict[int, dict[str, Any]]:
        """partition → {"<map>/<key>": current value, or None when deleted} changed since the
        last call; keys of no known partition (replay) are left out. A key no map holds any more
        is forgotten, so the owners stay as many as the keys."""
        out: dict[int, dict[str, Any]] = {}
        owner = self.owner
        gone: list[str] = []
        for name, tracked in self.maps.items():
            data = tracked.data
            for key in tracked.drain():
                partition = owner.get(key)
                if partition is None:
                    continue
                value = data.get(key)
                out.setdefault(partition, {})[f"{name}/{key}"] = value
                if value is None:
                    gone.append(key)
        for key in gone:
            if not any(key in tracked.data for tracked in self.maps.values()):
                owner.pop(key, None)
        return out

    def restore(self, partition: int, items: Iterable[tuple[str, Any, int]]) -> int:
        """Load a partition's changelog (oldest first: changelog key, value or None, write time);
        returns how many keys it holds afterwards. Keys of maps this state lacks are ignored."""
        latest: dict[str, Any] = {}
        for key, value, _at in items:
            latest.pop(key, None)  # the latest write last: maps keep their arrival order
            latest[key] = value
        held = 0
        for ckey, value in latest.items():
            name, _, key = ckey.partition("/")
            tracked = self.maps.get(name)
            if tracked is None:
                continue
            if value is None:
                tracked.data.pop(key, None)
            else:
                tracked.data[key] = value
                self.owner[key] = partition
                held += 1
        return held

    def drop(self, partition: int) -> int:
        """Forget the keys of a partition this worker no longer owns; returns how many."""
        gone = [k for k, p in self.owner.items() if p == partition]
        for key in gone:
            del self.owner[key]
            for tracked in self.maps.values():
                tracked.data.pop(key, None)
        return len(gone)
