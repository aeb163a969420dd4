"""State mappings from PANTAU_STORE: URL parsing, RocksDB mapping semantics, files cleaned up."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.features import FeatureStore
from models.inputs import FraudLabel, Transaction
from streams.settings import Settings
from streams.stores import (
    DEFAULT_CACHE_MB,
    RocksMapping,
    StoreSpec,
    StoreURLError,
    decode,
    encode,
    open_state,
    parse_store_url,
    sweep_stale,
    worker_dir,
)


@pytest.fixture
def rocks(tmp_path: Path) -> Iterator[RocksMapping]:
    mapping = RocksMapping(tmp_path / "db")
    yield mapping
    mapping.close()


# ---- the URL ---------------------------------------------------------------------------------
def test_store_urls_it_accepts() -> None:
    assert parse_store_url("memory://") == StoreSpec("memory")
    assert parse_store_url("rocksdb://") == StoreSpec("rocksdb", None, DEFAULT_CACHE_MB)
    assert parse_store_url("RocksDB://") == StoreSpec("rocksdb", None, DEFAULT_CACHE_MB)
    assert parse_store_url("rocksdb:///var/lib/pantau") == StoreSpec(
        "rocksdb", Path("/var/lib/pantau"), DEFAULT_CACHE_MB
    )
    assert parse_store_url("rocksdb:///data?cache_mb=512") == StoreSpec(
        "rocksdb", Path("/data"), 512
    )
    assert parse_store_url("rocksdb://?cache_mb=8").cache_mb == 8


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("rocksdb", "must be a URL"),
        ("redis://localhost", "unknown store 'redis'"),
        ("aerospike://", "unknown store"),
        ("rocksdb://host/dir", "a host is not allowed"),
        ("memory:///dir", "memory:// takes no directory"),
        ("memory://?cache_mb=5", "memory:// takes no directory"),
        ("rocksdb://?cache=5", "unknown option(s) cache"),
        ("rocksdb://?cache_mb=big", "cache_mb must be a whole number"),
        ("rocksdb://?cache_mb=0", "cache_mb must be a whole number"),
        ("rocksdb://?cache_mb=-3", "cache_mb must be a whole number"),
        ("rocksdb:///d#frag", "fragment"),
    ],
)
def test_a_bad_store_url_is_refused_naming_the_setting(url: str, why: str) -> None:
    with pytest.raises(StoreURLError) as caught:
        parse_store_url(url)
    assert str(caught.value).startswith(f"PANTAU_STORE={url!r}: ")
    assert why in str(caught.value)
    assert isinstance(caught.value, ValueError)  # the CLI turns it into exit 2


def test_open_state_refuses_a_bad_url_before_touching_the_disk(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PANTAU_STORE"):  # settings refuse it first
        Settings(store="rocksdb://db-host/x", state_dir=tmp_path)
    # Settings built without validation (as a test or a library caller may): still refused.
    settings = Settings.model_construct(store="rocksdb://db-host/x", state_dir=tmp_path)
    with pytest.raises(StoreURLError, match="PANTAU_STORE"):
        open_state(settings, "features")
    assert list(tmp_path.iterdir()) == []


def test_memory_store_is_a_fresh_dict_each_time() -> None:
    settings = Settings(store="memory://")
    a, b = open_state(settings, "features"), open_state(settings, "features")
    assert isinstance(a, dict) and a == {} and a is not b


# ---- values ----------------------------------------------------------------------------------
def test_values_are_tagged_bytes_or_json() -> None:
    assert encode(b"\x01raw") == b"\x00\x01raw"
    assert encode(bytearray(b"ab")) == b"\x00ab"
    assert encode({"a": [1, 2.5]}) == b'\x01{"a":[1,2.5]}'
    assert decode(encode(b"")) == b""
    assert decode(encode(b"{}")) == b"{}"  # bytes that look like JSON stay bytes
    assert decode(encode("")) == ""
    assert decode(encode(None)) is None
    with pytest.raises(ValueError, match="unknown tag"):
        decode(b"\x07xyz")


# ---- the mapping -----------------------------------------------------------------------------
def test_rocks_mapping_behaves_like_a_dict(rocks: RocksMapping) -> None:
    entry = {"b": {"m": [[29_000_000, 2, 175000.0, 1]]}, "seen": {"trx-1|1|0|success": 1}}
    rocks["customer:c-1"] = entry
    rocks["device:d-1"] = b"\x00\x01packed"
    rocks["merchant:é"] = [1, "two", 3.25, True, None]
    assert rocks["customer:c-1"] == entry
    assert rocks.get("device:d-1") == b"\x00\x01packed"
    assert rocks["merchant:é"] == [1, "two", 3.25, True, None]
    assert rocks.get("customer:nobody") is None
    assert rocks.get("customer:nobody", 7) == 7
    with pytest.raises(KeyError):
        rocks["customer:nobody"]
    assert "customer:c-1" in rocks and "customer:nobody" not in rocks
    assert 3 not in rocks  # type: ignore[comparison-overlap]
    assert len(rocks) == 3
    assert sorted(rocks) == ["customer:c-1", "device:d-1", "merchant:é"]
    assert dict(rocks.items()) == {
        "customer:c-1": entry,
        "device:d-1": b"\x00\x01packed",
        "merchant:é": [1, "two", 3.25, True, None],
    }
    assert sorted(map(repr, rocks.values())) == sorted(
        map(repr, [entry, b"\x00\x01packed", [1, "two", 3.25, True, None]])
    )
    assert ("device:d-1", b"\x00\x01packed") in rocks.items()

    rocks["device:d-1"] = {"now": "json"}  # a key can change kind
    assert rocks["device:d-1"] == {"now": "json"}
    del rocks["device:d-1"]
    assert "device:d-1" not in rocks and len(rocks) == 2
    with pytest.raises(KeyError):
        del rocks["device:d-1"]
    assert rocks.pop("merchant:é") == [1, "two", 3.25, True, None]
    assert rocks.setdefault("ip:1.2.3.4", {"n": 1}) == {"n": 1}
    rocks.update({"a": 1, "b": b"2"})
    assert dict(rocks) == {"customer:c-1": entry, "ip:1.2.3.4": {"n": 1}, "a": 1, "b": b"2"}


def test_a_value_read_is_a_copy_until_written_back(rocks: RocksMapping) -> None:
    rocks["k"] = {"n": [1]}
    value = rocks["k"]
    value["n"].append(2)
    assert rocks["k"] == {"n": [1]}
    rocks["k"] = value
    assert rocks["k"] == {"n": [1, 2]}


def test_deleting_while_iterating_sees_every_key_once(rocks: RocksMapping) -> None:
    for i in range(500):
        rocks[f"trx-{i:04d}"] = ["m-1", i, False]
    seen = []
    for key, value in rocks.items():  # as FeatureStore.expire_labels prunes tx_merchants
        seen.append(key)
        if value[1] % 2:
            del rocks[key]
    assert len(seen) == 500
    assert len(rocks) == 250 and all(int(k[4:]) % 2 == 0 for k in rocks)


def test_values_orjson_cannot_write_are_refused_not_mangled(rocks: RocksMapping) -> None:
    with pytest.raises(TypeError):
        rocks["k"] = {1: "int keys are not JSON"}
    with pytest.raises(TypeError):
        rocks["k"] = {"a set"}
    assert "k" not in rocks


_keys = st.text(max_size=12)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), _keys, _json | st.binary(max_size=24)),
        st.tuples(st.just("del"), _keys, st.none()),
    ),
    max_size=40,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_ops)
def test_rocks_mapping_agrees_with_a_dict_on_any_sequence(rocks: RocksMapping, ops: Any) -> None:
    for key in list(rocks):
        del rocks[key]
    model: dict[str, Any] = {}
    for op, key, value in ops:
        if op == "set":
            rocks[key] = value
            model[key] = value
        elif key in model:
            del rocks[key]
            del model[key]
        else:
            with pytest.raises(KeyError):
                del rocks[key]
    assert len(rocks) == len(model)
    assert sorted(rocks) == sorted(model)
    for key, value in model.items():
        assert rocks[key] == value


# ---- files -----------------------------------------------------------------------------------
def test_rocksdb_files_live_per_app_and_worker_and_go_at_close(tmp_path: Path) -> None:
    settings = Settings(store="rocksdb://", state_dir=tmp_path, app_id="pantau-a")
    features = open_state(settings, "features")
    labels = open_state(settings, "tx-merchants")
    assert isinstance(features, RocksMapping) and isinstance(labels, RocksMapping)
    here = worker_dir(tmp_path, "pantau-a")
    assert here.parent == tmp_path / "pantau-a" and here.name.endswith(f"-{os.getpid()}")
    assert features.path == here / "features" and labels.path == here / "tx-merchants"
    assert (features.path / "CURRENT").is_file()
    features["customer:c-1"] = {"x": 1}

    features.close()
    assert not features.path.exists() and features.closed
    assert here.is_dir()  # the other store of this worker is still open
    features.close()  # twice is fine
    labels.close()
    assert not (tmp_path / "pantau-a").exists()  # nothing of this app left
    assert tmp_path.is_dir()


def test_the_url_directory_wins_over_state_dir(tmp_path: Path) -> None:
    chosen, other = tmp_path / "chosen", tmp_path / "other"
    settings = Settings(store=f"rocksdb://{chosen}?cache_mb=4", state_dir=other)
    mapping = open_state(settings, "features")
    assert isinstance(mapping, RocksMapping)
    assert mapping.path.is_relative_to(chosen) and not other.exists()
    mapping.close()


def test_a_dropped_mapping_deletes_its_files(tmp_path: Path) -> None:
    mapping = RocksMapping(tmp_path / "w" / "features")
    mapping["k"] = [1]
    path = mapping.path
    del mapping
    gc.collect()
    assert not path.exists()


def test_a_forked_child_leaves_its_parents_store_alone(rocks: RocksMapping) -> None:
    rocks["k"] = [1]
    pid = os.fork()
    if pid == 0:  # the child: closing (or exiting with the finalizer) must not delete anything
        rocks.close()
        os._exit(0)
    deadline = time.monotonic() + 20
    done, status = os.waitpid(pid, os.WNOHANG)
    while not done and time.monotonic() < deadline:
        time.sleep(0.05)
        done, status = os.waitpid(pid, os.WNOHANG)
    if not done:  # closing RocksDB in a forked child hangs: that is what the guard prevents
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert done and status == 0
    assert rocks["k"] == [1] and (rocks.path / "CURRENT").exists()


def test_a_leftover_at_the_same_path_is_replaced_by_an_empty_store(tmp_path: Path) -> None:
    path = tmp_path / "w" / "features"
    path.mkdir(parents=True)
    (path / "junk").write_text("from a dead process with our pid")
    mapping = RocksMapping(path)
    assert len(mapping) == 0 and not (path / "junk").exists()
    mapping.close()


_HOLD = """
import sys, rocksdict
db = rocksdict.Rdict(sys.argv[1], rocksdict.Options(raw_mode=True))
print("open", flush=True)
sys.stdin.read()
db.close()
"""


def test_sweep_removes_dead_workers_and_keeps_live_ones(tmp_path: Path) -> None:
    app = tmp_path / "pantau"
    dead = RocksMapping(app / "host-1" / "features")
    dead["k"] = [1]
    dead._db.close()  # a worker killed without cleaning up: files stay, nobody holds the LOCK
    dead._finalizer.detach()
    assert (app / "host-1" / "features" / "LOCK").exists()
    (app / "host-3").mkdir()  # an empty leftover

    live_path = app / "host-2" / "features"
    live_path.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(live_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        mine = app / "host-9"
        mine.mkdir()
        removed = sweep_stale(app, keep=mine)
        assert sorted(p.name for p in removed) == ["host-1", "host-3"]
        assert not (app / "host-1").exists() and (live_path / "CURRENT").exists()
        assert mine.is_dir()
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0


# ---- the feature store on RocksDB ------------------------------------------------------------
def _simulated(minutes: int) -> list[Transaction]:
    from streams.simulator import generate

    return [
        Transaction.model_validate(e.value)
        for e in generate(
            scenarios=("card-testing", "account-takeover"),
            duration=timedelta(minutes=minutes),
            tx_per_second=2.5,
            seed=11,
        )
        if e.topic == "payments.transactions"
    ]


def _drive(store: FeatureStore, txs: list[Transaction]) -> list[dict[str, Any]]:
    rows = []
    for i, tx in enumerate(txs):
        rows.append(store.apply(tx))
        if i % 40 == 39:  # a confirmed fraud for an earlier transaction, some twice
            label = FraudLabel(
                transaction_id=txs[i - 30].transaction_id,
                fraud=True,
                reported_at=tx.created_at,
            )
            rows.append({"label": store.add_label(label), "again": store.add_label(label)})
    store.expire_labels(txs[-1].created_at + timedelta(days=46))
    return rows


def test_feature_rows_on_rocksdb_equal_those_on_dicts(tmp_path: Path) -> None:
    txs = _simulated(25)
    assert len(txs) > 2_500
    txs += txs[100:300]  # redeliveries: counted once, same rows as on dicts
    on_dicts = FeatureStore()
    state, labels = RocksMapping(tmp_path / "f"), RocksMapping(tmp_path / "t")
    on_rocks = FeatureStore(state=state, tx_merchants=labels)
    expected = _drive(on_dicts, txs)
    got = _drive(on_rocks, txs)
    assert got == expected
    assert sum(1 for r in expected if r.get("label")) > 10
    assert len(state) == len(on_dicts.state) > 1_000
    assert dict(state.items()) == dict(on_dicts.state)  # compact-state: values are bytes
    assert len(labels) == len(on_dicts.tx_merchants)
    state.close()
    labels.close()


def test_build_fraud_keeps_features_in_the_store_settings_name(tmp_path: Path) -> None:
    from streams.fraud import build_fraud

    scorer, _ = build_fraud(Settings(store="rocksdb://", state_dir=tmp_path))
    assert isinstance(scorer.store.state, RocksMapping)
    assert isinstance(scorer.store.tx_merchants, RocksMapping)
    assert scorer.store.state.path.parent == scorer.store.tx_merchants.path.parent
    decisions = scorer.score(_simulated(2)[:50])
    assert len(decisions) == 50 and len(scorer.store.state) > 0
    scorer.store.state.close()
    scorer.store.tx_merchants.close()
    assert list(tmp_path.iterdir()) == []

    memory, _ = build_fraud(Settings(store="memory://", state_dir=tmp_path))
    assert type(memory.store.state) is dict and type(memory.store.tx_merchants) is dict
