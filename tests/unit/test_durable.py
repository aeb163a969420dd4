"""Durable state: changed keys per source partition, changelog values, restore and hand-over."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.durable import (
    PartitionedMaps,
    PartitionedState,
    TrackedMap,
    decode_value,
    encode_value,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@given(st.binary(max_size=64) | json_values.filter(lambda v: v is not None))
def test_a_value_survives_the_changelog(value: Any) -> None:
    assert decode_value(encode_value(value)) == value


def test_bytes_are_carried_as_they_are() -> None:
    packed = b"{not json at all\x00\xff"
    assert decode_value(encode_value(packed)) == packed
    assert isinstance(decode_value(encode_value(packed)), bytes)


def test_a_tracked_map_remembers_changed_keys_once_per_drain() -> None:
    state = TrackedMap("")
    state["customer:a"] = 1
    state["customer:a"] = 2
    state["device:d"] = {"b": []}
    assert state.get("customer:a") == 2 and len(state) == 2
    assert state.drain() == {"customer:a", "device:d"}
    assert state.drain() == set()
    del state["device:d"]
    assert state.drain() == {"device:d"}
    state.load([("customer:b", 5), ("customer:a", None)])
    assert dict(state.items()) == {"customer:b": 5}
    assert state.drain() == set()  # what was restored is not a change


def test_a_prefix_limits_what_is_tracked() -> None:
    state = TrackedMap("customer:")
    state["customer:a"] = 1
    state["merchant:m"] = 1
    assert state.drain() == {"customer:a"}


def _store() -> tuple[TrackedMap, PartitionedState]:
    state = TrackedMap("")
    return state, PartitionedState(state, exclusive="customer:")


def test_changes_are_grouped_by_the_partition_that_last_touched_each_key() -> None:
    state, durable = _store()
    durable.own("customer:a", 0)
    durable.own("device:d", 0)
    state["customer:a"] = {"n": 1}
    state["device:d"] = {"n": 1}
    durable.own("customer:b", 3)
    durable.own("device:d", 3)
    state["customer:b"] = {"n": 1}
    state["device:d"] = {"n": 2}
    state["merchant:unowned"] = 1  # no partition (a replay): not in any changelog
    assert durable.changes() == {
        0: {"customer:a": {"n": 1}},
        3: {"customer:b": {"n": 1}, "device:d": {"n": 2}},
    }
    assert durable.changes() == {}


def test_a_deleted_key_is_logged_once_and_its_owner_forgotten() -> None:
    state, durable = _store()
    for i in range(100):
        durable.own(f"customer:{i}", i % 4)
        state[f"customer:{i}"] = {"n": i}
    durable.changes()
    for i in range(90):
        del state[f"customer:{i}"]  # expired
    deleted = durable.changes()
    assert sum(len(v) for v in deleted.values()) == 90
    assert all(value is None for part in deleted.values() for value in part.values())
    assert set(durable.owner) == {f"customer:{i}" for i in range(90, 100)}
    durable.own("customer:5", 1)  # back: owned again before it is written
    state["customer:5"] = {"n": 1}
    assert durable.changes() == {1: {"customer:5": {"n": 1}}}


def test_a_takeover_loads_customers_and_only_the_shared_keys_this_worker_lacks() -> None:
    state, durable = _store()
    durable.own("device:mine", 1)
    state["device:mine"] = "local"
    durable.changes()
    held = durable.restore(
        2,
        [
            ("customer:a", {"v": 1}, 10),
            ("customer:a", {"v": 2}, 11),  # the latest of a key wins
            ("customer:gone", {"v": 1}, 10),
            ("customer:gone", None, 12),  # deleted
            ("device:mine", "theirs", 13),  # this worker's own stays
            ("device:new", "old", 10),
        ],
    )
    assert held == 1
    assert state["customer:a"] == {"v": 2} and "customer:gone" not in state
    assert state["device:mine"] == "local"
    assert state["device:new"] == "old"
    # Another partition's changelog has a newer version of a shared key this worker only restored
    durable.restore(5, [("device:new", "newer", 20)])
    assert state["device:new"] == "newer"
    durable.restore(6, [("device:new", "older", 15)])
    assert state["device:new"] == "newer"
    # Once this worker changes it, it is its own
    durable.own("device:new", 5)
    state["device:new"] = "changed here"
    durable.changes()
    durable.restore(7, [("device:new", "later still", 30)])
    assert state["device:new"] == "changed here"
    assert durable.changes() == {}


def test_a_shared_key_evicted_as_restored_gets_its_tombstone_where_it_came_from() -> None:
    state, durable = _store()
    durable.restore(3, [("device:d", "theirs", 10), ("customer:a", 1, 10)])
    del state["device:d"]  # evicted (idle) before any record here changed it
    del state["customer:a"]
    assert durable.changes() == {3: {"device:d": None, "customer:a": None}}


def test_handing_a_partition_over_drops_its_customers_and_keeps_shared_keys() -> None:
    state, durable = _store()
    durable.restore(1, [("customer:a", 1, 1), ("customer:b", 1, 1), ("device:d", 1, 1)])
    durable.restore(2, [("customer:c", 1, 1)])
    assert durable.drop(1) == 2
    assert set(state) == {"customer:c", "device:d"}
    assert durable.drop(1) == 0


def _maps() -> tuple[TrackedMap, TrackedMap, PartitionedMaps]:
    waiting, done = TrackedMap(""), TrackedMap("")
    return waiting, done, PartitionedMaps({"waiting": waiting, "done": done})


def test_partitioned_maps_log_each_key_to_its_partition_and_forget_deleted_ones() -> None:
    waiting, done, durable = _maps()
    durable.own("t1", 0)
    durable.own("t2", 3)
    waiting["t1"] = {"at": 1}
    waiting["t2"] = {"at": 2}
    done["unowned"] = 1  # no partition (a replay): never logged
    assert durable.changes() == {0: {"waiting/t1": {"at": 1}}, 3: {"waiting/t2": {"at": 2}}}
    del waiting["t1"]
    done["t1"] = {"final": 5}
    del waiting["t2"]
    assert durable.changes() == {
        0: {"waiting/t1": None, "done/t1": {"final": 5}},
        3: {"waiting/t2": None},
    }
    assert durable.owner == {"t1": 0}  # t2 is in no map any more: its owner is forgotten
    assert durable.changes() == {}


def test_partitioned_maps_restore_the_latest_writes_in_their_order_and_drop_them() -> None:
    waiting, done, durable = _maps()
    held = durable.restore(
        2,
        [
            ("waiting/a", 1, 1),
            ("waiting/b", 2, 2),
            ("waiting/a", 3, 3),  # a's latest write is after b's: a comes last
            ("waiting/c", 4, 4),
            ("waiting/c", None, 5),
            ("other/x", 1, 6),  # a map this state lacks
        ],
    )
    assert held == 2 and list(waiting) == ["b", "a"] and waiting["a"] == 3
    assert durable.changes() == {}  # restored, not changed
    durable.restore(5, [("done/z", 9, 1)])
    assert durable.drop(2) == 2
    assert not waiting and dict(done) == {"z": 9} and durable.owner == {"z": 5}


def test_a_side_map_shares_the_changelog_and_its_keys_belong_to_their_partition() -> None:
    state, side = TrackedMap(""), TrackedMap("")
    durable = PartitionedState(state, exclusive="customer:", side=side, side_prefix="tx:")
    durable.own("customer:a", 2)
    state["customer:a"] = {"v": 1}
    side["tx:2/0a1"] = b"shard"
    assert durable.changes() == {2: {"customer:a": {"v": 1}, "tx:2/0a1": b"shard"}}
    other_state, other_side = TrackedMap(""), TrackedMap("")
    other = PartitionedState(other_state, exclusive="customer:", side=other_side, side_prefix="tx:")
    assert other.restore(2, [("customer:a", {"v": 1}, 1), ("tx:2/0a1", b"shard", 1)]) == 1
    assert other_side.data == {"tx:2/0a1": b"shard"} and "tx:2/0a1" not in other_state.data
    other_side["tx:2/0a1"] = b"shard, labelled"  # a label counted by the new owner
    assert other.changes() == {2: {"tx:2/0a1": b"shard, labelled"}}
    other_side["tx:2/0a1"] = b"shard, labelled twice"  # changed, then handed over unlogged:
    assert other.drop(2) == 2
    assert not other_side.data and not other_state.data
    assert other.changes() == {}  # no tombstone: the partition's new owner holds the shard
