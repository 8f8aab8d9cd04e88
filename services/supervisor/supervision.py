"""The supervisor's state, without Kafka: the catalog, the windows, the label join and the
experiments, fed record by record, evaluated against the policies. Pure (given a clock)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from libs.common.signing import ModelEventVerifier
from services.supervisor.catalog import Catalog
from services.supervisor.experiments import Experiments
from services.supervisor.policies import DECISIVE, Breach, PolicySet, evaluate, strongest
from services.supervisor.windows import (
    NO_SUBJECT,
    Label,
    LabelJoin,
    LabelTally,
    Obs,
    PendingPrediction,
    Tally,
    Windows,
    figures_of,
)


@dataclass
class Evaluation:
    breaches: list[Breach] = field(default_factory=list)
    # (policy, subject) -> breaches, strongest first
    grouped: dict[tuple[str, str], list[Breach]] = field(default_factory=dict)

    def decisive(self) -> list[list[Breach]]:
        return [b for b in self.grouped.values() if b[0].policy.action in DECISIVE]

    def firing(self) -> list[tuple[str, str, str]]:
        return sorted({(p, s, b[0].policy.action) for (p, s), b in self.grouped.items()})


class Supervision:
    def __init__(
        self,
        policies: PolicySet,
        *,
        max_pending_labels: int = 2_000_000,
        verifier: ModelEventVerifier | None = None,
    ) -> None:
        self.policies = policies
        self.catalog = Catalog(verifier=verifier)
        self.windows = Windows(policies.windows, self.catalog)
        self.join = LabelJoin(max_pending=max_pending_labels)
        self.experiments = Experiments(policies.experiments, self.catalog)
        self.last = Evaluation()
        self.predictions_read = 0
        self.instances_read = 0

    # -- inputs ------------------------------------------------------------------------------

    def model_event(self, event: Mapping[str, Any]) -> bool:
        version = event.get("model_version") or ""
        before = self.catalog.versions.get(version)
        since = before.evidence_since if before else 0
        changed = self.catalog.apply(event)
        after = self.catalog.versions.get(version)
        if changed and after is not None and after.evidence_since > since:
            # An operator resumed or activated it: the policies judge it on new evidence only.
            self.windows.forget(version)
        return changed

    def prediction(self, rec: Mapping[str, Any], now: float = 0.0) -> None:
        self.predictions_read += 1
        obs = Obs.of(rec)
        self.windows.observe(obs, now)
        ev = obs.extractor_version
        self.experiments.prediction(ev, obs.arm, obs.model_version, obs.predicted_at)
        served = obs.model_version is not None and obs.fallback_reason is None
        key = (obs.model_version or NO_SUBJECT, ev, obs.arm, obs.country) if served else None
        pending = PendingPrediction(key, obs.predicted, obs.predicted_at, obs.arm)
        label = self.join.prediction((obs.pupdate_id, ev), pending)
        if label is not None:
            self._joined(ev, pending, label)

    def instance(self, rec: Mapping[str, Any]) -> None:
        self.instances_read += 1
        ev = rec["extractor_version"]
        label = Label(int(rec["likes"]), float(rec["baseline"]), int(rec["closed_at"]))
        pending = self.join.label((rec["pupdate_id"], ev), label)
        if pending is not None:
            self._joined(ev, pending, label)

    def _joined(self, ev: str, p: PendingPrediction, label: Label) -> None:
        self.experiments.label(ev, p.arm, p.predicted_at, label.likes, p.predicted)
        if p.key is None:
            return
        v = self.catalog.versions.get(p.key[0])
        if v is not None and p.predicted_at < v.evidence_since:
            return
        self.windows.label(p.key, p.predicted, label.likes, label.baseline, label.closed_at)

    def tick(self, now: float = 0.0, *, flush: bool = False) -> None:
        self.windows.resolve(now, flush=flush)

    # -- judging -----------------------------------------------------------------------------

    def evaluate(self) -> Evaluation:
        breaches = evaluate(self.policies.enabled(), self.windows)
        self.last = Evaluation(breaches, strongest(breaches))
        return self.last

    # -- reading -----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """What ``GET /v1/models`` shows: every version, its status, health and why."""
        cat = self.catalog
        breaches_of: dict[str, list[Breach]] = {}
        for items in self.last.grouped.values():
            breaches_of.setdefault(items[0].subject, []).append(items[0])
        versions = []
        for name, v in cat.versions.items():
            if not v.published:
                continue
            window = _clean(self.windows.figures(name))
            mine = breaches_of.get(name, [])
            if any(b.policy.action in DECISIVE for b in mine):
                health = "unhealthy"
            elif mine:
                health = "warning"
            elif not window:
                health = "no_data"
            else:
                health = "healthy"
            last = v.history[-1] if v.history else None
            if last is not None:
                why = f"{last.kind} by {last.actor}: {last.reason}"
            elif mine:
                why = "; ".join(b.describe() for b in mine)
            else:
                why = f"PUBLISHED by {v.actor}: {v.reason}"
            versions.append(
                {
                    "model_version": name,
                    "extractor_version": v.extractor_version,
                    "status": v.status,
                    "roles": cat.roles(name),
                    "published_at": v.created_at,
                    "health": health,
                    "why": why,
                    "breaches": [
                        {
                            "policy": b.policy.name,
                            "action": b.policy.action,
                            "slice": b.slice,
                            "metric": b.policy.metric,
                            "figure": _num(b.figure),
                            "threshold": b.policy.threshold,
                            "evidence": b.evidence,
                            "text": b.describe(),
                        }
                        for b in mine
                    ],
                    "evidence_since": v.evidence_since,
                    "validation_quantiles": len(v.validation_quantiles),
                    "window": window,
                    "decisions": [d.as_dict() for d in v.history],
                }
            )
        versions.sort(key=lambda x: (x["extractor_version"], -x["published_at"]))
        extractors = {}
        for ev in sorted(set(cat.order) | set(self.windows.extractors())):
            extractors[ev] = {
                "champion": cat.champion(ev),
                "challenger": cat.challenger(ev),
                "activated": dict(cat.activated.get(ev, {})),
                "experiment_start": cat.experiment_start(ev),
                "window": _clean({s: _figs(t) for s, t in self.windows.extractor_slices(ev).items()}),
                "alerts": [
                    b[0].describe()
                    for (_p, s), b in self.last.grouped.items()
                    if s == ev and b[0].subject == ev
                ],
            }
        return {
            "as_of": {
                "predictions_watermark": self.windows.live.watermark,
                "labels_watermark": self.windows.labels.watermark,
            },
            "weights": cat.weights or None,
            "extractors": extractors,
            "versions": versions,
            "counters": {
                "predictions_read": self.predictions_read,
                "instances_read": self.instances_read,
                "model_events_read": cat.events_read,
                "unattributed_fallbacks": self.windows.unattributed,
                "pending_attribution": len(self.windows.pending),
                "pending_labels": len(self.join.predictions),
                "labels_without_prediction": len(self.join.labels),
                "dropped_pending": self.join.dropped,
            },
        }

    def version_health(self) -> dict[str, dict[str, Any]]:
        """Slice ``all`` figures per version (for the metrics)."""
        out = {}
        for subject in self.windows.subjects():
            if subject != NO_SUBJECT:
                figs = self.windows.figures(subject).get("all")
                if figs:
                    out[subject] = figs
        return out

    def extractor_health(self) -> dict[str, dict[str, Any]]:
        out = {}
        for ev in self.windows.extractors():
            t = self.windows.extractor_slices(ev).get("all")
            if t is not None:
                out[ev] = _figs(t)
        return out

    def state(self) -> dict[str, Any]:
        """The windows and the experiments, comparable across restarts."""
        return {
            "windows": self.windows.state(),
            "experiments": self.experiments.report(),
            "statuses": {n: v.status for n, v in sorted(self.catalog.versions.items()) if v.published},
        }


def _figs(tally: Tally) -> dict[str, Any]:
    f = figures_of(tally, LabelTally(), None, None)
    keep = (
        "predictions",
        "fallbacks",
        "fallback_rate",
        "latency_mean_ms",
        "latency_p50_ms",
        "latency_p99_ms",
    )
    return {k: f[k] for k in keep}


def _num(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def _clean(obj: Any) -> Any:
    """JSON-safe: non-finite floats become strings ("inf", "nan")."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return _num(obj)
