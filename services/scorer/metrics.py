"""Scorer metrics (Prometheus naming: base units, ``_total``, ``_seconds``).

``path`` is ``stream`` (the features topic) or ``whatif`` (the HTTP API). ``model_version`` is
``none`` for predictions no model made (the baseline arm and fallbacks). Hot paths count per
batch, not per record.

Labels stay bounded: series carrying a ``model_version`` exist only for the versions serving (and
those that served until the last swap); :func:`forget_versions` drops the others at every swap,
so a scorer that has seen a thousand published versions still exports a handful of series.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import Counter, Gauge, Histogram

PREDICTIONS = Counter(
    "pooch_scorer_predictions_total",
    "Predictions made, by path, arm and model version (none: the baseline arm or a fallback).",
    ["path", "arm", "model_version"],
)
FALLBACKS = Counter(
    "pooch_scorer_fallbacks_total",
    "Predictions that fell back to the historical baseline, by path and reason.",
    ["path", "reason"],
)
INVALID_OUTPUTS = Counter(
    "pooch_scorer_invalid_outputs_total",
    "Model outputs refused (non-finite or negative), by model version.",
    ["model_version"],
)
PREDICT_ERRORS = Counter(
    "pooch_scorer_predict_errors_total", "predict calls that raised, by model version.", ["model_version"]
)
BATCH_SIZE = Histogram(
    "pooch_scorer_batch_size",
    "Features records scored per transaction.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000),
)
PREDICT_SECONDS = Histogram(
    "pooch_scorer_predict_seconds",
    "Time of one batched predict call (one model, one group of rows).",
    ["path"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
END_TO_END_SECONDS = Histogram(
    "pooch_scorer_end_to_end_seconds",
    "From the pupdate's posted_at (app event time) to its prediction being written (stream path; "
    "a sample of at most ~64 records per batch).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
UNDECODABLE = Counter(
    "pooch_scorer_undecodable_total", "features records that could not be decoded (dead-lettered)."
)

MODEL_SWAPS = Counter(
    "pooch_scorer_model_swaps_total",
    "Times the model serving an extractor version and arm changed.",
    ["extractor_version", "arm"],
)
SERVING = Gauge(
    "pooch_scorer_serving_info",
    "1 for the model version serving each extractor version and arm.",
    ["extractor_version", "arm", "model_version"],
)
MODELS = Gauge("pooch_scorer_models", "Model versions known, by status.", ["status"])
MODEL_LOAD_SECONDS = Histogram(
    "pooch_scorer_model_load_seconds",
    "Time to verify and parse one model artifact.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MODEL_COMPILES = Counter(
    "pooch_scorer_model_compiles_total",
    "Model versions compiled to native code (lleaves), by outcome: compiled, cached (a shared object "
    "from an earlier run), failed or disagreed (both keep LightGBM).",
    ["outcome"],
)
MODEL_COMPILE_SECONDS = Histogram(
    "pooch_scorer_model_compile_seconds",
    "Time from a model's load to its compiled predictor serving (in the background).",
    buckets=(0.05, 0.25, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
MODEL_REFUSED = Counter(
    "pooch_scorer_models_refused_total",
    "Model versions refused at load, by reason (artifact_integrity, unloadable, artifact_evicted).",
    ["reason"],
)
ARM_WEIGHT = Gauge("pooch_scorer_arm_weight", "Share of dogs routed to each arm.", ["arm"])
REGISTRY_SYNCED = Gauge(
    "pooch_scorer_registry_synced", "1 once the models topic has been read to its end since start."
)
REGISTRY_EVENTS = Counter(
    "pooch_scorer_model_events_total", "Model events read from the models topic, by kind.", ["kind"]
)
REGISTRY_GENERATION = Gauge("pooch_scorer_registry_generation", "Snapshots published since start.")

WHATIF_REQUESTS = Counter(
    "pooch_scorer_whatif_requests_total", "What-if requests, by outcome (ok, invalid, error).", ["outcome"]
)
WHATIF_SHED = Counter(
    "pooch_scorer_whatif_shed_total",
    "What-if requests refused with 503 and Retry-After under overload, by reason (queued: waited "
    "past POOCH_SCORER_WHATIF_SHED_AFTER_MS before its handler ran).",
    ["reason"],
)
WHATIF_SECONDS = Histogram(
    "pooch_scorer_whatif_request_seconds",
    "Time to answer a what-if request inside the service.",
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25),
)
WHATIF_VIEW_INVALID = Counter(
    "pooch_scorer_whatif_view_invalid_total",
    "Online-view values that were malformed (wrong JSON or types) and read as missing, by key kind "
    "(dog, tag, overall).",
    ["kind"],
)
WHATIF_STATE_DEGRADED = Counter(
    "pooch_scorer_whatif_state_degraded_total",
    "What-if drafts featurized with default state (online view missing or unavailable).",
    ["reason"],
)


# Metrics whose series carry a model_version label, with their label names in order.
_VERSIONED: tuple[tuple[Counter | Gauge, tuple[str, ...]], ...] = (
    (PREDICTIONS, ("path", "arm", "model_version")),
    (INVALID_OUTPUTS, ("model_version",)),
    (PREDICT_ERRORS, ("model_version",)),
    (SERVING, ("extractor_version", "arm", "model_version")),
)


def forget_versions(keep: Iterable[str]) -> None:
    """Remove every model_version series except ``keep`` (and ``none``, the baseline's)."""
    wanted = {*keep, "none"}
    for metric, names in _VERSIONED:
        gone = {
            tuple(sample.labels[n] for n in names)
            for family in metric.collect()
            for sample in family.samples
            if sample.labels.get("model_version", "none") not in wanted
        }
        for labels in gone:
            metric.remove(*labels)


# Records of a batch whose end-to-end latency is observed: an evenly spaced sample, because
# decoding and observing every record costs ~2 us each, a seventh of the stream's per-record
# budget (docs/performance.md); quantiles of the sample estimate those of the batch.
E2E_SAMPLE = 64


def observe_end_to_end(posted: Sequence[bytes], now_ms: int) -> None:
    """Observe app-event-to-prediction latency for a sample of a batch (posted_at as Avro
    zig-zag varints, as the scorer keeps them)."""
    observe = END_TO_END_SECONDS.observe
    for raw in posted[:: max(1, len(posted) // E2E_SAMPLE)]:
        n = shift = 0
        for b in raw:
            n |= (b & 0x7F) << shift
            shift += 7
        observe(max(now_ms - ((n >> 1) ^ -(n & 1)), 0) / 1000.0)


ARTIFACTS_FETCHED = Counter(
    "pooch_scorer_artifacts_fetched_total",
    "Evicted model artifacts fetched back from the Redis model cache: their version was selected again.",
)
