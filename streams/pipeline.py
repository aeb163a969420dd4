"""Assembles the stages into one pipeline and routes internal topics between them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta

from streams.core import Out, Record, Stage
from streams.payments import PaymentsStage
from streams.settings import Settings
from streams.topics import Topics


class Pipeline:
    """Every stage of Pantau, wired by topic. Live, each stage is a Faust agent on its topics and
    internal outputs travel through Kafka; here they are handed straight to the consuming stage."""

    def __init__(self, settings: Settings, stages: Sequence[Stage]) -> None:
        self.settings = settings
        self.topics: Topics = settings.topics
        self.stages = list(stages)
        self.by_topic: dict[str, Stage] = {}
        for stage in self.stages:
            for topic in stage.consumes:
                if topic in self.by_topic:
                    raise ValueError(f"topic {topic} consumed by two stages")
                self.by_topic[topic] = stage
        self.internal = set(self.topics.internal())

    def stage_for(self, topic: str) -> Stage | None:
        """The stage that consumes a topic, if any."""
        return self.by_topic.get(topic)

    def _route(self, outs: Iterable[Out], sink: Callable[[Out], None]) -> None:
        pending: dict[str, list[Record]] = defaultdict(list)
        for out in outs:
            if out.topic in self.internal and out.topic in self.by_topic:
                pending[out.topic].append(internal_record(out))
            else:
                sink(out)
        for topic, records in pending.items():
            self._route(self.by_topic[topic].process(records), sink)

    def process(self, records: Sequence[Record], sink: Callable[[Out], None]) -> None:
        """Run one batch of records of one topic through its stage, then every stage's timers."""
        if not records:
            return
        stage = self.by_topic.get(records[0].topic)
        if stage is None:
            raise KeyError(f"no stage consumes {records[0].topic}")
        self._route(stage.process(records), sink)

    def tick(self, sink: Callable[[Out], None]) -> None:
        """Let every stage emit what its event-time watermark makes due."""
        for stage in self.stages:
            self._route(stage.tick(), sink)

    def close(self, sink: Callable[[Out], None]) -> None:
        """End of input: flush every stage."""
        for stage in self.stages:
            self._route(stage.close(), sink)


def internal_record(out: Out) -> Record:
    """An internal output as the consuming stage would receive it from Kafka."""
    import orjson

    key = out.key.encode() if out.key is not None else None
    return Record(topic=out.topic, key=key, value=orjson.dumps(out.value))


def build_stages(settings: Settings) -> list[Stage]:
    """The stages of a full Pantau pipeline, configured from settings."""
    topics = settings.topics
    lateness = timedelta(seconds=settings.allowed_lateness_s)
    # fraud (issue 4): features, rules (hot-reloaded from pantau.rules), model, labels
    from streams.fraud import build_fraud

    scorer, fraud_stages = build_fraud(settings)
    # callbacks, settlement, balances, VAT (issue 5)
    from streams.settlement import build_settlement

    vat, settlement_feed, settlement_stages = build_settlement(settings)
    # health (issue 3): pre-aggregates in payments (per worker), merged per channel by "health"
    from rules.health import load_health_rules
    from streams.health import FailoverStateStage, HealthObserver, HealthStage

    health_rules = load_health_rules(settings.health_rules)  # a bad file raises naming its line
    health_observer = HealthObserver(topics, health_rules)
    health = HealthStage(topics, health_rules, lateness=lateness)
    health_state = FailoverStateStage(topics, health)  # live: every worker reads gateway.failover
    payments = PaymentsStage(
        topics,
        fraud=scorer,
        vat=vat,
        observers=[settlement_feed, health_observer],
        max_bytes=settings.max_message_bytes,
        lateness=lateness,
        scope_partitions=settings.scope_partitions(),
    )
    return [payments, *fraud_stages, *settlement_stages, health, health_state]


def build_pipeline(settings: Settings | None = None) -> Pipeline:
    """A full pipeline from settings (the environment's when none are given)."""
    settings = settings or Settings()
    return Pipeline(settings, build_stages(settings))
