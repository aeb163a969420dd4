"""The changelog on the real broker: written in record batches per partition, read back whole to
the end the broker reports (Tansu's end is the last batch's base offset + 1)."""

from __future__ import annotations

import asyncio

import pytest

from streams.statelog import PartitionReader, PartitionWriter
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
