"""Faust's aiokafka transport with a settable fetch wait (Faust hard-codes 1.5 s)."""

from __future__ import annotations

from typing import Any

import faust
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # How long the broker may hold a fetch with no data. Kafka answers as soon as data
        # arrives, Tansu only when the wait is over: with Faust's 1.5 s every batch on the
        # embedded broker was up to 1.5 s old before Pantau saw it. Read by aiokafka at start().
        consumer._fetch_max_wait_ms = self.app.conf.pantau_fetch_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class PantauApp(faust.App):
    """A Faust app whose Kafka consumer waits at most `fetch_wait_ms` for data per fetch."""

    def __init__(self, *args: Any, fetch_wait_ms: int = 500, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conf.pantau_fetch_wait_ms = fetch_wait_ms

    def _new_transport(self) -> Any:
        url = self.conf.broker_consumer[0]
        if drivers.by_url(url) is faust_aiokafka.Transport:
            return _Transport(self.conf.broker_consumer, self)
        return super()._new_transport()
