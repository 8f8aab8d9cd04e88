"""Batch prediction with containment: every row gets a prediction, finite and >= 0, whatever fails.

Rows are routed to an arm by their dog, resolved against one registry snapshot to a model (or
to the baseline arm, or to a fallback reason), grouped by (model, feature names) and predicted
with one LightGBM call per group. Containment, row by row:

==================== =====================================================================
``no_model``         no model for any extractor version (or none usable that is not paused)
``paused``           every version of this extractor version is paused
``extractor_mismatch`` no model for this extractor version, or the record's feature names are
                     not the model's
``invalid_features`` the record's values do not match its names (length)
``exception``        predict raised (the whole group falls back)
``invalid_output``   the model returned a non-finite or negative value (that row falls back;
                     the value is kept in ``raw_output`` for supervision)
``deadline``         (what-if) the answer could not be made within the request's deadline
==================== =====================================================================

A fallback serves the record's historical baseline (itself made finite and >= 0), with
``model_version`` null, ``fallback`` true and the reason.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.scorer import metrics as m
from services.scorer.model import LoadedModel
from services.scorer.registry import Snapshot
from services.scorer.routing import CHAMPION, Router

log = logging.getLogger(__name__)

INVALID_FEATURES = "invalid_features"
EXCEPTION = "exception"
INVALID_OUTPUT = "invalid_output"
EXTRACTOR_MISMATCH = "extractor_mismatch"
DEADLINE = "deadline"
_INF = math.inf


def safe_baseline(x: float) -> float:
    """The baseline as a valid prediction: finite and >= 0, else 0."""
    return x if 0.0 <= x < _INF else 0.0


@dataclass
class Scored:
    """Per row: what to write. ``reason`` None means a model (or the baseline arm) served it."""

    predicted: list[float]
    raw: list[float | None]
    model_version: list[str | None]
    arm: list[str]
    reason: list[str | None]
    counts: Counter = field(default_factory=Counter)  # (arm, model_version) -> rows
    fallbacks: Counter = field(default_factory=Counter)  # reason -> rows


class _Limiter:
    """At most one log line per key per interval: a failing model must not flood the log."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.last: dict[str, float] = {}

    def ok(self, key: str) -> bool:
        now = time.monotonic()
        if now - self.last.get(key, -_INF) >= self.interval:
            self.last[key] = now
            return True
        return False


_log_limit = _Limiter()


def score(
    snapshot: Snapshot,
    router: Router,
    *,
    extractors: Sequence[str],
    dogs: Sequence[bytes],
    names: Sequence[tuple[str, ...]],
    values: Sequence[bytes],
    baselines: Sequence[float],
    path: str = "stream",
) -> Scored:
    """Predict every row; never raises for a model's or a record's fault."""
    n = len(extractors)
    predicted = [0.0] * n
    raw: list[float | None] = [None] * n
    versions: list[str | None] = [None] * n
    arms: list[str] = [""] * n
    reasons: list[str | None] = [None] * n
    groups: dict[int, tuple[LoadedModel, dict[tuple[str, ...], list[int]]]] = {}
    resolved: dict[tuple[str, str], tuple[str, LoadedModel | None, str | None]] = {}
    weights = snapshot.weights

    if n and weights.champion >= 1.0 and _uniform(extractors) and _uniform(names):
        # The common case, with no per-row work: one extractor version, one name list, one arm.
        arm, model, reason = snapshot.resolve(extractors[0], CHAMPION)
        arms = [arm] * n
        if model is None:
            predicted = [safe_baseline(b) for b in baselines]
            reasons = [reason] * n
        else:
            _predict_group(
                model, names[0], range(n), values, baselines, predicted, raw, versions, reasons, path
            )
        return _scored(predicted, raw, versions, arms, reasons)

    point = router.point
    for i in range(n):
        routed = weights.arm_at(point(dogs[i]))
        key = (extractors[i], routed)
        res = resolved.get(key)
        if res is None:
            res = resolved[key] = snapshot.resolve(extractors[i], routed)
        arm, model, reason = res
        arms[i] = arm
        if model is None:
            predicted[i] = safe_baseline(baselines[i])
            reasons[i] = reason  # None on the baseline arm: served as intended, not a fallback
        else:
            entry = groups.get(id(model))
            if entry is None:
                entry = groups[id(model)] = (model, {})
            entry[1].setdefault(names[i], []).append(i)

    for model, by_names in groups.values():
        for row_names, idx in by_names.items():
            _predict_group(model, row_names, idx, values, baselines, predicted, raw, versions, reasons, path)

    return _scored(predicted, raw, versions, arms, reasons)


