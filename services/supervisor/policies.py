"""Policies: what is watched, how much evidence is enough, when a figure is wrong, what to do. Pure.

They come from a TOML file (``services/supervisor/policies.toml`` is the documented default;
``POOCH_SUPERVISOR_POLICIES_FILE`` points at another). A file that does not validate stops the
supervisor at start with the reason: a typo must never silently disable supervision.

A policy reads one **metric** of a model version's window in each of its **slices** (``all``,
every ``country``, every ``arm``), and breaches when the figure is at or above its
**threshold** with at least ``min_predictions`` observations behind the figure (and
``min_events`` offending ones, for rates). The **action** of a breach:

``alert``               count it (``pooch_supervisor_alerts_firing``), log it, show it; nothing else
``pause``               a PAUSED record: the scorer stops serving the version within a second
``pause_and_fallback``  PAUSED, and when the version held the champion slot by an activation, an
                        ACTIVATED record putting the last good version back in it
``retire``              a RETIRED record: never served again

Metrics (``scope = "version"`` judge one model version; ``scope = "extractor"`` everything
predicted for an extractor version, for figures no single version owns):

============== ===========================================================================
invalid_rate    share of raw outputs that are negative or not finite
implausible_rate share of raw outputs above the version's plausibility cap
exception_rate  share of predictions whose predict call raised
fallback_rate   share of predictions that fell back (any reason, or ``reason`` only)
latency_p99_ms  99th percentile of features-written-to-prediction latency
drift_psi       PSI of raw outputs against the version's validation quantiles
error_ratio     mean realised loss of the model / that of the historical baseline, over joined
                labels; breaches only when also significant: the one-sided paired t test of
                ``loss_model - threshold * loss_baseline > 0`` has p < ``significance``
============== ===========================================================================
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from scipy.stats import t as student_t

from services.supervisor.windows import (
    NO_SUBJECT,
    LabelTally,
    WindowConfig,
    Windows,
    figures_of,
    label_figures,
)

Action = Literal["alert", "pause", "pause_and_fallback", "retire"]
Metric = Literal[
    "invalid_rate",
    "implausible_rate",
    "exception_rate",
    "fallback_rate",
    "latency_p99_ms",
    "drift_psi",
    "error_ratio",
]
SliceKind = Literal["all", "country", "arm"]
DECISIVE = ("pause", "pause_and_fallback", "retire")
# Metric -> (figure key, evidence key, offending count key or None)
_EVIDENCE = {
    "invalid_rate": ("invalid_rate", "raw_outputs", "invalid"),
    "implausible_rate": ("implausible_rate", "raw_outputs", "implausible"),
    "exception_rate": ("exception_rate", "predictions", "exceptions"),
    "fallback_rate": ("fallback_rate", "predictions", "fallback_count"),
    "latency_p99_ms": ("latency_p99_ms", "predictions", None),
    "drift_psi": ("drift_psi", "drift_n", None),
    "error_ratio": ("error_ratio", "labelled", None),
}


class PolicyError(ValueError):
    """The policy file is missing, not TOML, or not a valid configuration."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Policy(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    metric: Metric
    scope: Literal["version", "extractor"] = "version"
    slices: tuple[SliceKind, ...] = ("all", "country", "arm")
    threshold: float
    min_predictions: int = Field(
        20, ge=1, description="Observations behind the figure (labelled, for error_ratio)."
    )
    min_events: int = Field(1, ge=1, description="Offending observations, for rates.")
    significance: float = Field(0.01, gt=0, lt=1, description="error_ratio only: one-sided p-value needed.")
    reason: str | None = Field(None, description="fallback_rate only: count this fallback reason alone.")
    action: Action = "alert"
    enabled: bool = True

    @model_validator(mode="after")
    def _coherent(self) -> Policy:
        if self.scope == "extractor" and self.action != "alert":
            raise ValueError(
                f"policy {self.name}: an extractor-wide policy can only alert (no version to act on)"
            )
        if self.scope == "extractor" and self.metric not in ("fallback_rate", "latency_p99_ms"):
            raise ValueError(f"policy {self.name}: scope extractor supports fallback_rate and latency_p99_ms")
        if not self.slices:
            raise ValueError(f"policy {self.name}: needs at least one slice")
        return self


class ExperimentRule(_Strict):
    metric: Literal["likes_per_pupdate"] = "likes_per_pupdate"
    confidence: float = Field(0.95, gt=0.5, lt=1)
    min_labelled_per_arm: int = Field(500, ge=2)
    min_lift: float = Field(0.0, ge=0, description="Relative margin the challenger's lower bound must clear.")
    mixture_sd: float = Field(
        4.0,
        gt=0,
        description="Standard deviation (likes) of the mSPRT's normal mixture over the true difference: "
        "the effect size the always-valid intervals are tightest for. Fixed before the experiment.",
    )
    mean_mixture_sd: float = Field(
        20.0,
        gt=0,
        description="The same for each arm's own mean likes per pupdate (its always-valid interval).",
    )
    promote: bool = True
    settle_ms: int = Field(2000, ge=0, description="Predictions this soon after an arm change are left out.")
    promote_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Arm weights written with a promotion; empty keeps the current ones.",
    )


