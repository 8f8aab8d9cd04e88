"""The collector's Prometheus metrics (base units, ``_total``, ``_seconds``).

Stream counters are updated when a transaction commits, so they count what readers can see:
work in an aborted transaction is redone and counted once.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ACCEPTED = Counter(
    "pooch_collector_accepted_total",
    "Raw events written as facts, by kind and raw schema version.",
    ["kind", "schema_version"],
)
REJECTED = Counter(
    "pooch_collector_rejected_total",
    "Raw events or HTTP events rejected, by reason and path.",
    ["reason", "path"],
)
DUPLICATES = Counter("pooch_collector_duplicates_total", "Exact re-sends dropped by event_id.")
REPLAYED = Counter(
    "pooch_collector_replayed_total",
    "Raw records read again after a restart or rebalance whose output already existed.",
)
WAITING = Gauge("pooch_collector_waiting_events", "Events waiting for their pupdate or dog.")
WAIT_SECONDS = Histogram(
    "pooch_collector_wait_seconds",
    "Time an event spent waiting, by outcome.",
    ["outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
STATE_ENTRIES = Gauge("pooch_collector_state_entries", "Entries in each state structure.", ["structure"])
TRANSACTIONS = Counter("pooch_collector_transactions_total", "Stream transactions by outcome.", ["outcome"])
BATCH_SECONDS = Histogram(
    "pooch_collector_batch_duration_seconds",
    "Time to process one batch and commit its transaction.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_RECORDS = Histogram(
    "pooch_collector_batch_records",
    "Raw records per transaction.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
REBUILD_SECONDS = Gauge("pooch_collector_rebuild_seconds", "Duration of the last state rebuild.")
REBUILD_RECORDS = Gauge("pooch_collector_rebuild_records", "Records read by the last state rebuild.")
HTTP_SECONDS = Histogram(
    "pooch_collector_http_request_duration_seconds",
    "HTTP request latency, by route and status.",
    ["route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
HTTP_EVENTS = Counter(
    "pooch_collector_http_events_total",
    "Events received over HTTP, by kind and outcome.",
    ["kind", "outcome"],
)
KAFKA_DOWN = Gauge("pooch_collector_kafka_down", "1 while the HTTP producer sees no broker.")
