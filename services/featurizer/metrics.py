"""Featurizer metrics (Prometheus naming: base units, _total)."""

from prometheus_client import Counter, Gauge

FEATURES_OUT = Counter("pooch_featurizer_features_total", "Feature vectors written.", ["extractor_version"])
INSTANCES_OUT = Counter(
    "pooch_featurizer_instances_total", "Training instances written.", ["extractor_version"]
)
LIKES = Counter(
    "pooch_featurizer_likes_total",
    "Likes seen, by what became of them (counted, after_horizon, late, orphaned, duplicate: an "
    "event_id already counted for the pupdate, never counted twice).",
    ["outcome"],
)
LATE_PUPDATES = Counter(
    "pooch_featurizer_late_pupdates_total",
    "Pupdates that arrived more than one label horizon behind the watermark: features written, "
    "no training instance, dead-lettered as late_pupdate.",
)
EXTRACTION_ERRORS = Counter(
    "pooch_featurizer_extraction_errors_total", "Facts that could not be featurized, by reason.", ["reason"]
)
OPEN_HORIZONS = Gauge("pooch_featurizer_open_horizons", "Pupdates whose label horizon is still open.")
LIKE_IDS = Gauge(
    "pooch_featurizer_like_ids",
    "Like event_ids kept to count each like once: those of pupdates whose horizon is still open.",
)
BUFFERED = Gauge("pooch_featurizer_buffered_pupdates", "Pupdates waiting for the watermark.")
WATERMARK = Gauge("pooch_featurizer_watermark_timestamp_seconds", "Event-time watermark.")
OWNED = Gauge("pooch_featurizer_owned_partitions", "Partitions of pupdates this worker emits for.")
REPLICA_LAG = Gauge("pooch_featurizer_replica_caught_up_ratio", "Share of fact partitions read to their end.")
VIEW_REWRITES = Counter(
    "pooch_featurizer_view_rewrites_total",
    "Whole online-view rewrites started, by reason (start, wiped: Redis lost it, refresh: before the TTL).",
    ["reason"],
)
VIEW_KEYS_REWRITTEN = Counter(
    "pooch_featurizer_view_rewritten_keys_total", "Online-view keys written by whole-view rewrites."
)
