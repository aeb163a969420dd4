"""The changelog on the real broker: written in record batches per partition, read back whole to
the end the broker reports (Tansu's end is the last batch's base offset + 1), and a takeover's
reading of its markers."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from models.inputs import Transaction
from streams.core import Record
from streams.payments import PaymentsStage
from streams.pipeline import build_stages
from streams.statelog import MARKER, PartitionReader, PartitionWriter, PaymentsStateLog
from tests.conftest import DESIGN_TRANSACTION
from tests.integration.conftest import Sandbox

pytestmark = pytest.mark.integration


async def _write_then_read(sandbox: Sandbox) -> tuple[list[bytes], list[bytes]]:
    topic = sandbox.topics.payments_state
    writer = PartitionWriter(sandbox.settings)
    reader = PartitionReader(sandbox.settings)
    written: list[bytes] = []
    try:
        # Eight writes of 650 records (one record batch each): a reader taking 5,000 records at a
        # time stops inside the last batch, past the end Tansu reports (its base offset + 1).
        for batch in range(8):
            messages = [(f"k{batch}-{i}".encode(), b"v" * 120) for i in range(650)]
            written += [key for key, _ in messages]
            await writer.write(topic, {0: messages})
        read: list[bytes] = []
        async for messages in reader.read(topic, 0):
            read += [m.key for m in messages]
    finally:
        await writer.close()
        await reader.close()
    return written, read


def test_a_changelog_is_read_to_its_last_record(sandbox: Sandbox) -> None:
    written, read = asyncio.run(_write_then_read(sandbox))
    assert read == written  # every record, the last batch's tail included, in order


def transaction() -> Transaction:
    return Transaction.model_validate(dict(DESIGN_TRANSACTION))


async def _restore_markers(sandbox: Sandbox) -> PaymentsStage:
    """Partition 0 closed by a marker with its last batch's decisions, partition 1 by a marker
    from before decisions were logged; both restored by a new owner."""
    stage = next(s for s in build_stages(sandbox.settings) if isinstance(s, PaymentsStage))
    assert stage.fraud is not None
    decision = stage.fraud.score([transaction()])[0]
    value = decision.model_dump(mode="json")
    writer = PartitionWriter(sandbox.settings)
    reader = PartitionReader(sandbox.settings)
    log = PaymentsStateLog(stage, sandbox.settings, writer, reader)
    topic = sandbox.topics.payments_state
    try:
        new = {"offset": 41, "first": 37, "decided": [["attempt-1", value]]}
        await writer.write(topic, {0: [(MARKER, orjson.dumps(new))]})
        await writer.write(topic, {1: [(MARKER, orjson.dumps({"offset": 9}))]})
        stage.fraud.recent.clear()
        await log.before([Record(sandbox.topics.transactions, b"{}", b"c", p, 50) for p in (0, 1)])
    finally:
        await writer.close()
        await reader.close()
    return stage


def test_a_new_owner_skips_what_was_delivered_and_re_sends_the_logged_batch(
    sandbox: Sandbox,
) -> None:
    stage = asyncio.run(_restore_markers(sandbox))
    assert stage.fraud is not None
    # Partition 0: records before the logged batch are skipped; its decisions are re-sent as
    # logged. Partition 1 (an older marker): everything up to it was delivered.
    assert stage.delivered == {0: 36, 1: 9}
    assert list(stage.fraud.recent) == ["attempt-1"]
    remembered = stage.fraud.recent["attempt-1"].model_dump(mode="json")
    assert orjson.dumps(remembered) == orjson.dumps(
        stage.fraud.score([transaction()])[0].model_dump(mode="json")
    )
