"""bench.state: bytes of state per active customer (fraud features) at 100k and 1M customers."""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bench import Report

TARGET_BYTES = 1024.0
START = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
METHODS = ("virtual_account", "card", "ewallet", "qris")


def transactions(customers: int, per_customer: int, seed: int = 5) -> Iterator[Any]:
    """Active customers' transactions over one day: each customer pays `per_customer` times from
    its own device and IP (card payments with its own card), at 200 merchants."""
    import random

    from models.inputs import Method, Status, Transaction

    rng = random.Random(seed)
    spacing = 86_400 / max(1, customers * per_customer)
    n = 0
    for round_ in range(per_customer):
        for c in range(customers):
            method = METHODS[c % len(METHODS)]
            card = method == "card"
            at = START + timedelta(seconds=n * spacing)
            n += 1
            yield Transaction.model_construct(
                transaction_id=f"trx-{round_:02d}-{c:07d}",
                merchant_id=f"m-{rng.randrange(200):03d}",
                customer_id=f"c-{c:07d}",
                amount=Decimal(rng.choice((25_000, 150_000, 1_250_000))),
                currency="IDR",
                method=Method(method),
                channel="VISA" if card else "BCA",
                status=Status.SUCCESS if rng.random() < 0.9 else Status.FAILED,
                error_code=None,
                latency_ms=300,
                created_at=at,
                goods_category="standard",
                price_includes_vat=True,
                luxury_tax_rate=None,
                cross_border=False,
                card_bin="411111" if card else None,
                card_last4=f"{c % 10_000:04d}" if card else None,
                card_country="ID" if card else None,
                device_id=f"d-{c:07x}",
                ip=f"10.{c >> 16 & 255}.{c >> 8 & 255}.{c & 255}",
                ip_country="ID",
            )


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of an object and everything it holds (each object once)."""
    seen = seen if seen is not None else set()
    stack = [obj]
    total = 0
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return total


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def available_bytes() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def fill(customers: int, per_customer: int) -> tuple[Any, float]:
    """A FeatureStore after every active customer's transactions; seconds it took."""
    from models.features import FeatureStore

    store = FeatureStore()
    started = time.perf_counter()
    for tx in transactions(customers, per_customer):
        store.apply(tx)
    return store, time.perf_counter() - started


def measure_small(customers: int, per_customer: int) -> tuple[Any, float, dict[str, float], float]:
    """(store, deep bytes per customer, the same by part, apply µs/event)."""
    store, seconds = fill(customers, per_customer)
    parts: dict[str, float] = defaultdict(float)
    seen: set[int] = set()
    for key, value in store.state.items():
        parts[key.split(":", 1)[0]] += deep_size(key, seen) + deep_size(value, seen)
    parts["transactions kept for late labels"] = deep_size(store.tx_merchants, seen)
    per = {k: v / customers for k, v in parts.items()}
    return store, sum(parts.values()) / customers, per, seconds / (customers * per_customer) * 1e6


def measure_scaled(store: Any, customers: int, factor: int) -> float:
    """Bytes per customer by resident memory growth when `factor` times as many customers' state
    is held: each value copied from its stored bytes under a new key (as a table restores it)."""
    from models.features import FeatureStore

    gc.collect()
    before = rss_bytes()
    big = FeatureStore()
    for copy in range(factor):
        suffix = f"~{copy}"
        for key, value in store.state.items():
            big.state[key + suffix] = bytes(memoryview(value))  # a new object, as read back
        for key, value in store.tx_merchants.items():
            big.tx_merchants[key + suffix] = bytes(memoryview(value))
    gc.collect()
    grown = rss_bytes() - before
    del big
    return grown / (customers * factor)


def measure_sweep(store: Any) -> tuple[float, float, int]:
    """µs per key of a whole eviction sweep with nothing due, then with every key due (200 days
    on); and the keys it examined. Empties the store."""
    from models.features import DAY

    keys = len(store.state)
    timings = []
    for later in (0, 200 * DAY):
        store.latest += later
        started = time.perf_counter()
        sweep = store.expire(budget=keys + 1)
        timings.append((time.perf_counter() - started) / keys * 1e6)
        assert sweep is not None and sweep.kept is not None
    assert not store.state
    return timings[0], timings[1], keys


def run(*, small: int = 100_000, large: int = 1_000_000, per_customer: int = 3) -> Report:
    report = Report("state")
    store, deep, parts, apply_us = measure_small(small, per_customer)
    report.add(
        f"fraud feature state per active customer, {small:,} customers (deep size)",
        deep,
        "bytes",
        target=TARGET_BYTES,
        higher=False,
        note=f"{per_customer} transactions each within one day, own device and IP, "
        f"card payments with own card; FeatureStore.apply {apply_us:.0f} µs/event (wall)",
    )
    report.notes.append(
        "deep size per customer by part: "
        + ", ".join(f"{k} {v:,.0f} B" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]))
    )
    layouts = sorted(Counter(value[0] for value in store.state.values()).items())
    report.notes.append(
        "state values by layout (models/features.py `encode`): "
        + ", ".join(f"{tag}: {n:,}" for tag, n in layouts)
        + "; transactions kept for late labels in "
        + f"{len(store.tx_merchants):,} shards"
    )
    if large:
        factor = max(1, large // small)
        need = deep * small * factor * 1.4  # resident growth ran about 1.2× the deep size
        if available_bytes() and need > available_bytes() * 0.6:
            report.notes.append(
                f"{small * factor:,} customers skipped: needs about {need / 2**30:.1f} GiB, "
                "more than 60% of the memory available"
            )
        else:
            rss = measure_scaled(store, small, factor)
            report.add(
                f"per active customer, {small * factor:,} customers (resident memory growth)",
                rss,
                "bytes",
                target=TARGET_BYTES,
                higher=False,
                note=f"the {small:,} customers' state copied {factor}× under new keys (from its "
                "stored bytes, as a table restores it); includes the dicts' own tables and "
                "allocator overhead",
            )
    kept_us, evicted_us, keys = measure_sweep(store)
    report.add(
        f"eviction sweep per key, {keys:,} keys, none due",
        kept_us,
        "µs",
        note="FeatureStore.expire over the whole state at once (live: 500 keys per "
        "micro-batch, once a day of event time); decoding each key to its expiry",
    )
    report.add("eviction sweep per key, every key due (deleted)", evicted_us, "µs")
    del store
    report.notes.append(
        "other state does not grow per customer: health is per channel (bounded), settlement "
        "per open transaction (bounded in time and count), payments and VAT keep none"
    )
    return report


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(prog="python -m bench.state", description=__doc__)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000, help="0 to skip")
    parser.add_argument("--per-customer", type=int, default=3)
    args = parser.parse_args(argv)
    report = run(small=args.small, large=args.large, per_customer=args.per_customer)
    report.print()
    return report


if __name__ == "__main__":
    main()
