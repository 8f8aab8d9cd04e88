"""Supervisor metrics (Prometheus naming: base units, ``_total``, ``_seconds``, ratios 0..1).

Health figures are gauges per model version over the live window (slice ``all``); a version's
series are removed once it has left the windows, so cardinality follows the versions in play.
The status gauge follows the same rule (versions in the windows only); how many versions are in
each status, whatever their number, is ``pooch_supervisor_models{status}``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge

from libs.common.models_ledger import EventKind

DECISIONS = Counter(
    "pooch_supervisor_decisions_total",
    "Decisions written to models, by kind (PAUSED, RESUMED, ACTIVATED, RETIRED) and by whom "
    "(supervisor or operator).",
    ["kind", "actor"],
)
for _kind in (EventKind.PAUSED, EventKind.RESUMED, EventKind.ACTIVATED, EventKind.RETIRED):
    for _actor in ("supervisor", "operator"):
        DECISIONS.labels(_kind, _actor)
DECISION_FAILURES = Counter(
    "pooch_supervisor_decision_failures_total", "Decisions that could not be written to models."
)
ALERTS_FIRING = Gauge(
    "pooch_supervisor_alerts_firing",
    "1 while a policy is breached for a subject (model or extractor version).",
    ["policy", "subject", "action"],
)
BREACHES = Counter(
    "pooch_supervisor_breaches_total", "Times a policy started being breached.", ["policy", "action"]
)
OPERATOR_REQUESTS = Counter(
    "pooch_supervisor_operator_requests_total",
    "Operator requests on the HTTP API, by action and outcome (ok, unauthorized, forbidden, conflict, ...).",
    ["action", "outcome"],
)

VERSION_PREDICTIONS = Gauge(
    "pooch_supervisor_window_predictions", "Predictions of a version in the live window.", ["model_version"]
)
VERSION_INVALID = Gauge(
    "pooch_supervisor_invalid_output_ratio",
    "Share of a version's raw outputs that were negative or not finite (live window).",
    ["model_version"],
)
VERSION_IMPLAUSIBLE = Gauge(
    "pooch_supervisor_implausible_output_ratio",
    "Share of a version's raw outputs above its plausibility cap (live window).",
    ["model_version"],
)
VERSION_FALLBACK = Gauge(
    "pooch_supervisor_version_fallback_ratio",
    "Share of a version's predictions that fell back (its output invalid, its predict raised).",
    ["model_version"],
)
VERSION_LATENCY_P99 = Gauge(
    "pooch_supervisor_latency_p99_seconds",
    "p99 features-to-prediction latency (live window).",
    ["model_version"],
)
VERSION_DRIFT = Gauge(
    "pooch_supervisor_drift_psi", "PSI of raw outputs against validation predictions.", ["model_version"]
)
VERSION_ERROR_RATIO = Gauge(
    "pooch_supervisor_error_ratio_to_baseline",
    "Realised loss of the version / that of the historical baseline (label window).",
    ["model_version"],
)
VERSION_LABELLED = Gauge(
    "pooch_supervisor_window_labelled",
    "Labelled predictions of a version in the label window.",
    ["model_version"],
)
VERSION_STATUS = Gauge(
    "pooch_supervisor_model_status",
    "1 for a version's current status (active, paused, retired).",
    ["model_version", "status"],
)
MODELS_BY_STATUS = Gauge(
    "pooch_supervisor_models",
    "Published model versions by current status (active, paused, retired).",
    ["status"],
)
for _status in ("active", "paused", "retired"):
    MODELS_BY_STATUS.labels(_status)
EXTRACTOR_FALLBACK = Gauge(
    "pooch_supervisor_fallback_ratio",
    "Share of an extractor version's predictions that fell back, by reason (live window).",
    ["extractor_version", "reason"],
)
EXPERIMENT_PUPDATES = Gauge(
    "pooch_supervisor_experiment_pupdates",
    "Pupdates per arm in the current experiment.",
    ["extractor_version", "arm"],
)
EXPERIMENT_LIKES = Gauge(
    "pooch_supervisor_experiment_likes_per_pupdate",
    "Realised likes per labelled pupdate per arm in the current experiment.",
    ["extractor_version", "arm"],
)
UNATTRIBUTED = Gauge(
    "pooch_supervisor_unattributed_fallbacks",
    "Fallbacks of failing models that could not be blamed on a version (since start).",
)
PENDING_LABELS = Gauge("pooch_supervisor_pending_labels", "Predictions waiting for their realised likes.")
REBUILT = Gauge("pooch_supervisor_rebuilt", "1 once the windows were rebuilt from the topics since start.")
LAST_EVALUATION = Gauge(
    "pooch_supervisor_last_evaluation_timestamp_seconds", "Unix time the policies were last evaluated."
)

_VERSION_GAUGES = (
    VERSION_PREDICTIONS,
    VERSION_INVALID,
    VERSION_IMPLAUSIBLE,
    VERSION_FALLBACK,
    VERSION_LATENCY_P99,
    VERSION_DRIFT,
    VERSION_ERROR_RATIO,
    VERSION_LABELLED,
)


def _set(gauge: Gauge, labels: tuple[str, ...], value: Any) -> None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)
        return
    gauge.labels(*labels).set(float(value))


class Exporter:
    """Refreshes the gauges from the windows' figures, and drops series of versions gone."""

    def __init__(self) -> None:
        self.versions: set[str] = set()
        self.extractor_reasons: set[tuple[str, str]] = set()
        self.firing: set[tuple[str, str, str]] = set()
        self.statuses: set[tuple[str, str]] = set()

    def versions_health(self, health: Mapping[str, Mapping[str, Any]]) -> None:
        for version in self.versions - set(health):
            for g in _VERSION_GAUGES:
                _set(g, (version,), None)
        for version, f in health.items():
            latency = f.get("latency_p99_ms")
            _set(VERSION_PREDICTIONS, (version,), f.get("predictions"))
            _set(VERSION_INVALID, (version,), f.get("invalid_rate"))
            _set(VERSION_IMPLAUSIBLE, (version,), f.get("implausible_rate"))
            _set(VERSION_FALLBACK, (version,), f.get("fallback_rate"))
            _set(VERSION_LATENCY_P99, (version,), latency / 1000 if latency is not None else None)
            _set(VERSION_DRIFT, (version,), f.get("drift_psi"))
            ratio = f.get("error_ratio")
            _set(VERSION_ERROR_RATIO, (version,), ratio if ratio is None or math.isfinite(ratio) else None)
            _set(VERSION_LABELLED, (version,), f.get("labelled"))
        self.versions = set(health)

    def extractor_fallbacks(self, by_ev: Mapping[str, Mapping[str, Any]]) -> None:
        seen = set()
        for ev, f in by_ev.items():
            n = f.get("predictions") or 0
            for reason, k in (f.get("fallbacks") or {}).items():
                seen.add((ev, reason))
                _set(EXTRACTOR_FALLBACK, (ev, reason), k / n if n else None)
        for gone in self.extractor_reasons - seen:
            _set(EXTRACTOR_FALLBACK, gone, None)
        self.extractor_reasons = seen

    def alerts(self, firing: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        """Set the firing gauges; returns the ones that just started."""
        now = set(firing)
        for key in now - self.firing:
            ALERTS_FIRING.labels(*key).set(1)
            BREACHES.labels(key[0], key[2]).inc()
        for key in self.firing - now:
            _set(ALERTS_FIRING, key, None)
        started = sorted(now - self.firing)
        self.firing = now
        return started

    def status(self, statuses: Mapping[str, str]) -> None:
        counts = dict.fromkeys(("active", "paused", "retired"), 0)
        for st in statuses.values():
            counts[st] = counts.get(st, 0) + 1
        for st, n in counts.items():
            MODELS_BY_STATUS.labels(st).set(n)
        # Per-version series only for the versions in the windows (set just before by
        # versions_health): every version ever published would grow the series without end.
        now = {(v, st) for v, st in statuses.items() if v in self.versions}
        for key in self.statuses - now:
            _set(VERSION_STATUS, key, None)
        for key in now:
            VERSION_STATUS.labels(*key).set(1)
        self.statuses = now

    def experiments(self, report: Mapping[str, Any]) -> None:
        for exp in report.get("experiments", []):
            for arm, a in exp["arms"].items():
                _set(EXPERIMENT_PUPDATES, (exp["extractor_version"], arm), a["pupdates"])
                _set(EXPERIMENT_LIKES, (exp["extractor_version"], arm), a["likes_per_pupdate"])
