"""Fraud features in event time from bounded keyed state: one code for live, replay and training."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from hashlib import blake2b
from itertools import chain
from typing import Any

import numpy as np
from aiokafka.partitioner import murmur2

from models.inputs import FraudLabel, Transaction

WIB = timezone(timedelta(hours=7), "WIB")
ENTITIES = ("customer", "card", "device", "ip", "merchant")
WINDOWS = ("10m", "1h", "24h", "7d", "30d")
# Each window is read from buckets of one granularity: the current bucket and the ones before it.
# (granularity in seconds, buckets kept): 10m = the current minute and the 9 before it; 1h = the
# current 5 minutes and the 11 before; 24h = this hour and the 23 before; 7d and 30d = this UTC
# day and the 6 (29) before.
_GRAINS: dict[str, tuple[int, int]] = {
    "m": (60, 10),
    "f": (300, 12),
    "h": (3600, 24),
    "d": (86400, 30),
}
_WINDOW_GRAIN: dict[str, tuple[str, int]] = {
    "10m": ("m", 10),
    "1h": ("f", 12),
    "24h": ("h", 24),
    "7d": ("d", 7),
    "30d": ("d", 30),
}
DAY = 86400
DEDUP_SECONDS = DAY  # a redelivery later than this after the first delivery counts again
LABEL_RETENTION_SECONDS = 45 * DAY  # labels arriving later than this are not attributed
_NEVER = 2**62  # later than any time in seconds since the epoch
MAX_DISTINCT = 256  # cap of distinct-value sets (cards per device, devices per customer)
DEVICE_MEMORY = 90 * DAY  # a device its customer has not used for this long is new again
# Eviction (`FeatureStore.expire`): a key leaves the state once nothing in it can change a feature
# (`expires_at`) and that moment is EVICT_LATENESS behind the newest transaction, so no event less
# late than that sees a difference. A sweep over every key starts at most once per SWEEP_EVERY of
# event time and examines SWEEP_CHUNK keys per micro-batch.
EVICT_LATENESS = 7 * DAY
SWEEP_EVERY = DAY
SWEEP_CHUNK = 500

# Name → CEL/numpy type of every value a rule or the model can read. The transaction's own fields
# come first (absent strings are "", absent flags false), then the features.
TX_FIELDS: dict[str, str] = {
    "amount": "double",
    "currency": "string",
    "method": "string",
    "channel": "string",
    "status": "string",
    "error_code": "string",
    "merchant_id": "string",
    "customer_id": "string",
    "goods_category": "string",
    "cross_border": "bool",
    "card_bin": "string",
    "card_country": "string",
    "ip_country": "string",
    "has_card": "bool",
    "has_device": "bool",
}
FEATURES: dict[str, str] = {}
for _entity in ENTITIES:
    for _window in WINDOWS:
        FEATURES[f"{_entity}_count_{_window}"] = "int"
        FEATURES[f"{_entity}_amount_{_window}"] = "double"
FEATURES.update(
    {
        "amount_to_customer_avg_30d": "double",
        "device_cards_24h": "int",
        "customer_devices_24h": "int",
        "customer_failures_1h": "int",
        "device_failures_1h": "int",
        "new_device": "bool",
        "hour_wib": "int",
        "is_night": "bool",
        "country_mismatch": "bool",
        "merchant_frauds_30d": "int",
        "merchant_fraud_rate_30d": "double",
    }
)
SCHEMA: dict[str, str] = {**TX_FIELDS, **FEATURES}
ZERO: dict[str, Any] = {"int": 0, "double": 0.0, "bool": False, "string": ""}
DTYPES: dict[str, Any] = {"int": np.int64, "double": np.float64, "bool": np.bool_, "string": object}


_DEFAULTS: dict[str, Any] = {name: ZERO[kind] for name, kind in SCHEMA.items()}


def defaults() -> dict[str, Any]:
    """Every name with its zero value: what an example or a missing field starts from."""
    return _DEFAULTS.copy()  # the zero values are immutable, so a shallow copy is a fresh row


def _ts(at: datetime) -> int:
    return int(at.timestamp())


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as the Java client and aiokafka) gives
    a record with this key: a transaction's, by its customer id, for entity state per partition
    where no partition is known (replay, backtest, training)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def state_key(entity: str, key: str, scope: int | None = None) -> str:
    """The FeatureStore key of an entity's state: "<entity>:<key>", or with a partition scope
    (PANTAU_ENTITY_SCOPE=partition) "<entity>:<partition>/<key>", one state per input partition.
    A customer belongs to one partition and is never scoped."""
    if scope is None or entity == "customer":
        return f"{entity}:{key}"
    return f"{entity}:{scope}/{key}"


def entity_keys(tx: Transaction) -> dict[str, str | None]:
    """The key of each entity a transaction touches (None when the field is absent)."""
    card = f"{tx.card_bin}:{tx.card_last4}" if tx.card_bin and tx.card_last4 else None
    return {
        "customer": tx.customer_id,
        "card": card,
        "device": tx.device_id or None,
        "ip": tx.ip or None,
        "merchant": tx.merchant_id,
    }


_SECONDS = tuple(seconds for seconds, _ in _GRAINS.values())
# (seconds, buckets kept) per grain in reading order: m → 10m, f → 1h, h → 24h, d → 7d and 30d.
_PLAN = tuple(_GRAINS.values())
# Per entity, the count and the amount feature names in WINDOWS order.
_COUNTS = {entity: tuple(f"{entity}_count_{w}" for w in WINDOWS) for entity in ENTITIES}
_AMOUNTS = {entity: tuple(f"{entity}_amount_{w}" for w in WINDOWS) for entity in ENTITIES}
_Window = tuple[int, float, int]  # count, amount, failures
_EMPTY: _Window = (0, 0.0, 0)
_EMPTY_READS = {seconds: _EMPTY * 2 if seconds == DAY else _EMPTY for seconds in _SECONDS}


def _sums(level: list[Any], start: int) -> _Window:
    """Count, amount and failures of the cells from `start` on, amounts added oldest first."""
    total = 0.0
    for amount in level[start + 3 :: 4]:
        total += amount
    return sum(level[start + 1 :: 4]), total, sum(level[start + 2 :: 4])


def _update(levels: list[list[Any]], ts: int, amount: float, failed: bool, add: bool) -> list[Any]:
    """Add one attempt (when `add`), drop buckets too old for any window and read every window
    at time ts: count, amount, failures of each window in WINDOWS order, as one flat list.

    A grain's level is one flat list of cells [index, count, failures, amount, index, ...],
    oldest first. A cell's amount is the sum of its attempts in arrival order and a window's
    amount the sum of its cells oldest first: the same float additions in the same order
    whatever the stored form, so the same results. Only differences of times and indexes
    matter, so ts and the indexes may be counted from any day's start (see `Entry`)."""
    out: list[Any] = []
    f = 1 if failed else 0
    for (seconds, keep), level in zip(_PLAN, levels, strict=False):
        now = ts // seconds
        n = len(level)
        if add:
            if n and level[n - 4] == now:
                level[n - 3] += 1
                level[n - 2] += f
                level[n - 1] += amount
            elif not n or level[n - 4] < now:
                level += (now, 1, f, amount)
            else:  # a late event: find or insert its bucket
                pos = n
                while pos and level[pos - 4] > now:
                    pos -= 4
                if pos and level[pos - 4] == now:
                    level[pos - 3] += 1
                    level[pos - 2] += f
                    level[pos - 1] += amount
                else:
                    level[pos:pos] = (now, 1, f, 0.0 + amount)
        if level and now - level[0] >= keep:
            drop = 4
            while drop < len(level) and now - level[drop] >= keep:
                drop += 4
            del level[:drop]
        n = len(level)
        if n and level[n - 4] > now:  # cells of later events than this one: not its past
            while n and level[n - 4] > now:
                n -= 4
            level = level[:n]
        if n == 4:  # one bucket (most keys): its own sums
            window = (level[1], 0.0 + level[3], level[2])
            if seconds != DAY:
                out += window
            else:
                out += window if now - level[0] < 7 else _EMPTY
                out += window
        elif not n:
            out += _EMPTY_READS[seconds]
        elif seconds != DAY:
            out += _sums(level, 0)
        else:  # the day grain: 7d is the last 7 of the 30 days kept
            start = 0
            while start < n and now - level[start] >= 7:
                start += 4
            out += _sums(level, start)
            out += _sums(level, 0)
    return out