class _File(_Strict):
    windows: dict[str, Any] = Field(default_factory=dict)
    experiments: ExperimentRule = ExperimentRule()
    policy: list[Policy] = Field(default_factory=list)


@dataclass(frozen=True)
class PolicySet:
    windows: WindowConfig
    experiments: ExperimentRule
    policies: tuple[Policy, ...]
    source: str = "<defaults>"

    def enabled(self) -> list[Policy]:
        return [p for p in self.policies if p.enabled]

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "windows": vars(self.windows),
            "experiments": self.experiments.model_dump(),
            "policies": [p.model_dump() for p in self.policies],
        }


def parse(text: str, source: str = "<text>") -> PolicySet:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from exc
    try:
        doc = _File.model_validate(raw)
        windows = WindowConfig(**doc.windows)
    except (ValidationError, TypeError, ValueError) as exc:
        raise PolicyError(f"{source}: {exc}") from exc
    names = [p.name for p in doc.policy]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PolicyError(f"{source}: policy names repeat: {dupes}")
    return PolicySet(windows, doc.experiments, tuple(doc.policy), source)


def load(path: Path) -> PolicySet:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PolicyError(f"cannot read the policy file {path}: {exc}") from exc
    return parse(text, str(path))


# -- evaluation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Breach:
    policy: Policy
    subject: str  # a model version (scope version) or an extractor version (scope extractor)
    slice: str
    figure: float
    evidence: int
    offending: int | None
    p_value: float | None = None
    extra: dict[str, float] = field(default_factory=dict)
    # dimension (country, arm) -> where the offending observations are (module doc of localise)
    where: dict[str, Where] = field(default_factory=dict)

    @property
    def severity(self) -> float:
        thr = self.policy.threshold
        if thr > 0 and math.isfinite(self.figure):
            return self.figure / thr
        return math.inf

    def describe(self) -> str:
        """One sentence people read: which figure, in which slice, against which threshold."""
        p = self.policy
        what = f"{p.metric} {_fmt(self.figure)} in {self.slice} >= threshold {_fmt(p.threshold)}"
        if self.offending is not None:
            what += f" ({self.offending} of {self.evidence})"
        else:
            what += f" (over {self.evidence})"
        if self.p_value is not None:
            what += f", one-sided p={self.p_value:.2g} < {p.significance:g}"
        for w in self.where.values():
            if w.slice != self.slice and w.values > 1:  # worth saying only when it singles one out
                what += (
                    f"; concentrated in {w.slice}: {p.metric} {_fmt(w.figure)} "
                    f"({w.offending} of {w.evidence}, {w.share:.0%} of the offending)"
                )
        return f"{what}: policy {p.name}"

    def metrics(self) -> dict[str, float]:
        out = {
            p: float(v)
            for p, v in (
                (self.policy.metric, self.figure),
                ("threshold", self.policy.threshold),
                ("evidence", self.evidence),
                ("min_evidence", self.policy.min_predictions),
            )
        }
        if self.offending is not None:
            out["offending"] = float(self.offending)
        if self.p_value is not None:
            out["p_value"] = self.p_value
            out["significance"] = self.policy.significance
        for dim, w in self.where.items():
            out[f"{dim}_{self.policy.metric}"] = w.figure
            out[f"{dim}_evidence"] = float(w.evidence)
            if w.offending is not None:
                out[f"{dim}_offending"] = float(w.offending)
        return out | self.extra

    def params(self) -> dict[str, str]:
        kind, _, value = self.slice.partition("=")
        out = {
            "policy": self.policy.name,
            "metric": self.policy.metric,
            "slice": self.slice,
            "action": self.policy.action,
        }
        if value:
            out[kind] = value
        for dim, w in self.where.items():
            out[dim] = w.slice.partition("=")[2]
            if w.breakdown:
                out[f"{dim}_breakdown"] = w.breakdown
        return out

    def localised(self, figures: dict[str, dict[str, Any]]) -> Breach:
        """This breach with ``where``: for each dimension (country, arm), the slice the breach is
        in, or else the one slice holding at least ``CONCENTRATION`` of the offending observations.

        A decision taken on ``all`` as soon as it has the evidence (before any one country has
        its own) still says where the fault is: "invalid_rate 0.28 in all ...; concentrated in
        country=DE: invalid_rate 1 (8 of 8, 100% of the offending)".
        """
        where: dict[str, Where] = {}
        for dim in ("country", "arm"):
            w = _locate(self, dim, figures)
            if w is not None:
                where[dim] = w
        return replace(self, where=where)


@dataclass(frozen=True)
class Where:
    slice: str
    figure: float
    evidence: int
    offending: int | None
    share: float  # of the offending observations of the subject
    breakdown: str = ""
    values: int = 1  # slices of this dimension with observations


CONCENTRATION = 0.8


