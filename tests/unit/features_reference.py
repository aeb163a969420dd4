"""Today's FeatureStore (dicts of lists, string keys), kept only as the tests' reference."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from models.features import defaults
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
MAX_DISTINCT = 256  # cap of distinct-value sets (cards per device, devices per customer)


def _ts(at: datetime) -> int:
    return int(at.timestamp())


def entity_keys(tx: Transaction) -> dict[str, str | None]:
    """The state key of each entity a transaction touches (None when the field is absent)."""
    card = f"{tx.card_bin}:{tx.card_last4}" if tx.card_bin and tx.card_last4 else None
    return {
        "customer": tx.customer_id,
        "card": card,
        "device": tx.device_id or None,
        "ip": tx.ip or None,
        "merchant": tx.merchant_id,
    }


# Per grain, the windows read from it: (window, number of buckets).
_READS: dict[str, list[tuple[str, int]]] = {
    grain: [(w, span) for w, (g, span) in _WINDOW_GRAIN.items() if g == grain] for grain in _GRAINS
}


def _add(
    buckets: dict[str, Any], ts: int, amount: float, failed: bool, grains: Sequence[str] = ()
) -> None:
    """Add one attempt; each grain is a list of [index, count, amount, failures], oldest first."""
    for grain, (seconds, _) in _GRAINS.items():
        if grains and grain not in grains:
            continue
        level: list[list[Any]] = buckets.setdefault(grain, [])
        idx = ts // seconds
        if level and level[-1][0] == idx:
            cell = level[-1]
        elif not level or level[-1][0] < idx:
            cell = [idx, 0, 0.0, 0]
            level.append(cell)
        else:  # a late event: find or insert its bucket
            pos = len(level)
            while pos > 0 and level[pos - 1][0] > idx:
                pos -= 1
            if pos > 0 and level[pos - 1][0] == idx:
                cell = level[pos - 1]
            else:
                cell = [idx, 0, 0.0, 0]
                level.insert(pos, cell)
        cell[1] += 1
        cell[2] += amount
        cell[3] += int(failed)


def _read(buckets: dict[str, Any], ts: int) -> dict[str, list[float]]:
    """window → [count, amount, failures] at time ts; drops buckets too old for any window."""
    out: dict[str, list[float]] = {}
    for grain, (seconds, keep) in _GRAINS.items():
        level: list[list[Any]] | None = buckets.get(grain)
        now = ts // seconds
        if level:
            drop = 0
            while drop < len(level) and now - level[drop][0] >= keep:
                drop += 1
            if drop:
                del level[:drop]
        count, amount, failures = 0, 0.0, 0
        short = None
        for window, span in _READS[grain]:
            count, amount, failures = 0, 0.0, 0
            for idx, c, a, f in level or ():
                if idx > now:
                    break  # from a later event than this one: not in this event's past
                if now - idx < span:
                    count += c
                    amount += a
                    failures += f
            short = [count, amount, failures]
            out[window] = short
    return out


# (grain, seconds, buckets kept, windows read) in reading order; only "d" serves two windows.
_PLAN = [(g, s, keep, [w for w, _ in _READS[g]]) for g, (s, keep) in _GRAINS.items()]


def _update(
    buckets: dict[str, Any], ts: int, amount: float, failed: bool, add: bool
) -> dict[str, list[float]]:
    """Add one attempt (when `add`) and read every window at time ts, in one pass per grain:
    window → [count, amount, failures]. Equivalent to `_add` then `_read`."""
    out: dict[str, list[float]] = {}
    f = int(failed)
    for grain, seconds, keep, windows in _PLAN:
        level: list[list[Any]] | None = buckets.get(grain)
        if level is None:
            level = buckets[grain] = []
        now = ts // seconds
        if add:
            if level and level[-1][0] == now:
                cell = level[-1]
                cell[1] += 1
                cell[2] += amount
                cell[3] += f
            elif not level or level[-1][0] < now:
                level.append([now, 1, amount, f])
            else:
                _add(buckets, ts, amount, failed, grains=(grain,))
        if level and now - level[0][0] >= keep:
            drop = 1
            while drop < len(level) and now - level[drop][0] >= keep:
                drop += 1
            del level[:drop]
        count, total, failures = 0, 0.0, 0
        if len(windows) == 1:
            for idx, c, a, x in level:
                if idx > now:
                    break
                count += c
                total += a
                failures += x
            out[windows[0]] = [count, total, failures]
        else:  # the day grain: 7d is the last 7 of the 30 days kept
            count7, total7, failures7 = 0, 0.0, 0
            for idx, c, a, x in level:
                if idx > now:
                    break
                count += c
                total += a
                failures += x
                if now - idx < 7:
                    count7 += c
                    total7 += a
                    failures7 += x
            out["7d"] = [count7, total7, failures7]
            out["30d"] = [count, total, failures]
    return out


def _prune_times(seen: dict[str, int], ts: int, horizon: int) -> None:
    for key in [k for k, t in seen.items() if ts - t >= horizon]:
        del seen[key]
    while len(seen) > MAX_DISTINCT:
        oldest = min(seen, key=lambda k: seen[k])
        del seen[oldest]


def _prune_uses(uses: dict[str, list[Any]], ts: int, horizon: int) -> None:
    for key in [k for k, u in uses.items() if ts - u[1] >= horizon]:
        del uses[key]
    while len(uses) > MAX_DISTINCT:
        del uses[min(uses, key=lambda k: uses[k][1])]


class FeatureStore:
    """Keyed state of every entity plus the labels seen so far; plain mappings, JSON-able values.

    `state` maps "<entity>:<key>" → that key's buckets and sets. Customer state is local to the
    worker that owns the customer's partition; device, card, IP and merchant state is kept per
    worker (see docs/fraud.md). `tx_merchants` remembers each recent transaction's merchant so a
    late label can be attributed; `labels` keeps each label once.
    """

    def __init__(
        self,
        state: MutableMapping[str, Any] | None = None,
        tx_merchants: MutableMapping[str, Any] | None = None,
    ) -> None:
        self.state: MutableMapping[str, Any] = state if state is not None else {}
        self._expired_at = 0
        self.tx_merchants: MutableMapping[str, Any] = (
            tx_merchants if tx_merchants is not None else {}
        )
        self.pending: dict[str, FraudLabel] = {}  # labels that came before their transaction

    # ---- labels ----------------------------------------------------------------------------
    def add_label(self, label: FraudLabel) -> bool:
        """Count a confirmed fraud for its merchant at the label's arrival time; False if unknown
        or already counted."""
        known = self.tx_merchants.get(label.transaction_id)
        if known is None and label.fraud:
            self.pending.setdefault(label.transaction_id, label)
        if known is None or not label.fraud or known[2]:
            return False
        merchant, _, _ = known
        known[2] = True
        self.tx_merchants[label.transaction_id] = known
        entry = self._entry("merchant", merchant)
        frauds = entry.setdefault("frauds", {})
        day = str(_ts(label.reported_at) // DAY)
        frauds[day] = frauds.get(day, 0) + 1
        self.state[f"merchant:{merchant}"] = entry
        return True

    def expire_labels(self, now: datetime) -> None:
        """Forget transactions too old to be labelled any more (bounded memory; at most daily)."""
        ts = _ts(now)
        if ts - self._expired_at < DAY:
            return
        self._expired_at = ts
        pending = self.pending
        for tx_id in [k for k, v in pending.items() if ts - _ts(v.reported_at) >= 45 * DAY]:
            del pending[tx_id]
        for tx_id in [
            k for k, v in self.tx_merchants.items() if ts - v[1] >= LABEL_RETENTION_SECONDS
        ]:
            del self.tx_merchants[tx_id]

    # ---- transactions ------------------------------------------------------------------------
    def _entry(self, entity: str, key: str) -> dict[str, Any]:
        entry: dict[str, Any] | None = self.state.get(f"{entity}:{key}")
        return entry if entry is not None else {}

    def apply(self, tx: Transaction) -> dict[str, Any]:
        """Update state with one transaction (once, even if redelivered) and return its features."""
        ts = _ts(tx.created_at)
        amount = float(tx.amount)
        failed = tx.status == "failed"
        keys = entity_keys(tx)
        customer = self._entry("customer", tx.customer_id)
        seen: dict[str, int] = customer.setdefault("seen", {})
        dedup = attempt_key(tx)
        first_delivery = dedup not in seen
        values = row_of(tx)

        devices: dict[str, list[Any]] = customer.setdefault("devices", {})
        device_key = keys["device"]
        first_use = devices.get(device_key) if device_key is not None else None
        if first_use is not None and ts - first_use[1] >= 90 * DAY:
            del devices[device_key]  # unused for 90 days: new again
            first_use = None
        values["new_device"] = device_key is not None and (
            first_use is None or (not first_delivery and first_use[0] == dedup)
        )
        entries: dict[str, dict[str, Any]] = {"customer": customer}
        for entity in ENTITIES[1:]:
            key = keys[entity]
            if key is not None:
                entries[entity] = self._entry(entity, key)
        if first_delivery:
            seen[dedup] = ts
            if tx.transaction_id not in self.tx_merchants:
                self.tx_merchants[tx.transaction_id] = [tx.merchant_id, ts, False]
        if ts - customer.get("so", ts) >= DEDUP_SECONDS or len(seen) > MAX_DISTINCT:
            _prune_times(seen, ts, DEDUP_SECONDS)
            customer["so"] = min(seen.values(), default=ts)
        customer.setdefault("so", ts)

        # Every window now holds this attempt exactly once (redelivered or not).
        for entity in ENTITIES:
            entry_or_none = entries.get(entity)
            if entry_or_none is None:
                continue
            windows = _update(entry_or_none.setdefault("b", {}), ts, amount, failed, first_delivery)
            for window in WINDOWS:
                values[f"{entity}_count_{window}"] = int(windows[window][0])
                values[f"{entity}_amount_{window}"] = float(windows[window][1])
            if entity == "customer":
                # The history before this attempt: the windows less this attempt.
                prev_count = windows["30d"][0] - 1
                prev_amount = windows["30d"][1] - amount
                avg = prev_amount / prev_count if prev_count > 0 else 0.0
                values["amount_to_customer_avg_30d"] = amount / avg if avg > 0 else 1.0
                values["customer_failures_1h"] = int(windows["1h"][2]) - int(failed)
            elif entity == "device":
                values["device_failures_1h"] = int(windows["1h"][2]) - int(failed)

        if device_key is not None:
            use = devices.get(device_key) or [dedup, ts]  # [first attempt, last use]
            use[1] = max(ts, use[1])
            devices[device_key] = use
            _prune_uses(devices, ts, 90 * DAY)
            recent = sum(1 for u in devices.values() if ts - u[1] < DAY)
            values["customer_devices_24h"] = recent
        if "device" in entries and keys["card"] is not None:
            cards: dict[str, int] = entries["device"].setdefault("cards", {})
            cards[keys["card"]] = max(ts, cards.get(keys["card"], 0))
            _prune_times(cards, ts, DAY)
            values["device_cards_24h"] = len(cards)
        elif "device" in entries:
            cards = entries["device"].get("cards", {})
            values["device_cards_24h"] = sum(1 for t in cards.values() if ts - t < DAY)

        merchant = entries["merchant"]
        frauds: dict[str, int] = merchant.get("frauds", {})
        today = ts // DAY
        for day in [d for d in frauds if today - int(d) >= 30]:
            del frauds[day]
        count = sum(n for d, n in frauds.items() if 0 <= today - int(d) < 30)
        values["merchant_frauds_30d"] = count
        attempts = values["merchant_count_30d"]
        values["merchant_fraud_rate_30d"] = min(1.0, count / attempts) if attempts else 0.0

        for entity, entry in entries.items():
            key = keys[entity]
            self.state[f"{entity}:{key}"] = entry
        label = self.pending.pop(tx.transaction_id, None) if first_delivery else None
        if label is not None:  # it came before its transaction: it counts from now on
            self.add_label(label)
        return values

    def bytes_per_key(self, prefix: str = "customer:") -> float:
        """Mean JSON size of the state of the keys with this prefix (what one active key costs)."""
        import orjson

        sizes = [len(orjson.dumps(v)) for k, v in self.state.items() if k.startswith(prefix)]
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
