"""Metrics every consuming service exposes, named per the Prometheus guides (base units, _total).

Service-specific metrics live with their service; these are the ones dashboards and alerts can
rely on for every service alike.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_IN = Counter("pooch_messages_consumed_total", "Messages consumed.", ["service", "topic"])
MESSAGES_OUT = Counter("pooch_messages_produced_total", "Messages produced.", ["service", "topic"])
BATCH_SECONDS = Histogram(
    "pooch_batch_duration_seconds",
    "Time to process one consumed batch, outputs durable.",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG = Gauge(
    "pooch_consumer_lag_messages", "Messages behind the end of the input topic.", ["service", "topic"]
)
LAST_PROGRESS = Gauge(
    "pooch_last_progress_timestamp_seconds",
    "Unix time of the last batch processed (freshness; alert when it stops moving with lag > 0).",
    ["service"],
)
READY = Gauge("pooch_ready", "1 when the service reports ready.", ["service"])
RESTARTS = Counter(
    "pooch_part_restarts_total",
    "Parts of a service (its Kafka loop) built again inside the process after they failed, by error.",
    ["service", "part", "error"],
)

KAFKA_CLIENT_ERRORS = Counter(
    "pooch_kafka_client_errors_total",
    "Errors librdkafka reported about the cluster rather than one message, by error name "
    "(_ALL_BROKERS_DOWN, _TRANSPORT, _RESOLVE, ...): the trace a broker outage leaves in a service "
    "that rides it out.",
    ["code"],
)
# Born at 0, not at its first error: Prometheus's increase() sees no increase in a series whose
# first sample is already 1, so PoochKafkaUnreachable would miss a service's first outage.
KAFKA_CLIENT_ERRORS.labels("_ALL_BROKERS_DOWN")


class LoopMetrics:
    """Binds the shared metrics to one service, so hot paths don't re-resolve labels."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._in: dict[str, Counter] = {}
        self._out: dict[str, Counter] = {}
        self.batch_seconds = BATCH_SECONDS.labels(service)
        self.progress = LAST_PROGRESS.labels(service)
        self.ready = READY.labels(service)

    def consumed(self, topic: str, n: int = 1) -> None:
        c = self._in.get(topic)
        if c is None:
            c = self._in[topic] = MESSAGES_IN.labels(self.service, topic)
        c.inc(n)

    def produced(self, topic: str, n: int = 1) -> None:
        c = self._out.get(topic)
        if c is None:
            c = self._out[topic] = MESSAGES_OUT.labels(self.service, topic)
        c.inc(n)

    def batch_done(self, started: float) -> None:
        self.batch_seconds.observe(time.perf_counter() - started)
        self.progress.set_to_current_time()

    def set_lag(self, lag: dict[tuple[str, int], int]) -> None:
        per_topic: dict[str, int] = {}
        for (topic, _p), n in lag.items():
            per_topic[topic] = per_topic.get(topic, 0) + n
        for topic, n in per_topic.items():
            CONSUMER_LAG.labels(self.service, topic).set(n)