def _prune_times(seen: dict[bytes, int], ts: int, horizon: int) -> None:
    for key in [k for k, t in seen.items() if ts - t >= horizon]:
        del seen[key]
    while len(seen) > MAX_DISTINCT:
        oldest = min(seen, key=lambda k: seen[k])
        del seen[oldest]


def _prune_uses(uses: dict[bytes, list[Any]], ts: int, horizon: int) -> None:
    for key in [k for k, u in uses.items() if ts - u[1] >= horizon]:
        del uses[key]
    while len(uses) > MAX_DISTINCT:
        del uses[min(uses, key=lambda k: uses[k][1])]


def digest(text: str) -> bytes:
    """A stable 64-bit digest of a string (the same in every process, unlike `hash`): what the
    state keeps instead of attempt keys, device ids and card keys."""
    return blake2b(text.encode(), digest_size=8).digest()


class Entry:
    """One entity's state, decoded from its stored bytes (`decode`, `encode`).

    Every time is in seconds and every bucket index and day counted from the start of day
    `base` (a UTC day number; only differences matter). `levels`: per grain, its cells (see
    `_update`); `seen`: attempt digest → time of its first delivery (customers); `so`: when
    `seen` was last pruned (customers); `devices`: device digest → [digest of its first attempt,
    last use] (customers); `cards`: card digest → last use (devices); `frauds`: day → confirmed
    frauds that arrived that day (merchants). Dict order is insertion order and the bytes keep
    it (ties in pruning go to the oldest insertion)."""

    __slots__ = ("base", "cards", "devices", "frauds", "levels", "seen", "so")

    def __init__(
        self,
        base: int,
        levels: list[list[Any]],
        seen: dict[bytes, int],
        so: int | None,
        devices: dict[bytes, list[Any]],
        cards: dict[bytes, int],
        frauds: dict[int, int],
    ) -> None:
        self.base = base
        self.levels = levels
        self.seen = seen
        self.so = so
        self.devices = devices
        self.cards = cards
        self.frauds = frauds

    def rebase(self, day: int) -> None:
        """Count everything from the start of another day (same state, other numbers)."""
        shift = day - self.base
        if not shift:
            return
        seconds = shift * DAY
        for level, grain in zip(self.levels, _SECONDS, strict=True):
            level[0::4] = [index - seconds // grain for index in level[0::4]]
        self.seen = {k: t - seconds for k, t in self.seen.items()}
        if self.so is not None:
            self.so -= seconds
        self.devices = {k: [first, last - seconds] for k, (first, last) in self.devices.items()}
        self.cards = {k: t - seconds for k, t in self.cards.items()}
        self.frauds = {d - shift: n for d, n in self.frauds.items()}
        self.base = day


def expires_at(entry: Entry) -> int:
    """The time (seconds since the epoch) from which nothing in an entity's state can change a
    feature: its newest bucket has left every window, its last device is DEVICE_MEMORY unused,
    its newest confirmed fraud is 30 days old, its redelivery keys and cards a day old. From then
    on a transaction reads it as it would read no state at all (`FeatureStore.expire`)."""
    until = 0
    for (seconds, keep), level in zip(_PLAN, entry.levels, strict=True):
        if level:  # the newest cell counts until `keep` buckets later
            until = max(until, (level[-4] + keep) * seconds)
    if entry.devices:
        until = max(until, max(use[1] for use in entry.devices.values()) + DEVICE_MEMORY)
    if entry.frauds:
        until = max(until, (max(entry.frauds) + 30) * DAY)
    if entry.seen:
        until = max(until, max(entry.seen.values()) + DEDUP_SECONDS)
    if entry.cards:
        until = max(until, max(entry.cards.values()) + DAY)
    return entry.base * DAY + until


# An entity's bytes in one of three layouts, named by byte 0. Then the base day, `so`, the
# number of cells of each grain and of items in each map; the cells [index, attempts,
# failures, amount] grain after grain; then `seen` (digest, time), `devices` (digest, first
# attempt's digest, last use), `cards` (digest, time) and `frauds` (day, count) items. Layout 1
# fits most entities: attempts per cell and items per map up to 255, indexes within ±32767
# buckets and times within ±68 years of the base day, whole amounts below 2^32 (8 bytes a cell).
# Layout 2 is layout 1 with float64 amounts; layout 3 holds anything (busy merchants, shared IPs).
_LAYOUTS: dict[int, tuple[str, str, str, str, str, str]] = {
    # tag: (header, cell, seen item, device item, card item, fraud item)
    1: ("<BHi8B", "hBBI", "8si", "8s8si", "8si", "iI"),
    2: ("<BHi8B", "hBBd", "8si", "8s8si", "8si", "iI"),
    3: ("<Bqq8I", "qQQd", "8sq", "8s8sq", "8sq", "qQ"),
}
_HEADERS = {tag: struct.Struct(layout[0]) for tag, layout in _LAYOUTS.items()}
_STRUCTS: dict[tuple[int, ...], struct.Struct] = {}


def _struct(
    tag: int, cells: int, seen: int, devices: int, cards: int, frauds: int
) -> struct.Struct:
    """The layout of an entity's bytes with these numbers of cells and items (cached)."""
    key = (tag, cells, seen, devices, cards, frauds)
    found = _STRUCTS.get(key)
    if found is None:
        if len(_STRUCTS) > 4096:
            _STRUCTS.clear()
        head, cell, s, d, c, f = _LAYOUTS[tag]
        found = _STRUCTS[key] = struct.Struct(
            head + cell * cells + s * seen + d * devices + c * cards + f * frauds
        )
    return found


def _layout(value: bytes, head: bytes) -> struct.Struct:
    """The layout of these bytes, from their header (cached by its counts)."""
    tag = value[0]
    _, _, _, nm, nf, nh, nd, ns, nv, nc, nr = _HEADERS[tag].unpack_from(value)
    found = _DECODERS[head] = _struct(tag, nm + nf + nh + nd, ns, nv, nc, nr)
    if len(_DECODERS) > 4096:
        _DECODERS.clear()
    return found


_DECODERS: dict[bytes, struct.Struct] = {}


def decode(value: bytes | None, day: int = 0) -> Entry:
    """An entity's state from its stored bytes; for None a new, empty state counted from `day`."""
    if value is None:
        return Entry(day, [[], [], [], []], {}, None, {}, {}, {})
    # The tag and the counts say the layout: bytes 0 and 7-14 (layouts 1, 2) or 17-48 (3).
    head = value[:1] + value[7:15] if value[0] != 3 else value[:1] + value[17:49]
    flat = (_DECODERS.get(head) or _layout(value, head)).unpack_from(value)
    _, base, so, nm, nf, nh, nd, ns, nv, nc, nr = flat[:11]
    a = 11 + 4 * nm
    b = a + 4 * nf
    c = b + 4 * nh
    d = c + 4 * nd
    levels = [list(flat[11:a]), list(flat[a:b]), list(flat[b:c]), list(flat[c:d])]
    seen: dict[bytes, int] = {}
    if ns:
        seen = dict(zip(flat[d : d + 2 * ns : 2], flat[d + 1 : d + 2 * ns : 2], strict=True))
        d += 2 * ns
    devices: dict[bytes, list[Any]] = {}
    if nv:
        devices = {flat[i]: [flat[i + 1], flat[i + 2]] for i in range(d, d + 3 * nv, 3)}
        d += 3 * nv
    cards: dict[bytes, int] = {}
    if nc:
        cards = dict(zip(flat[d : d + 2 * nc : 2], flat[d + 1 : d + 2 * nc : 2], strict=True))
        d += 2 * nc
    frauds: dict[int, int] = {}
    if nr:
        frauds = dict(zip(flat[d : d + 2 * nr : 2], flat[d + 1 : d + 2 * nr : 2], strict=True))
    return Entry(base, levels, seen, so if ns else None, devices, cards, frauds)


def encode(entry: Entry) -> bytes:
    """An entity's state as self-contained bytes, in the smallest layout that holds it."""
    m, f, h, d = entry.levels
    cells = m + f + h + d
    tag = 1
    if cells:
        if max(cells[1::4]) > 255:
            tag = 3
        else:
            amounts = cells[3::4]
            try:
                whole = list(map(int, amounts))
            except (OverflowError, ValueError):  # inf or nan
                whole = []
            if whole == amounts:
                cells[3::4] = whole
            else:
                tag = 2
    seen, devices, cards, frauds = entry.seen, entry.devices, entry.cards, entry.frauds
    sizes = (len(cells) >> 2, len(seen), len(devices), len(cards), len(frauds))
    args: list[Any] = [tag, entry.base, entry.so or 0, len(m) >> 2, len(f) >> 2, len(h) >> 2]
    args += (len(d) >> 2, *sizes[1:], *cells)
    if seen:
        args += chain.from_iterable(seen.items())
    for key, (first, last) in devices.items():
        args += (key, first, last)
    if cards:
        args += chain.from_iterable(cards.items())
    if frauds:  # by day: the same bytes whatever order the labels were counted in
        args += chain.from_iterable(sorted(frauds.items()))
    if tag != 3:
        try:
            return (_STRUCTS.get((tag, *sizes)) or _struct(tag, *sizes)).pack(*args)
        except struct.error:  # beyond layouts 1 and 2 here: from the newest day, or layout 3
            newest = d[-4] if d else 0
            if newest:
                entry.rebase(entry.base + newest)
                return encode(entry)
    args[0] = 3
    return _struct(3, *sizes).pack(*args)


# Transactions kept for late labels: a transaction id's 10-byte digest picks one of TX_SHARDS
# shards (its last 2 bytes) and is remembered there by its first 8. A shard's bytes: the number
# n of transactions (uint32), their digests (n × 8 bytes), the time each was first seen (n ×
# int64), whether a fraud label has counted it (n bytes), its merchant's position in the shard's
# merchant list (n × uint32), then that list (each id in UTF-8 followed by 0xFF, a byte UTF-8
# never holds). A shard holds about 1/32768 of the transactions of the last 45 days. Live, where
# each transaction's input partition is known, the shards are per partition ("tx:<p>/<shard>",
# PARTITION_TX_SHARDS of them) and go to that partition's changelog with the rest of its state.
TX_PREFIX = "tx:"  # every shard's key: "tx:<shard>", or live "tx:<partition>/<shard>"
TX_SHARDS = 1 << 15
PARTITION_TX_SHARDS = 1 << 12
_TX_KEYS = tuple(f"{TX_PREFIX}{shard:04x}" for shard in range(TX_SHARDS))
_U32_1 = struct.Struct("<I")
_I64_1 = struct.Struct("<q")
_END = b"\xff"
_ONE = struct.Struct("<I8sqBI")  # a shard of one transaction, before its merchant


def _tx_digest(transaction_id: str, partition: int | None = None) -> tuple[str, bytes]:
    """The shard key and the digest a transaction id is remembered by (in its partition's shards
    when one is given)."""
    full = blake2b(transaction_id.encode(), digest_size=10).digest()
    index = int.from_bytes(full[8:], "little")
    if partition is None:
        return _TX_KEYS[index & (TX_SHARDS - 1)], full[:8]
    return f"{TX_PREFIX}{partition}/{index & (PARTITION_TX_SHARDS - 1):03x}", full[:8]


def _position(shard: bytes, digest8: bytes) -> tuple[int, int]:
    """(n, position of digest8 among the shard's n transactions, or -1)."""
    n = _U32_1.unpack_from(shard)[0]
    end = 4 + 8 * n
    at = shard.find(digest8, 4, end)
    while at >= 0 and (at - 4) % 8:
        at = shard.find(digest8, at + 1, end)
    return n, (at - 4) // 8 if at >= 0 else -1


def _shard(records: Sequence[tuple[bytes, int, int, str]]) -> bytes:
    """A shard's bytes from its (digest, first seen, counted, merchant) records, in order."""
    merchants: dict[str, int] = {}
    for record in records:
        merchants.setdefault(record[3], len(merchants))
    n = len(records)
    return b"".join(
        [
            _U32_1.pack(n),
            *(r[0] for r in records),
            struct.pack(f"<{n}q", *(r[1] for r in records)),
            bytes(r[2] for r in records),
            struct.pack(f"<{n}I", *(merchants[r[3]] for r in records)),
            *(m.encode() + _END for m in merchants),
        ]
    )


def _records(shard: bytes) -> list[tuple[bytes, int, int, str]]:
    """A shard's (digest, first seen, counted, merchant) records, in order (see `_shard`)."""
    n = _U32_1.unpack_from(shard)[0]
    at = 4 + 8 * n
    times = struct.unpack_from(f"<{n}q", shard, at)
    flags = shard[at + 8 * n : at + 9 * n]
    at += 9 * n
    where = struct.unpack_from(f"<{n}I", shard, at)
    merchants = [m.decode() for m in shard[at + 4 * n :].split(_END)[:-1]]
    return [
        (shard[4 + 8 * i : 12 + 8 * i], times[i], flags[i], merchants[where[i]]) for i in range(n)
    ]


@dataclass
class Sweep:
    """What one call of `FeatureStore.expire` did: keys evicted by entity and, when it finished a
    sweep, the keys that sweep kept by entity (None while it goes on)."""

    evicted: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] | None = None