def _uniform(xs: Sequence) -> bool:
    return xs.count(xs[0]) == len(xs)  # identity first: interned strings and cached tuples


def _scored(predicted, raw, versions, arms, reasons) -> Scored:
    out = Scored(predicted, raw, versions, arms, reasons)
    out.counts.update(zip(arms, versions, strict=True))
    if reasons.count(None) != len(reasons):
        out.fallbacks.update(r for r in reasons if r is not None)
    return out


def _predict_group(
    model: LoadedModel,
    row_names: tuple[str, ...],
    idx: Sequence[int],
    values: Sequence[bytes],
    baselines: Sequence[float],
    predicted: list[float],
    raw: list[float | None],
    versions: list[str | None],
    reasons: list[str | None],
    path: str,
) -> None:
    def fall(rows: Sequence[int], reason: str) -> None:
        for i in rows:
            predicted[i] = safe_baseline(baselines[i])
            reasons[i] = reason

    cols = model.columns_for(row_names)
    if cols is None:
        fall(idx, EXTRACTOR_MISMATCH)
        return
    width = 8 * len(row_names)
    whole = isinstance(idx, range) and len(idx) == len(values)
    data = b"".join(values if whole else [values[i] for i in idx])
    if len(data) != width * len(idx):
        bad = [i for i in idx if len(values[i]) != width]
        fall(bad, INVALID_FEATURES)
        idx = [i for i in idx if len(values[i]) == width]
        whole = False
        if not idx:
            return
        data = b"".join([values[i] for i in idx])
    try:
        matrix = np.frombuffer(data, dtype="<f8").reshape(len(idx), len(row_names))
        if len(cols) != matrix.shape[1] or not (cols == np.arange(matrix.shape[1])).all():
            matrix = matrix[:, cols]
        started = time.perf_counter()
        out = model.predict(matrix)
        _child(m.PREDICT_SECONDS, path).observe(time.perf_counter() - started)
    except Exception as exc:  # containment: a model's failure is never the record's loss
        m.PREDICT_ERRORS.labels(model.version).inc()
        if _log_limit.ok(f"exc:{model.version}"):
            log.error(
                "predict raised; the group falls back to the baseline",
                extra={"model_version": model.version, "rows": len(idx), "error": repr(exc)[:500]},
            )
        fall(idx, EXCEPTION)
        return
    ok = np.isfinite(out) & (out >= 0.0)
    version = model.version
    outs = out.tolist()
    if ok.all():
        if whole:
            predicted[:] = outs
            raw[:] = outs
            versions[:] = [version] * len(outs)
            return
        for j, i in enumerate(idx):
            predicted[i] = raw[i] = outs[j]
            versions[i] = version
        return
    invalid = 0
    for j, i in enumerate(idx):
        raw[i] = outs[j]
        if ok[j]:
            predicted[i] = outs[j]
            versions[i] = version
        else:
            predicted[i] = safe_baseline(baselines[i])
            reasons[i] = INVALID_OUTPUT
            invalid += 1
    m.INVALID_OUTPUTS.labels(version).inc(invalid)
    if _log_limit.ok(f"invalid:{version}"):
        log.warning(
            "model returned invalid outputs; those rows fall back to the baseline",
            extra={"model_version": version, "invalid": invalid, "rows": len(idx)},
        )


def record_metrics(scored: Scored, path: str) -> None:
    for (arm, version), k in scored.counts.items():
        _child(m.PREDICTIONS, path, arm, version or "none").inc(k)
    for reason, k in scored.fallbacks.items():
        _child(m.FALLBACKS, path, reason).inc(k)


@functools.lru_cache(maxsize=4096)
def _child(metric: Any, *labels: str) -> Any:
    # labels() takes a lock and builds a key on every call; paths, arms, reasons and model
    # versions are few, and the what-if path records a few per request.
    return metric.labels(*labels)
