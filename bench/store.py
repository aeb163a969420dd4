"""bench.store: what the RocksDB state store costs against dicts (apply time, memory, disk)."""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import Report
from bench.state import rss_bytes, transactions

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("memory", "rocksdb")


def measure(kind: str, customers: int, per_customer: int, directory: Path, cache_mb: int) -> dict:
    """In this process: fill a FeatureStore on `kind` mappings with bench.state's transactions;
    apply µs/event, resident memory growth and (RocksDB) bytes on disk."""
    from models.features import FeatureStore
    from streams.settings import Settings
    from streams.stores import RocksMapping, open_state

    url = "memory://" if kind == "memory" else f"rocksdb://{directory}?cache_mb={cache_mb}"
    settings = Settings(store=url, app_id="bench-store")
    store = FeatureStore(
        state=open_state(settings, "features"), tx_merchants=open_state(settings, "tx-merchants")
    )
    next(transactions(1, 1))  # imports and first-use allocations before the baseline
    gc.collect()
    before = rss_bytes()
    full_gcs = gc.get_stats()[2]["collections"]
    events = 0
    spent = 0.0
    clock = time.perf_counter
    started = clock()
    for tx in transactions(customers, per_customer):
        t0 = clock()
        store.apply(tx)
        spent += clock() - t0
        events += 1
    wall = clock() - started
    gc.collect()
    grown = rss_bytes() - before
    found: dict[str, Any] = {
        "kind": kind,
        "events": events,
        "apply_us": spent / events * 1e6,
        "wall_s": wall,
        "rss_bytes": grown,
        "keys": len(store.state),
        "full_gcs": gc.get_stats()[2]["collections"] - full_gcs - 1,  # less the collect above
        "disk_bytes": 0,
        "disk_flushed_bytes": 0,
    }
    mappings = [store.state, store.tx_merchants]
    if all(isinstance(m, RocksMapping) for m in mappings):
        rocks = [m for m in mappings if isinstance(m, RocksMapping)]
        for m in rocks:
            m.flush()
        found["disk_flushed_bytes"] = sum(m.disk_bytes() for m in rocks)
        for m in rocks:
            m.compact()
        found["disk_bytes"] = sum(m.disk_bytes() for m in rocks)
        for m in rocks:
            m.close()
    return found


def _child(kind: str, customers: int, per_customer: int, directory: Path, cache_mb: int) -> dict:
    """`measure` in a fresh interpreter, so one kind's freed memory cannot hide the other's."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    args = [sys.executable, "-m", "bench.store", "--child", kind, "--customers", str(customers)]
    args += ["--per-customer", str(per_customer), "--dir", str(directory)]
    args += ["--cache-mb", str(cache_mb)]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench.store --child {kind} exited {done.returncode}: {done.stderr}")
    result: dict = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(
    *,
    customers: int = 100_000,
    per_customer: int = 3,
    cache_mb: int = 64,
    directory: Path | None = None,
) -> Report:
    from streams.stores import MAX_WRITE_BUFFERS, WRITE_BUFFER_MB

    report = Report("store")
    base = Path(tempfile.mkdtemp(prefix="pantau-bench-store-", dir=directory))
    try:
        found = {kind: _child(kind, customers, per_customer, base, cache_mb) for kind in KINDS}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    memory, rocks = found["memory"], found["rocksdb"]
    events = memory["events"]
    what = f"{customers:,} customers × {per_customer}"
    report.add(f"FeatureStore.apply on dicts, {what}", memory["apply_us"], "µs/event")
    report.add(
        f"FeatureStore.apply on RocksDB, {what}",
        rocks["apply_us"],
        "µs/event",
        note=f"block cache {cache_mb} MiB per mapping, values stored as tagged bytes, no WAL",
    )
    report.add("RocksDB / dicts apply time (same run)", rocks["apply_us"] / memory["apply_us"], "×")
    report.add(
        "resident memory growth per customer, dicts",
        memory["rss_bytes"] / customers,
        "bytes",
        note=f"{memory['rss_bytes'] / 2**20:,.0f} MiB for {memory['keys']:,} keys",
    )
    report.add(
        "resident memory growth per customer, RocksDB",
        rocks["rss_bytes"] / customers,
        "bytes",
        note=f"{rocks['rss_bytes'] / 2**20:,.0f} MiB in all: bounded by the block cache "
        f"({cache_mb} MiB) and memtables (≤ {MAX_WRITE_BUFFERS} × {WRITE_BUFFER_MB} MiB) per "
        "mapping, not by the number of customers",
    )
    report.add(
        "bytes on disk per customer, RocksDB",
        rocks["disk_bytes"] / customers,
        "bytes",
        note=f"after flush and compaction, LZ4 ({rocks['disk_flushed_bytes'] / customers:,.0f} "
        "bytes right after the flush)",
    )
    if rocks["rss_bytes"] > 0:
        report.add(
            "dicts / RocksDB resident memory (same run)",
            memory["rss_bytes"] / rocks["rss_bytes"],
            "×",
        )
    report.notes.append(
        f"{events:,} transactions from bench.state's generator, each kind in a fresh process; "
        f"apply time excludes building the transactions; wall {memory['wall_s']:.1f} s (dicts) "
        f"and {rocks['wall_s']:.1f} s (RocksDB)"
    )
    report.notes.append(
        f"full garbage collections during the fill: {memory['full_gcs']} on dicts, "
        f"{rocks['full_gcs']} on RocksDB; each one walks every live container, and on dicts every "
        "list and dict of the state is one, so their apply time grows with the customers held"
    )
    return report


def main(argv: list[str] | None = None) -> Report | None:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--per-customer", type=int, default=3)
    parser.add_argument("--cache-mb", type=int, default=64, help="RocksDB block cache per mapping")
    parser.add_argument("--dir", type=Path, default=None, help="where RocksDB writes (a disk)")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        found = measure(args.child, args.customers, args.per_customer, args.dir, args.cache_mb)
        print(json.dumps(found))
        return None
    report = run(
        customers=args.customers,
        per_customer=args.per_customer,
        cache_mb=args.cache_mb,
        directory=args.dir,
    )
    report.print()
    return report


if __name__ == "__main__":
    main()
