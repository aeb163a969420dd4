"""The worker's Faust configuration and the small helpers of the live edge (no broker needed)."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from streams.app import EMBEDDED_SESSION_TIMEOUT_S, faust_config
from streams.broker import BrokerError, bootstrap_servers, client_options
from streams.core import Out
from streams.live import encode, log_failure
from streams.settings import Settings
from streams.worker import RepeatFilter, _safe_url, wait_for_broker


def test_embedded_profile_joins_fast_and_never_asks_for_exactly_once() -> None:
    conf = faust_config(Settings(embedded=True, session_timeout_s=30))
    assert conf["broker_session_timeout"] == EMBEDDED_SESSION_TIMEOUT_S <= 10
    assert conf["broker_heartbeat_interval"] < conf["broker_session_timeout"]
    assert conf["processing_guarantee"] == "at_least_once"
    assert conf["store"] == "memory://"


def test_real_kafka_profile_keeps_the_configured_session_timeout() -> None:
    conf = faust_config(Settings(session_timeout_s=45, partitions=12, web_port=7000))
    assert conf["broker_session_timeout"] == 45
    assert conf["broker_heartbeat_interval"] == 3.0
    assert conf["topic_partitions"] == 12
    assert conf["web_port"] == 7000 and conf["web_enabled"] is True
    assert faust_config(Settings(web_port=0))["web_enabled"] is False


def test_faust_files_stay_out_of_the_working_tree_whatever_the_store() -> None:
    for store in ("memory://", "rocksdb://"):
        conf = faust_config(Settings(store=store))
        assert not Path(conf["datadir"]).resolve().is_relative_to(Path.cwd().resolve())
        assert conf["store"] == "memory://"  # no Faust tables: the feature state is Pantau's


def test_a_bad_store_url_is_refused_naming_the_setting() -> None:
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="PANTAU_STORE"):
        Settings(store="redis://x")


def test_sasl_credentials_come_from_settings_secrets() -> None:
    creds = {"mechanism": "SCRAM-SHA-512", "username": "pantau", "password": "s3cret-value"}
    conf = faust_config(Settings(broker_credentials={k: SecretStr(v) for k, v in creds.items()}))
    sasl = conf["broker_credentials"]
    assert sasl.username == "pantau" and sasl.password == "s3cret-value"
    assert str(sasl.mechanism.value) == "SCRAM-SHA-512"
    assert "s3cret-value" not in repr(
        Settings(broker_credentials={"password": SecretStr("s3cret-value")})
    )


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("kafka://localhost:9092", ["localhost:9092"]),
        ("kafka://a:1;kafka://b:2", ["a:1", "b:2"]),
        ("a:1,b:2", ["a:1", "b:2"]),
    ],
)
def test_bootstrap_servers(url: str, servers: list[str]) -> None:
    assert bootstrap_servers(url) == servers


def test_broker_url_is_printed_without_credentials() -> None:
    assert (
        _safe_url("kafka://user:pw@host:9092;kafka://h2:9093")
        == "kafka://host:9092;kafka://h2:9093"
    )


def test_outputs_are_utf8_json_with_string_keys() -> None:
    key, value = encode(
        Out("payments.enriched", "trx-1", {"amount": "150000.00", "channel": "BCA"})
    )
    assert key == b"trx-1"
    assert value == b'{"amount":"150000.00","channel":"BCA"}'
    assert encode(Out("ops.alerts", None, {}))[0] is None


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, "x.py", 1, msg, args, None)


def test_repeated_library_messages_are_held_back_and_counted() -> None:
    repeat = RepeatFilter(window_s=0.2)
    template = "Unable connect to node with id %s: %s"
    passed = [repeat.filter(_record("aiokafka.conn", template, 1, i)) for i in range(50)]
    assert passed == [True] + [False] * 49
    # Another template, and Pantau's own messages, are not held back.
    assert repeat.filter(_record("aiokafka.client", "Unable to update metadata from %s", [1]))
    assert all(repeat.filter(_record("streams.live", template, 1, 2)) for _ in range(5))
    time.sleep(0.25)
    later = _record("aiokafka.conn", template, 1, "x")
    assert repeat.filter(later)
    assert "[49 like it in the last 0 s not shown]" in later.getMessage()


def test_worker_waits_for_a_reachable_broker_and_names_an_unreachable_one() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        wait_for_broker(f"kafka://127.0.0.1:1;kafka://127.0.0.1:{port}", 1.0)
    with pytest.raises(BrokerError, match=r"cannot reach the broker at kafka://127\.0\.0\.1:1 "):
        wait_for_broker("kafka://user:pw@127.0.0.1:1", 0.3)


def test_clients_outside_faust_get_the_same_credentials() -> None:
    plain = client_options(Settings(broker="kafka://k1:9092;kafka://k2:9092"))
    assert plain == {"bootstrap_servers": ["k1:9092", "k2:9092"]}
    creds = {"mechanism": "scram-sha-256", "username": "pantau", "password": "pw-value"}
    settings = Settings(broker_credentials={k: SecretStr(v) for k, v in creds.items()})
    sasl = client_options(settings, "kafka://other:9093")
    assert sasl == {
        "bootstrap_servers": ["other:9093"],
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "pantau",
        "sasl_plain_password": "pw-value",
    }


def _fails_with_a_card_number() -> None:
    raise ValueError("bad value 4111111111111111 in device_id")


def test_stage_failures_are_logged_with_card_numbers_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        _fails_with_a_card_number()
    except ValueError as exc:
        with caplog.at_level(logging.ERROR, logger="streams.live"):
            log_failure("stage payments failed on a batch of 3", exc)
    text = caplog.text
    assert "stage payments failed on a batch of 3: ValueError: bad value 411111" in text
    assert "4111111111111111" not in text
    assert "_fails_with_a_card_number" in text  # where it happened


def test_the_consumer_asks_for_the_configured_fetch_wait() -> None:
    """Faust hard-codes a 1.5 s fetch wait; Tansu holds every fetch that long, so the worker's
    consumer gets the settings' wait instead (20 ms at most in the embedded profile)."""
    import asyncio

    from streams.app import EMBEDDED_FETCH_WAIT_MS, fetch_wait_ms
    from streams.transport import PantauApp

    assert fetch_wait_ms(Settings(embedded=True)) == EMBEDDED_FETCH_WAIT_MS
    assert fetch_wait_ms(Settings(fetch_wait_ms=800)) == 800

    async def created(wait: int) -> int:
        app = PantauApp("fetch-wait-test", broker="kafka://127.0.0.1:1", fetch_wait_ms=wait)
        thread = app.consumer._thread
        consumer = thread._create_worker_consumer(app.transport)
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()

    assert asyncio.run(created(20)) == 20
    assert asyncio.run(created(700)) == 700
