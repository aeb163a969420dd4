"""bench.store runs end to end at a tiny size and measures both kinds of store alike."""

from __future__ import annotations

import math
from pathlib import Path


def test_store_bench_runs_at_a_tiny_size(tmp_path: Path) -> None:
    from bench import store

    report = store.run(customers=300, per_customer=2, cache_mb=4, directory=tmp_path)
    values = {f.what.split(",")[0]: f.value for f in report.figures}
    assert len(report.figures) >= 6
    for fig in report.figures:
        assert math.isfinite(fig.value) and fig.value >= 0, fig
    assert values["FeatureStore.apply on dicts"] > 0
    assert values["FeatureStore.apply on RocksDB"] > 0
    assert values["bytes on disk per customer"] > 0
    assert "600 transactions" in report.notes[0]
    assert list(tmp_path.iterdir()) == []  # the bench's RocksDB files are gone


def test_both_kinds_hold_the_same_keys(tmp_path: Path) -> None:
    from bench.store import measure

    memory = measure("memory", 200, 2, tmp_path, 4)
    rocks = measure("rocksdb", 200, 2, tmp_path, 4)
    assert memory["events"] == rocks["events"] == 400
    assert memory["keys"] == rocks["keys"] > 200
    assert memory["disk_bytes"] == 0 and rocks["disk_bytes"] > 0
    assert rocks["disk_flushed_bytes"] > 0
    assert list(tmp_path.iterdir()) == []
