"""A gateway router's view of gateway.failover: a routing table kept from Pantau's signals.

Reads the topic from the beginning (it is compacted: the latest message per channel is that
channel's state), keeps one row per channel, and prints the table whenever a channel changes.

    python examples/failover_consumer.py --broker localhost:9092
    python examples/failover_consumer.py --file out/gateway.failover.jsonl   # a replay's output

A router would call `table.share(channel)` for the fraction of its normal traffic to keep sending
to a channel, and `table.alternatives(channel)` for where to send the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROUTABLE = {"healthy", "degraded"}  # degraded is a warning: keep routing, watch closely


@dataclass
class Route:
    """One channel's row: its state as of its latest signal."""

    channel: str
    method: str | None
    state: str
    probe_ratio: float
    alternatives: list[str]
    reason: str
    at: str
    since: str


@dataclass
class RoutingTable:
    """Channel → Route, from gateway.failover signals applied in order."""

    routes: dict[str, Route] = field(default_factory=dict)

    def apply(self, signal: dict[str, Any]) -> bool:
        """Apply one signal; True when it changed the channel's state. An older signal than the
        row's (a redelivery, a replay) changes nothing."""
        channel = signal["channel"]
        current = self.routes.get(channel)
        if current is not None and signal["at"] < current.at:
            return False
        self.routes[channel] = Route(
            channel=channel,
            method=signal.get("method"),
            state=signal["state"],
            probe_ratio=float(signal.get("probe_ratio") or 0.0),
            alternatives=list(signal.get("alternatives") or []),
            reason=signal.get("reason", ""),
            at=signal["at"],
            since=signal.get("since", signal["at"]),
        )
        return current is None or current.state != signal["state"]

    def share(self, channel: str) -> float:
        """The fraction of its normal traffic a channel should get now (1.0 when unknown)."""
        route = self.routes.get(channel)
        if route is None or route.state in ROUTABLE:
            return 1.0
        return route.probe_ratio  # failed_over or probing: only probe traffic

    def alternatives(self, channel: str) -> list[str]:
        """Where to send a channel's traffic instead: Pantau's ranking, minus channels that are
        themselves out now, then any other routable channel of the same method."""
        route = self.routes.get(channel)
        if route is None:
            return []
        ranked = [c for c in route.alternatives if self.share(c) == 1.0]
        ranked += sorted(
            r.channel
            for r in self.routes.values()
            if r.method == route.method
            and r.channel != channel
            and r.channel not in ranked
            and r.state in ROUTABLE
        )
        return ranked

    def render(self) -> str:
        lines = [f"{'channel':<12} {'state':<12} {'share':>6}  {'since':<25} alternatives"]
        for name in sorted(self.routes):
            r = self.routes[name]
            alts = ", ".join(self.alternatives(name)) if r.state not in ROUTABLE else ""
            lines.append(f"{name:<12} {r.state:<12} {self.share(name):>6.2f}  {r.since:<25} {alts}")
        return "\n".join(lines)


def from_lines(lines: Iterable[bytes | str], table: RoutingTable | None = None) -> RoutingTable:
    """A table from JSON lines (a replay's gateway.failover.jsonl)."""
    table = table or RoutingTable()
    for line in lines:
        if line.strip():
            table.apply(json.loads(line))
    return table


async def follow(broker: str, topic: str) -> None:
    """Read the topic from the beginning, then follow it; print the table on every change."""
    from aiokafka import AIOKafkaConsumer

    # No group: every router instance reads the whole (compacted) topic itself.
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker.split(","), group_id=None, auto_offset_reset="earliest"
    )
    table = RoutingTable()
    await consumer.start()
    try:
        async for message in consumer:
            if message.value is None:
                continue  # a tombstone: nothing to route on
            if table.apply(json.loads(message.value)):
                print(table.render(), end="\n\n", flush=True)
    finally:
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--broker", default="localhost:9092", help="Kafka bootstrap host:port")
    parser.add_argument("--topic", default="gateway.failover")
    parser.add_argument("--file", type=Path, help="read a replay's gateway.failover.jsonl instead")
    args = parser.parse_args(argv)
    if args.file is not None:
        try:
            table = from_lines(args.file.read_bytes().splitlines())
        except OSError as exc:
            print(f"{args.file}: {exc.strerror}", file=sys.stderr)
            return 2
        print(table.render())
        return 0
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops following
        asyncio.run(follow(args.broker, args.topic))
    return 0


if __name__ == "__main__":
    sys.exit(main())