def _offending(policy: Policy, figs: dict[str, Any]) -> tuple[float | None, int, int | None]:
    key, evidence_key, offending_key = _EVIDENCE[policy.metric]
    if policy.metric == "fallback_rate":
        fallbacks = figs.get("fallbacks") or {}
        off = fallbacks.get(policy.reason, 0) if policy.reason else sum(fallbacks.values())
        n = figs.get("predictions") or 0
        return (off / n if n else None), n, off
    off = figs.get(offending_key) if offending_key else None
    return figs.get(key), figs.get(evidence_key) or 0, off


def _locate(b: Breach, dim: str, figures: dict[str, dict[str, Any]]) -> Where | None:
    mine = [(name, *_offending(b.policy, f)) for name, f in figures.items() if name.startswith(f"{dim}=")]
    if b.slice.startswith(f"{dim}="):
        for name, figure, n, off in mine:
            if name == b.slice and figure is not None:
                total = sum(o or 0 for _, _, _, o in mine)
                share = (off or 0) / total if total and off is not None else 1.0
                return Where(name, float(figure), int(n), off, share, values=len(mine))
        return None
    with_counts = [m for m in mine if m[3] is not None and m[1] is not None]
    total = sum(m[3] for m in with_counts)
    if not total:
        return None
    with_counts.sort(key=lambda m: (-m[3], m[0]))
    name, figure, n, off = with_counts[0]
    share = off / total
    if share < CONCENTRATION:
        return None
    breakdown = ", ".join(f"{m[0].partition('=')[2]} {m[3]}/{m[2]}" for m in with_counts[:10])
    return Where(name, float(figure), int(n), off, share, breakdown, len(mine))


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4g}"


def _slice_kind(name: str) -> str:
    return name.split("=", 1)[0]


def check(
    policy: Policy, subject: str, slice_name: str, figures: dict[str, Any], labels: LabelTally | None = None
) -> Breach | None:
    """Does one slice's figures breach one policy? (the figures of :func:`figures_of`)"""
    if _slice_kind(slice_name) not in policy.slices:
        return None
    if policy.metric == "error_ratio":
        return _check_error(policy, subject, slice_name, labels)
    key, evidence_key, offending_key = _EVIDENCE[policy.metric]
    if policy.metric == "fallback_rate":
        fallbacks = figures.get("fallbacks") or {}
        offending = fallbacks.get(policy.reason, 0) if policy.reason else sum(fallbacks.values())
        n = figures.get("predictions") or 0
        figure = offending / n if n else None
    else:
        figure = figures.get(key)
        n = figures.get(evidence_key) or 0
        offending = figures.get(offending_key) if offending_key else None
    if figure is None or n < policy.min_predictions:
        return None
    if offending is not None and offending < policy.min_events:
        return None
    if not (figure >= policy.threshold):
        return None
    return Breach(policy, subject, slice_name, float(figure), int(n), offending)


def _check_error(policy: Policy, subject: str, slice_name: str, labels: LabelTally | None) -> Breach | None:
    if labels is None or labels.n < max(policy.min_predictions, 2):
        return None
    f = label_figures(labels, k=policy.threshold)
    ratio, t_stat = f["error_ratio"], f["error_t"]
    if ratio is None or t_stat is None or not (ratio >= policy.threshold):
        return None
    p_value = (
        float(student_t.sf(t_stat, labels.n - 1)) if math.isfinite(t_stat) else (0.0 if t_stat > 0 else 1.0)
    )
    if p_value >= policy.significance:
        return None
    return Breach(
        policy,
        subject,
        slice_name,
        float(ratio),
        labels.n,
        None,
        p_value,
        {"model_loss": f["model_loss"], "baseline_loss": f["baseline_loss"], "t": float(t_stat)},
    )


def evaluate(policies: Iterable[Policy], windows: Windows) -> list[Breach]:
    """Every breach of every enabled policy, on every subject and slice the windows hold."""
    policies = [p for p in policies if p.enabled]
    out: list[Breach] = []
    version_policies = [p for p in policies if p.scope == "version"]
    extractor_policies = [p for p in policies if p.scope == "extractor"]
    if version_policies:
        for subject in windows.subjects():
            if subject == NO_SUBJECT:
                continue
            info = windows.info(subject)
            by_slice = {}
            found = []
            for slice_name, (tally, labels) in windows.slices(subject).items():
                figs = by_slice[slice_name] = figures_of(tally, LabelTally(), info.bins, info.cap)
                for p in version_policies:
                    b = check(p, subject, slice_name, figs, labels)
                    if b is not None:
                        found.append(b)
            out += [b.localised(by_slice) for b in found]
    if extractor_policies:
        for ev in windows.extractors():
            for slice_name, tally in windows.extractor_slices(ev).items():
                figs = figures_of(tally, LabelTally(), None, None)
                for p in extractor_policies:
                    b = check(p, ev, slice_name, figs)
                    if b is not None:
                        out.append(b)
    return out


def strongest(breaches: Iterable[Breach]) -> dict[tuple[str, str], list[Breach]]:
    """Breaches per (policy, subject), the most severe first (the one a decision names)."""
    grouped: dict[tuple[str, str], list[Breach]] = {}
    for b in breaches:
        grouped.setdefault((b.policy.name, b.subject), []).append(b)
    for items in grouped.values():
        items.sort(key=lambda b: (-b.severity, b.slice))
    return grouped