class FeatureStore:
    """Keyed state of every entity plus the transactions recent enough to be labelled.

    `state` maps "<entity>:<key>" → that key's state as self-contained bytes (`decode`,
    `encode`): read with `state.get(key)` and written back with `state[key] = value` for every
    key a transaction touches. Customer state is local to the worker that owns the customer's
    partition; device, card, IP and merchant state is kept per worker (see docs/fraud.md).
    `tx_merchants` maps "tx:<shard>" (or "tx:<partition>/<shard>") → bytes remembering each
    recent transaction's merchant, so a late label can be attributed once (see TX_SHARDS).
    `tx_partitions`: the partitions whose shards it holds (None: the unpartitioned ones). A label
    whose transaction it does not know (yet) is kept in `pending` until the transaction comes
    (the labels are read apart from the transactions, and may be read first) or a partition
    holding it is taken over (`held`), for as long as a label may be attributed.
    """

    def __init__(
        self,
        state: MutableMapping[str, Any] | None = None,
        tx_merchants: MutableMapping[str, Any] | None = None,
    ) -> None:
        self.state: MutableMapping[str, Any] = state if state is not None else {}
        self._expired_at = 0
        # No remembered transaction is older than this (a lower bound; None: not known, as after
        # a restore): `expire_labels` skips its walk over the shards while none can be due.
        self._oldest: int | None = _NEVER if tx_merchants is None or tx_merchants == {} else None
        self.latest = 0  # the newest transaction's time applied (seconds since the epoch)
        self._sweep: Iterator[str] | None = None  # the keys the current sweep has still to examine
        self._sweep_started = 0
        self._kept: dict[str, int] = {}
        self.tx_merchants: MutableMapping[str, Any] = (
            tx_merchants if tx_merchants is not None else {}
        )
        self.tx_partitions: set[int | None] = {None}
        self.pending: dict[str, FraudLabel] = {}
        # Within `apply_batch`: state key → its decoded entry, written once at the batch's end;
        # and what to undo should the batch fail: each flagged shard as it was before the batch,
        # the waiting labels it counted.
        self._batch: dict[str, Entry] | None = None
        self._shards_before: dict[str, bytes] = {}
        self._labels_counted: list[FraudLabel] = []

    # ---- labels ----------------------------------------------------------------------------
    def _remember(
        self, transaction_id: str, merchant: str, ts: int, partition: int | None = None
    ) -> None:
        """Keep a transaction's merchant for late labels (its first attempt's time), once."""
        key, digest8 = _tx_digest(transaction_id, partition)
        if self._oldest is not None and ts < self._oldest:
            self._oldest = ts
        shard: bytes | None = self.tx_merchants.get(key)
        if shard is None:
            self.tx_merchants[key] = _ONE.pack(1, digest8, ts, 0, 0) + merchant.encode() + _END
            return
        n, found = _position(shard, digest8)
        if found >= 0:
            return
        times = 4 + 8 * n
        flags = times + 8 * n
        where = flags + n
        table = where + 4 * n
        name = merchant.encode()
        # the merchant list: look for the id between two ends
        merchants = _END + shard[table:]
        at = merchants.find(_END + name + _END)
        if at >= 0:
            index = merchants.count(_END, 0, at)
            tail = shard[table:]
        else:
            index = merchants.count(_END) - 1
            tail = shard[table:] + name + _END
        self.tx_merchants[key] = b"".join(
            [
                _U32_1.pack(n + 1),
                shard[4:times],
                digest8,
                shard[times:flags],
                _I64_1.pack(ts),
                shard[flags:where],
                b"\x00",
                shard[where:table],
                _U32_1.pack(index),
                tail,
            ]
        )

    def add_label(self, label: FraudLabel) -> bool:
        """Count a confirmed fraud for its merchant at the label's arrival time; False if unknown
        (kept in `pending` until its transaction comes) or already counted."""
        if not label.fraud:
            return False
        counted = self._count(label)
        if counted is None:
            self.pending.setdefault(label.transaction_id, label)
            return False
        return counted

    def _count(self, label: FraudLabel) -> bool | None:
        """Count a fraud label once; None when its transaction is not known here."""
        for partition in self.tx_partitions:
            key, digest8 = _tx_digest(label.transaction_id, partition)
            shard: bytes | None = self.tx_merchants.get(key)
            if shard is not None:
                n, found = _position(shard, digest8)
                if found >= 0:
                    return self._flag(label, key, shard, n, found)
        return None

    def _flag(self, label: FraudLabel, key: str, shard: bytes, n: int, found: int) -> bool:
        """Mark transaction `found` of a shard labelled and count the fraud for its merchant;
        False if it was already."""
        flag = 4 + 16 * n + found
        if shard[flag]:
            return False
        if self._batch is not None:
            self._shards_before.setdefault(key, shard)
        self.tx_merchants[key] = shard[:flag] + b"\x01" + shard[flag + 1 :]
        where = 4 + 17 * n
        index = _U32_1.unpack_from(shard, where + 4 * found)[0]
        merchant = shard[where + 4 * n :].split(_END)[index].decode()
        merchant_key = f"merchant:{merchant}"  # with its scope, if it had one (`apply`)
        day = _ts(label.reported_at) // DAY
        entry = self._read(merchant_key, day)
        day -= entry.base
        entry.frauds[day] = entry.frauds.get(day, 0) + 1
        if self._batch is None:
            self.state[merchant_key] = encode(entry)
        return True

    def _read(self, key: str, day: int) -> Entry:
        """A key's entry: within a batch the one already decoded (and kept for its end)."""
        batch = self._batch
        if batch is None:
            return decode(self.state.get(key), day)
        entry = batch.get(key)
        if entry is None:
            entry = batch[key] = decode(self.state.get(key), day)
        return entry

    def apply_batch(
        self,
        transactions: Sequence[Transaction],
        scopes: Sequence[int | None] | None = None,
        partitions: Sequence[int | None] | None = None,
    ) -> list[dict[str, Any]]:
        """`apply` each transaction in order; the same rows and state, but each key touched is
        decoded once and written once for the whole batch (a merchant's state, say, once a
        batch instead of once a payment). Should one transaction fail, the batch leaves the
        feature state, the labels counted and the waiting labels as they were, and raises."""
        none: list[int | None] = [None] * len(transactions)
        self._batch, self._shards_before, self._labels_counted = {}, {}, []
        try:
            rows = [
                self._apply(tx, scope, partition)
                for tx, scope, partition in zip(
                    transactions, scopes or none, partitions or none, strict=True
                )
            ]
        except BaseException:
            self.tx_merchants.update(self._shards_before)
            self.pending.update((label.transaction_id, label) for label in self._labels_counted)
            raise
        else:
            state = self.state
            for key, entry in self._batch.items():
                state[key] = encode(entry)
            return rows
        finally:
            self._batch, self._shards_before, self._labels_counted = None, {}, []

    def held(self, partition: int) -> None:
        """This store now holds the partition's shards (taken over): count the pending labels of
        its transactions."""
        self.tx_partitions.add(partition)
        self._oldest = None  # its shards were restored: their times are not known here
        for transaction_id, label in list(self.pending.items()):
            if self._count(label) is not None:
                del self.pending[transaction_id]

    def released(self, partition: int) -> None:
        """The partition's shards are gone (handed over)."""
        self.tx_partitions.discard(partition)

    def expire_labels(self, now: datetime) -> None:
        """Forget transactions too old to be labelled any more, and pending labels too old to
        count (bounded memory; at most daily)."""
        ts = _ts(now)
        if ts - self._expired_at < DAY:
            return
        self._expired_at = ts
        for transaction_id, label in list(self.pending.items()):
            if ts - _ts(label.reported_at) >= LABEL_RETENTION_SECONDS:
                del self.pending[transaction_id]
        if self._oldest is not None and ts - self._oldest < LABEL_RETENTION_SECONDS:
            return  # none of them is old enough yet: no walk over the shards
        oldest = _NEVER
        for key, shard in list(self.tx_merchants.items()):
            n = _U32_1.unpack_from(shard)[0]
            times = struct.unpack_from(f"<{n}q", shard, 4 + 8 * n)
            if all(ts - t < LABEL_RETENTION_SECONDS for t in times):
                oldest = min(oldest, min(times, default=oldest))
                continue
            kept = [r for r in _records(shard) if ts - r[1] < LABEL_RETENTION_SECONDS]
            if kept:
                self.tx_merchants[key] = _shard(kept)
                oldest = min(oldest, min(r[1] for r in kept))
            else:
                del self.tx_merchants[key]
        self._oldest = oldest

    # ---- eviction ----------------------------------------------------------------------------
    def expire(self, budget: int = SWEEP_CHUNK) -> Sweep | None:
        """Evict keys whose state can no longer change any feature (`expires_at`) at least
        EVICT_LATENESS before the newest transaction applied, examining at most `budget` keys;
        also forget transactions too old to be labelled. None when no sweep is under way.

        A sweep starts at most once per SWEEP_EVERY of event time from a snapshot of the keys
        and goes on over the following calls, so a micro-batch pays for a chunk of it only.
        Eviction changes no feature of an event less than EVICT_LATENESS late: without it, that
        event would have read the state as empty too."""
        now = self.latest
        if self._sweep is None:
            if not now or now - self._sweep_started < SWEEP_EVERY:
                return None
            self._sweep_started = now
            self._sweep = iter(list(self.state))
            self._kept = {}
            self.expire_labels(datetime.fromtimestamp(now, UTC))
        horizon = now - EVICT_LATENESS
        state = self.state
        sweep = Sweep()
        evicted, kept = sweep.evicted, self._kept
        for examined, key in enumerate(self._sweep, start=1):
            value = state.get(key)
            if value is not None:
                entity = key.partition(":")[0]
                if expires_at(decode(value)) <= horizon:
                    del state[key]
                    evicted[entity] = evicted.get(entity, 0) + 1
                else:
                    kept[entity] = kept.get(entity, 0) + 1
            if examined >= budget:
                return sweep
        self._sweep = None
        sweep.kept = kept
        return sweep

    # ---- transactions ------------------------------------------------------------------------
    def apply(
        self, tx: Transaction, scope: int | None = None, partition: int | None = None
    ) -> dict[str, Any]:
        """Update state with one transaction (once, even if redelivered) and return its features.

        `scope`: the input partition the transaction came from, to keep device, card, IP and
        merchant state per partition (see `state_key`); None keeps one state per entity.
        `partition`: the input partition it came from (live), to remember it for late labels in
        that partition's shards; else the scope's. A batch of one (`apply_batch`)."""
        return self.apply_batch([tx], [scope], [partition])[0]

    def _apply(self, tx: Transaction, scope: int | None, partition: int | None) -> dict[str, Any]:
        """`apply` within `apply_batch`: entries read through the batch, written at its end."""
        ts = _ts(tx.created_at)
        if ts > self.latest:
            self.latest = ts
        day = ts // DAY
        amount = float(tx.amount)
        failed = tx.status == "failed"
        keys = entity_keys(tx)
        state_keys = {"customer": f"customer:{tx.customer_id}"}
        customer = self._read(state_keys["customer"], day)
        cts = ts - customer.base * DAY  # times in the customer's state count from its base day
        seen = customer.seen
        at = tx.created_at  # the attempt key (`attempt_key`), from the time already read
        dedup = digest(f"{tx.transaction_id}|{ts}|{at.microsecond}|{tx.status.value}")
        first_delivery = dedup not in seen
        values = row_of(tx)

        devices = customer.devices
        device_key = keys["device"]
        device = digest(device_key) if device_key is not None else None
        first_use = devices.get(device) if device is not None else None
        if device is not None and first_use is not None and cts - first_use[1] >= DEVICE_MEMORY:
            del devices[device]  # unused for 90 days: new again (as after eviction)
            first_use = None
        values["new_device"] = device is not None and (
            first_use is None or (not first_delivery and first_use[0] == dedup)
        )
        entries: dict[str, Entry] = {"customer": customer}
        for entity in ENTITIES[1:]:
            key = keys[entity]
            if key is not None:
                state_keys[entity] = scoped = state_key(entity, key, scope)
                entries[entity] = self._read(scoped, day)
        if first_delivery:
            seen[dedup] = cts
            # a late label counts for the merchant state this transaction counted in
            merchant_name = state_keys["merchant"].removeprefix("merchant:")
            where = partition if partition is not None else scope
            self.tx_partitions.add(where)
            self._remember(tx.transaction_id, merchant_name, ts, where)
        so = customer.so
        if cts - (cts if so is None else so) >= DEDUP_SECONDS or len(seen) > MAX_DISTINCT:
            _prune_times(seen, cts, DEDUP_SECONDS)
            customer.so = min(seen.values(), default=cts)
        if customer.so is None:
            customer.so = cts

        # Every window now holds this attempt exactly once (redelivered or not).
        for entity, entry in entries.items():
            windows = _update(entry.levels, ts - entry.base * DAY, amount, failed, first_delivery)
            values.update(zip(_COUNTS[entity], windows[0::3], strict=True))
            values.update(zip(_AMOUNTS[entity], windows[1::3], strict=True))
            if entity == "customer":
                # The history before this attempt: the windows less this attempt.
                prev_count = windows[12] - 1  # 30d
                prev_amount = windows[13] - amount
                avg = prev_amount / prev_count if prev_count > 0 else 0.0
                values["amount_to_customer_avg_30d"] = amount / avg if avg > 0 else 1.0
                values["customer_failures_1h"] = windows[5] - int(failed)
            elif entity == "device":
                values["device_failures_1h"] = windows[5] - int(failed)

        if device is not None:
            use = devices.get(device) or [dedup, cts]  # [first attempt, last use]
            use[1] = max(cts, use[1])
            devices[device] = use
            if len(devices) == 1:  # this device alone, used just now: nothing to prune
                values["customer_devices_24h"] = 1
            else:
                _prune_uses(devices, cts, DEVICE_MEMORY)
                recent = sum(1 for u in devices.values() if cts - u[1] < DAY)
                values["customer_devices_24h"] = recent
        if "device" in entries:
            entry = entries["device"]
            dts = ts - entry.base * DAY
            cards = entry.cards
            card_key = keys["card"]
            if card_key is not None:
                card = digest(card_key)
                cards[card] = max(dts, cards.get(card, -entry.base * DAY))  # absolute 0 if new
                if len(cards) > 1:  # (this card alone, used just now: nothing to prune)
                    _prune_times(cards, dts, DAY)
                values["device_cards_24h"] = len(cards)
            else:
                values["device_cards_24h"] = sum(1 for t in cards.values() if dts - t < DAY)

        merchant = entries["merchant"]
        frauds = merchant.frauds
        if frauds:
            today = day - merchant.base
            for old in [d for d in frauds if today - d >= 30]:
                del frauds[old]
            count = sum(n for d, n in frauds.items() if 0 <= today - d < 30)
            values["merchant_frauds_30d"] = count
            attempts = values["merchant_count_30d"]
            values["merchant_fraud_rate_30d"] = min(1.0, count / attempts) if attempts else 0.0

        if self.pending and first_delivery:  # its label came first: it counts from now on
            label = self.pending.pop(tx.transaction_id, None)
            if label is not None:
                self._labels_counted.append(label)
                self._count(label)
        return values

    def bytes_per_key(self, prefix: str = "customer:") -> float:
        """Mean stored bytes of the keys with this prefix (what one active key costs)."""
        sizes = [len(v) for k, v in self.state.items() if k.startswith(prefix)]
        return sum(sizes) / len(sizes) if sizes else 0.0


