"""Changelog plumbing without a broker: retries that log an outage once, not once per attempt."""

from __future__ import annotations

import asyncio
import logging

import pytest

from streams import statelog


def test_a_retried_restore_logs_its_first_failure_and_its_recovery_only(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = {"n": 0}
    waited: list[float] = []

    async def flaky() -> None:
        calls["n"] += 1
        if calls["n"] <= 8:
            raise ConnectionError("broker away")

    async def no_wait(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(statelog.asyncio, "sleep", no_wait)
    with caplog.at_level(logging.INFO, logger=statelog.log.name):
        asyncio.run(statelog._retrying("restoring partition 3", flaky))
    assert calls["n"] == 9
    assert waited == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]  # backs off to RETRY_MAX_S
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "restoring partition 3 failed 1 time(s) (ConnectionError); retrying every 5.0 s at most",
        "restoring partition 3 succeeded after 8 failure(s)",
    ]
