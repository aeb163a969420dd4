"""The senders' sample logs: per partition and time bucket, so a batch rewrites little; expiry
by whole buckets; everything a partition holds sent again on takeover."""

from __future__ import annotations

from typing import Any, cast

from streams.alert_windows import DELAY, SAMPLE_BUCKET_S, SampleLog, subject_of
from streams.durable import PartitionedMaps, TrackedMap

T0 = 1_795_230_000.0


def _log() -> tuple[SampleLog, PartitionedMaps]:
    log = SampleLog(
        DELAY,
        TrackedMap(""),
        3600,
        lambda subject: dict(zip(("channel", "method"), subject.split("|"), strict=True)),
    )
    log.durable = PartitionedMaps({"delays": cast(TrackedMap, log.state)})
    return log, log.durable


def test_a_batch_rewrites_only_the_buckets_it_added_to() -> None:
    """An hour of settlements, one a second, logged in batches of 50: each batch's changelog
    write holds that batch's buckets (at most 60 samples), not the window's thousands."""
    log, durable = _log()
    written: list[int] = []
    for i in range(3600):
        log.add(2, "BCA|virtual_account", [T0 + i, 60.0, f"t{i}"])
        if i % 50 == 49:
            changes = durable.changes()
            assert set(changes) == {2}
            written.append(sum(len(v) for v in changes[2].values()))
    assert max(written) <= 50 + SAMPLE_BUCKET_S
    assert len(log.of("BCA|virtual_account")) == 3600
    assert all(subject_of(k) == "BCA|virtual_account" for k in log.state)


def test_expiry_drops_whole_buckets_and_cuts_the_edge_one() -> None:
    log, durable = _log()
    for i in range(0, 7200, 3):
        log.add(1, "OVO|ewallet", [T0 + i, float(i), f"t{i}"])
    log.add(1, "OVO|ewallet", [T0 + 5, 1.0, "late"])  # a late sample, in an old bucket
    durable.changes()
    log.expire(T0 + 7200)
    kept = log.of("OVO|ewallet")
    assert kept and all(s[0] > T0 + 3600 for s in kept)
    assert len(kept) == len([i for i in range(0, 7200, 3) if i > 3600])
    deleted = durable.changes()[1]
    gone = {k.removeprefix("delays/"): v for k, v in deleted.items()}
    assert gone and all(v is None for k, v in gone.items() if k not in log.state)
    assert len([v for v in gone.values() if v is None]) >= 3600 // SAMPLE_BUCKET_S


def test_a_partition_taken_over_is_sent_again_alone() -> None:
    log, _ = _log()
    for p in (0, 1):
        for i in range(30):
            log.add(p, "BRI|virtual_account", [T0 + i, 10.0, f"p{p}-{i}"])
    log.drain("pantau.alert-samples", T0)
    assert log.drain("pantau.alert-samples", T0) == []
    log.resend(1)
    [message] = log.drain("pantau.alert-samples", T0 + 30)
    value: dict[str, Any] = message.value
    assert message.key == "settlement_delay_high/BRI/virtual_account"
    assert sorted(s[2] for s in value["samples"]) == sorted(f"p1-{i}" for i in range(30))