def attempt_key(tx: Transaction) -> str:
    """What makes an attempt itself: a redelivery has the same key, a retry a new one."""
    at = tx.created_at
    return f"{tx.transaction_id}|{int(at.timestamp())}|{at.microsecond}|{tx.status.value}"


def row_of(tx: Transaction) -> dict[str, Any]:
    """The transaction's own fields as rules see them, with every feature at its zero value."""
    values = defaults()
    values.update(
        amount=float(tx.amount),
        currency=tx.currency,
        method=tx.method.value,
        channel=tx.channel,
        status=tx.status.value,
        error_code=tx.error_code or "",
        merchant_id=tx.merchant_id,
        customer_id=tx.customer_id,
        goods_category=tx.goods_category or "",
        cross_border=tx.cross_border,
        card_bin=tx.card_bin or "",
        card_country=tx.card_country or "",
        ip_country=tx.ip_country or "",
        has_card=bool(tx.card_bin and tx.card_last4),
        has_device=bool(tx.device_id),
    )
    local = tx.created_at.astimezone(WIB)
    values["hour_wib"] = local.hour
    values["is_night"] = local.hour < 6
    values["country_mismatch"] = bool(
        tx.ip_country and tx.card_country and tx.ip_country != tx.card_country
    )
    return values


def columns(
    rows: Sequence[dict[str, Any]], names: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """Rows of values → one typed numpy column per name (strings as object arrays)."""
    import operator

    wanted = list(names if names is not None else SCHEMA)
    if not wanted:
        return {}
    if rows:
        getter = operator.itemgetter(*wanted)
        picked = [getter(row) for row in rows] if len(wanted) > 1 else [(getter(r),) for r in rows]
        transposed = list(zip(*picked, strict=True))
    else:
        transposed = [() for _ in wanted]
    out: dict[str, np.ndarray] = {}
    for name, data in zip(wanted, transposed, strict=True):
        kind = SCHEMA[name]
        if kind == "string":
            arr = np.empty(len(data), dtype=object)
            arr[:] = data
            out[name] = arr
        else:
            out[name] = np.array(data, dtype=DTYPES[kind])
    return out


def utc(at: datetime) -> datetime:
    """A time in UTC (helper for callers building transactions by hand)."""
    return at.astimezone(UTC)


# What the model reads: every numeric feature, amounts as log1p, plus a few transaction flags.
_LOG = {n for n, k in FEATURES.items() if k == "double" and "_amount_" in n}
MODEL_FEATURES: tuple[str, ...] = (
    "amount",
    "is_card",
    "is_ewallet",
    "failed",
    "cross_border",
    "has_card",
    "has_device",
    *[n for n, k in FEATURES.items() if k != "string"],
)


def model_matrix(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """Feature rows → the model's float matrix (columns in MODEL_FEATURES order)."""
    out = np.zeros((len(rows), len(MODEL_FEATURES)), dtype=np.float64)
    if not rows:
        return out
    method = [row["method"] for row in rows]
    for j, name in enumerate(MODEL_FEATURES):
        if name == "is_card":
            out[:, j] = [m == "card" for m in method]
        elif name == "is_ewallet":
            out[:, j] = [m == "ewallet" for m in method]
        elif name == "failed":
            out[:, j] = [row["status"] == "failed" for row in rows]
        else:
            out[:, j] = [row[name] for row in rows]
            if name == "amount" or name in _LOG:
                out[:, j] = np.log1p(out[:, j])
    return out
