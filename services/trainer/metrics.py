"""Trainer metrics (Prometheus naming: base units, ``_total``, ``_seconds``).

``pooch_model_integrity_failures_total`` lives in :mod:`libs.common.artifacts` (shared with the
scorer); the shared loop metrics in :mod:`libs.common.metrics`.
"""

from prometheus_client import Counter, Gauge, Histogram

INSTANCES = Counter(
    "pooch_trainer_instances_total", "Instances read from the instances topic.", ["extractor_version"]
)
REJECTED = Counter(
    "pooch_trainer_instances_rejected_total", "Instances no model may learn from, by reason.", ["reason"]
)
WINDOW = Gauge(
    "pooch_trainer_window_instances", "Instances in the training window (at most).", ["extractor_version"]
)
NEW_SINCE_RUN = Gauge(
    "pooch_trainer_new_instances", "Instances arrived since the last training run.", ["extractor_version"]
)
RUNS = Counter(
    "pooch_trainer_runs_total",
    "Training runs by outcome: published, not_better, unchanged, failed, not_leader.",
    ["extractor_version", "outcome"],
)
RUN_SECONDS = Histogram(
    "pooch_trainer_run_duration_seconds",
    "Wall time of a training run (fit, validation, publish).",
    ["extractor_version"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
RUN_IN_PROGRESS = Gauge("pooch_trainer_run_in_progress", "1 while a training run is going on.")
LAST_SUCCESS = Gauge(
    "pooch_trainer_last_success_timestamp_seconds",
    "Unix time of the last training run that completed (published or not).",
    ["extractor_version"],
)
LAST_PUBLISHED = Gauge(
    "pooch_trainer_last_published_timestamp_seconds",
    "Unix time this replica last published a version.",
    ["extractor_version"],
)
PUBLISHED = Counter(
    "pooch_trainer_published_versions_total", "Model versions published.", ["extractor_version"]
)
KNOWN_VERSIONS = Gauge(
    "pooch_trainer_known_versions", "Published versions on the models topic.", ["extractor_version"]
)
VALIDATION = Gauge(
    "pooch_trainer_validation_metric",
    "Validation metrics of the last training run (candidate, baseline, champion, ratios).",
    ["extractor_version", "metric"],
)
LEADER = Gauge("pooch_trainer_leader", "1 on the replica that trains, 0 on a standby.")
LEADERSHIP_CHANGES = Counter("pooch_trainer_leadership_changes_total", "Leadership acquired or lost.")
CACHE_REPAIRS = Counter(
    "pooch_trainer_cache_repairs_total", "Model versions written back to Redis after it lost them."
)
CACHE_TRIMMED = Counter(
    "pooch_trainer_cache_trimmed_total",
    "Model versions deleted from the Redis model cache because they are no longer worth keeping.",
)
WINDOW_REBUILT = Gauge("pooch_trainer_window_rebuilt", "1 once the window was rebuilt from the topic.")
