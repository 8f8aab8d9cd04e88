"""Sliding windows of what every model version did, and what it turned out to be worth: pure.

**Live window** (per model version, sliced by country and arm). Each prediction is counted once
under its *fine key* ``(subject, extractor_version, arm, country)`` in the bucket of its
``predicted_at`` (``bucket_seconds`` wide, aligned to the epoch). ``subject`` is the model
version that made the output, or ``""`` when no model did (the baseline arm, a fallback with no
model to blame). The window holds the buckets within ``window_seconds`` of the newest
``predicted_at`` seen (the watermark): event time, never the wall clock, so the windows are a
function of the set of predictions alone and a restart that re-reads the topics rebuilds
exactly the same windows. Running totals make an evaluation O(keys), not O(buckets). Every sum
is an integer (fixed point, micro units), so totals do not depend on the order records arrive
in.

Per key it counts: predictions; ``invalid`` (a raw output that is negative or not finite: what
the scorer refuses); ``implausible`` (a finite raw output above the version's cap:
``implausible_factor`` x the largest of its validation quantiles, at least
``implausible_floor``; ``implausible_absolute`` when the version has no quantiles); fallbacks by
reason; a latency histogram; and the raw outputs over the version's drift bins.

**Drift** is the Population Stability Index of the version's raw outputs against the
distribution its trainer saw on validation. The PUBLISHED record carries K quantiles of the
validation predictions (levels 0, 1/(K-1), ..., 1). The K-2 inner quantiles, de-duplicated,
are the bin edges; a bin's expected share is the difference of the quantile levels at its
edges (a value repeated over several levels carries all of them: a point mass stays one bin):
``PSI = sum_i (a_i - e_i) * ln(a_i / e_i)`` over bins with actual share ``a_i``, both shares
floored at 1e-4. Usual reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 a real shift.
PSI of n draws from the very same distribution is about (bins - 1) / n, so it needs evidence.

**Label window** (per fine key, bucketed by the label's ``closed_at``, watermark the newest
``closed_at``, ``error_window_seconds``): once an instance (realised likes) joins a prediction
that a model served, the model's loss and the historical baseline's loss on that pupdate (the
``baseline`` the instance carries), and their paired difference and its square, for a paired
test of "the model is worse than the baseline".

**Attribution.** A prediction that fell back because its model failed (``invalid_output``,
``exception``) has no ``model_version``. It is blamed on the version that made the other rows of
the same scorer batch (same extractor version, arm and ``predicted_at``), else on the version
the models topic says served that extractor version and arm at that time (the scorer's
selection rule), unless the selection changed within ``attribution_grace_ms`` of it; else on
nobody (subject ``""``, still counted per extractor version).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.supervisor.catalog import Catalog

SCALE = 1_000_000  # fixed point: sums are integers of micro units
LATENCY_EDGES_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
ATTRIBUTABLE = ("invalid_output", "exception")
PSI_FLOOR = 1e-4
NO_SUBJECT = ""


def _fx(x: float) -> int:
    return round(x * SCALE)


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowConfig:
    window_seconds: float = 300.0
    bucket_seconds: float = 1.0
    error_window_seconds: float = 3600.0
    error_bucket_seconds: float = 10.0
    implausible_factor: float = 10.0
    implausible_floor: float = 100.0
    implausible_absolute: float = 100_000.0
    attribution_wait_ms: int = 2000
    attribution_grace_ms: int = 2000
    loss: str = "poisson_deviance"  # | abs_error | squared_error

    def __post_init__(self) -> None:
        if self.bucket_seconds <= 0 or self.window_seconds < self.bucket_seconds:
            raise ValueError("need 0 < bucket_seconds <= window_seconds")
        if self.error_bucket_seconds <= 0 or self.error_window_seconds < self.error_bucket_seconds:
            raise ValueError("need 0 < error_bucket_seconds <= error_window_seconds")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; known: {', '.join(LOSSES)}")


def poisson_deviance(y: float, mu: float) -> float:
    """Unit Poisson deviance 2 * (y ln(y/mu) - (y - mu)), mu floored at 1e-6."""
    mu = max(mu, 1e-6)
    return 2.0 * ((y * math.log(y / mu) if y > 0 else 0.0) - (y - mu))


LOSSES: dict[str, Callable[[float, float], float]] = {
    "poisson_deviance": poisson_deviance,
    "abs_error": lambda y, mu: abs(y - mu),
    "squared_error": lambda y, mu: (y - mu) ** 2,
}


# -- drift bins --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftBins:
    """Bin edges and expected shares from a version's validation quantiles (module doc)."""

    edges: tuple[float, ...]
    expected: tuple[float, ...]

    @classmethod
    def from_quantiles(cls, quantiles: Sequence[float]) -> DriftBins | None:
        q = [float(x) for x in quantiles]
        k = len(q)
        if k < 3 or any(not math.isfinite(x) for x in q) or any(b < a for a, b in itertools.pairwise(q)):
            return None
        levels = [i / (k - 1) for i in range(k)]
        edges: list[float] = []
        upper: list[float] = []  # highest level carried by each edge
        for x, p in zip(q[1:-1], levels[1:-1], strict=True):
            if edges and x == edges[-1]:
                upper[-1] = p
            else:
                edges.append(x)
                upper.append(p)
        expected = []
        prev = 0.0
        for p in upper:
            expected.append(p - prev)
            prev = p
        expected.append(1.0 - prev)
        return cls(tuple(edges), tuple(expected))

    def index(self, x: float) -> int:
        return bisect.bisect_left(self.edges, x)

    def psi(self, counts: Sequence[int]) -> float | None:
        n = sum(counts)
        if n == 0:
            return None
        total = 0.0
        for c, e in zip(counts, self.expected, strict=True):
            a = max(c / n, PSI_FLOOR)
            e = max(e, PSI_FLOOR)
            total += (a - e) * math.log(a / e)
        return total


# -- observations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Obs:
    """One prediction, as the windows see it."""

    pupdate_id: str
    extractor_version: str
    arm: str
    country: str
    model_version: str | None
    raw_output: float | None
    predicted: float
    fallback_reason: str | None
    predicted_at: int
    latency_ms: float

    @classmethod
    def of(cls, rec: Mapping[str, Any]) -> Obs:
        return cls(
            pupdate_id=rec["pupdate_id"],
            extractor_version=rec["extractor_version"],
            arm=rec["arm"],
            country=rec.get("country") or "?",
            model_version=rec.get("model_version"),
            raw_output=rec.get("raw_output"),
            predicted=float(rec["predicted_likes"]),
            fallback_reason=rec.get("fallback_reason") if rec.get("fallback") else None,
            predicted_at=int(rec["predicted_at"]),
            latency_ms=float(rec.get("latency_ms") or 0.0),
        )


FineKey = tuple[str, str, str, str]  # subject, extractor_version, arm, country


# -- tallies -----------------------------------------------------------------------------------


class Tally:
    """Counts of one fine key in one bucket, or summed over a window; integers only."""

    __slots__ = (
        "fallbacks",
        "implausible",
        "invalid",
        "latency",
        "latency_us",
        "n",
        "pred_bins",
        "pred_sum",
        "valid",
    )

    def __init__(self, bins: int = 0) -> None:
        self.n = 0
        self.valid = 0  # finite raw outputs (what drift and the mean prediction are over)
        self.invalid = 0
        self.implausible = 0
        self.fallbacks: Counter[str] = Counter()
        self.latency = [0] * (len(LATENCY_EDGES_MS) + 1)
        self.latency_us = 0
        self.pred_bins = [0] * bins
        self.pred_sum = 0

    def add(self, other: Tally, sign: int = 1) -> None:
        self.n += sign * other.n
        self.valid += sign * other.valid
        self.invalid += sign * other.invalid
        self.implausible += sign * other.implausible
        for k, v in other.fallbacks.items():
            self.fallbacks[k] += sign * v
            if not self.fallbacks[k]:
                del self.fallbacks[k]
        for i, v in enumerate(other.latency):
            self.latency[i] += sign * v
        self.latency_us += sign * other.latency_us
        if len(self.pred_bins) < len(other.pred_bins):
            self.pred_bins += [0] * (len(other.pred_bins) - len(self.pred_bins))
        for i, v in enumerate(other.pred_bins):
            self.pred_bins[i] += sign * v
        self.pred_sum += sign * other.pred_sum

    def state(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "valid": self.valid,
            "invalid": self.invalid,
            "implausible": self.implausible,
            "fallbacks": dict(sorted(self.fallbacks.items())),
            "latency": list(self.latency),
            "latency_us": self.latency_us,
            "pred_bins": list(self.pred_bins),
            "pred_sum": self.pred_sum,
        }


class LabelTally:
    """Joined labels of one fine key: the model's (m) and the baseline's (b) losses, with the sums
    a paired test of ``m - k * b`` needs for any k (micro units; squares in micro units squared)."""

    __slots__ = ("b", "b2", "likes", "m", "m2", "mb", "n", "pred")

    def __init__(self) -> None:
        self.n = 0
        self.m = 0
        self.b = 0
        self.m2 = 0
        self.b2 = 0
        self.mb = 0
        self.likes = 0
        self.pred = 0

    def add(self, other: LabelTally, sign: int = 1) -> None:
        for f in self.__slots__:
            setattr(self, f, getattr(self, f) + sign * getattr(other, f))

    def state(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in self.__slots__}


# -- sliding windows ---------------------------------------------------------------------------


class _Buckets:
    """Buckets of per-key tallies over event time, with running totals; evicts by watermark."""

    def __init__(self, width_ms: int, span_ms: int, make: Callable[[FineKey], Any]) -> None:
        self.width = width_ms
        self.span = span_ms
        self.make = make
        self.buckets: dict[int, dict[FineKey, Any]] = {}
        self.totals: dict[FineKey, Any] = {}
        self.watermark = 0
        self._low = -math.inf

    def lowest_bucket(self) -> int:
        return (self.watermark - self.span) // self.width + 1

    def slot(self, t_ms: int, key: FineKey) -> tuple[Any, Any] | None:
        """(bucket tally, total tally) for an event at t, or None when t is out of the window."""
        if t_ms > self.watermark:
            self.watermark = t_ms
            low = self.lowest_bucket()
            if low > self._low:
                self._low = low
                self._evict(low)
        b = t_ms // self.width
        if b < self._low:
            return None
        bucket = self.buckets.get(b)
        if bucket is None:
            bucket = self.buckets[b] = {}
        tally = bucket.get(key)
        if tally is None:
            tally = bucket[key] = self.make(key)
        total = self.totals.get(key)
        if total is None:
            total = self.totals[key] = self.make(key)
        return tally, total

    def _evict(self, low: int) -> None:
        for b in [b for b in self.buckets if b < low]:
            for key, tally in self.buckets.pop(b).items():
                total = self.totals[key]
                total.add(tally, -1)
                if not total.n:
                    del self.totals[key]

    def forget(self, subject: str) -> None:
        for bucket in self.buckets.values():
            for key in [k for k in bucket if k[0] == subject]:
                del bucket[key]
        for key in [k for k in self.totals if k[0] == subject]:
            del self.totals[key]


@dataclass
class VersionInfo:
    """What the windows need to know of a version (from its PUBLISHED record)."""

    bins: DriftBins | None
    cap: float


class Windows:
    """The live and label windows of every subject (module doc)."""

    def __init__(self, config: WindowConfig, catalog: Catalog) -> None:
        self.c = config
        self.catalog = catalog
        self.loss = LOSSES[config.loss]
        self._info: dict[str, VersionInfo] = {}
        self.live = _Buckets(
            int(config.bucket_seconds * 1000), int(config.window_seconds * 1000), self._new_tally
        )
        self.labels = _Buckets(
            int(config.error_bucket_seconds * 1000),
            int(config.error_window_seconds * 1000),
            lambda _key: LabelTally(),
        )
        self.siblings: dict[tuple[str, str, int], str] = {}
        self.pending: list[tuple[Obs, float]] = []  # (obs, wall-clock seconds received)
        self.ignored_before_evidence = 0
        self.unattributed = 0

    # -- versions ----------------------------------------------------------------------------

    def info(self, subject: str) -> VersionInfo:
        info = self._info.get(subject)
        if info is None:
            v = self.catalog.versions.get(subject)
            quantiles = v.validation_quantiles if v is not None else ()
            bins = DriftBins.from_quantiles(quantiles)
            finite = [q for q in quantiles if math.isfinite(q)]
            if finite:
                cap = max(self.c.implausible_factor * max(finite), self.c.implausible_floor)
            else:
                cap = self.c.implausible_absolute
            info = VersionInfo(bins, cap)
            if v is not None and v.published:  # final once the PUBLISHED record is known
                self._info[subject] = info
        return info

    def _new_tally(self, key: FineKey) -> Tally:
        bins = self.info(key[0]).bins if key[0] else None
        return Tally(len(bins.expected) if bins else 0)

    # -- ingesting predictions ---------------------------------------------------------------

    def observe(self, obs: Obs, now: float = 0.0) -> str | None:
        """Take one prediction. Returns the subject it was counted under, None when it waits."""
        if obs.model_version is not None:
            self.siblings[(obs.extractor_version, obs.arm, obs.predicted_at)] = obs.model_version
            return self._count(obs, obs.model_version)
        if obs.fallback_reason in ATTRIBUTABLE:
            self.pending.append((obs, now))
            return None
        return self._count(obs, NO_SUBJECT)

    def resolve(self, now: float = 0.0, *, flush: bool = False) -> list[tuple[Obs, str]]:
        """Attribute waiting fallbacks: by a sibling row, by the models topic, or to nobody."""
        if not self.pending:
            self._trim_siblings()
            return []
        wait = self.c.attribution_wait_ms
        still: list[tuple[Obs, float]] = []
        done = []
        for obs, received in self.pending:
            version = self.siblings.get((obs.extractor_version, obs.arm, obs.predicted_at))
            if version is None:
                due = flush or obs.predicted_at <= self.live.watermark - wait or now - received >= wait / 1000
                if not due:
                    still.append((obs, received))
                    continue
                version, sure = self.catalog.serving_at(
                    obs.extractor_version, obs.arm, obs.predicted_at, self.c.attribution_grace_ms
                )
                if not sure or version is None:
                    version = NO_SUBJECT
                    self.unattributed += 1
            self._count(obs, version)
            done.append((obs, version))
        self.pending = still
        self._trim_siblings()
        return done

    def _trim_siblings(self) -> None:
        if len(self.siblings) > 50_000:
            low = self.live.watermark - 10 * self.c.attribution_wait_ms
            self.siblings = {k: v for k, v in self.siblings.items() if k[2] >= low}

    def _count(self, obs: Obs, subject: str) -> str:
        if subject:
            v = self.catalog.versions.get(subject)
            if v is not None and obs.predicted_at < v.evidence_since:
                self.ignored_before_evidence += 1
                return subject
        key = (subject, obs.extractor_version, obs.arm, obs.country)
        slot = self.live.slot(obs.predicted_at, key)
        if slot is None:
            return subject
        info = self.info(subject) if subject else None
        latency_bin = bisect.bisect_left(LATENCY_EDGES_MS, obs.latency_ms)
        latency_us = round(obs.latency_ms * 1000)
        raw = obs.raw_output
        for t in slot:
            t.n += 1
            t.latency[latency_bin] += 1
            t.latency_us += latency_us
            if obs.fallback_reason is not None:
                t.fallbacks[obs.fallback_reason] += 1
            if raw is None:
                continue
            if not math.isfinite(raw) or raw < 0:
                t.invalid += 1
                continue
            t.valid += 1
            t.pred_sum += _fx(raw)
            if info is not None:
                if raw > info.cap:
                    t.implausible += 1
                if info.bins is not None:
                    if len(t.pred_bins) < len(info.bins.expected):  # PUBLISHED read after the tally began
                        t.pred_bins += [0] * (len(info.bins.expected) - len(t.pred_bins))
                    t.pred_bins[info.bins.index(raw)] += 1
        return subject

    # -- ingesting labels --------------------------------------------------------------------

    def label(self, key: FineKey, predicted: float, likes: int, baseline: float, closed_at: int) -> None:
        """A prediction a model served, joined with its realised likes."""
        slot = self.labels.slot(closed_at, key)
        if slot is None:
            return
        m = _fx(self.loss(float(likes), predicted))
        b = _fx(self.loss(float(likes), max(baseline, 0.0) if math.isfinite(baseline) else 0.0))
        p = _fx(predicted)
        for t in slot:
            t.n += 1
            t.m += m
            t.b += b
            t.m2 += m * m
            t.b2 += b * b
            t.mb += m * b
            t.likes += likes
            t.pred += p

    def forget(self, subject: str) -> None:
        """Drop a subject's windows (an operator resumed it: evidence starts afresh)."""
        self.live.forget(subject)
        self.labels.forget(subject)

    # -- reading -----------------------------------------------------------------------------

    def subjects(self) -> list[str]:
        return sorted({k[0] for k in self.live.totals} | {k[0] for k in self.labels.totals})

    def slices(self, subject: str) -> dict[str, tuple[Tally, LabelTally]]:
        """Per slice (``all``, ``country=XX``, ``arm=YY``) the summed tallies of a subject."""
        return _slices(
            ((k, t) for k, t in self.live.totals.items() if k[0] == subject),
            ((k, t) for k, t in self.labels.totals.items() if k[0] == subject),
            self._new_tally((subject, "", "", "")),
        )

    def extractor_slices(self, ev: str) -> dict[str, Tally]:
        """Everything predicted for an extractor version (every subject), sliced."""
        out = _slices(
            ((k, t) for k, t in self.live.totals.items() if k[1] == ev),
            (),
            Tally(),
            bins=False,
        )
        return {s: pair[0] for s, pair in out.items()}

    def extractors(self) -> list[str]:
        return sorted({k[1] for k in self.live.totals})

    def figures(self, subject: str) -> dict[str, dict[str, Any]]:
        info = self.info(subject) if subject else None
        return {
            s: figures_of(t, lt, info.bins if info else None, info.cap if info else None)
            for s, (t, lt) in self.slices(subject).items()
        }

    def state(self) -> dict[str, Any]:
        """Everything the windows hold, comparable across restarts (tests)."""
        return {
            "live_watermark": self.live.watermark,
            "label_watermark": self.labels.watermark,
            "live": {"|".join(k): t.state() for k, t in sorted(self.live.totals.items())},
            "labels": {"|".join(k): t.state() for k, t in sorted(self.labels.totals.items())},
        }


def _slices(
    live: Iterable[tuple[FineKey, Tally]],
    labels: Iterable[tuple[FineKey, LabelTally]],
    template: Tally,
    *,
    bins: bool = True,
) -> dict[str, tuple[Tally, LabelTally]]:
    out: dict[str, tuple[Tally, LabelTally]] = {}

    def get(name: str) -> tuple[Tally, LabelTally]:
        pair = out.get(name)
        if pair is None:
            pair = out[name] = (Tally(len(template.pred_bins) if bins else 0), LabelTally())
        return pair

    for (_s, _ev, arm, country), t in live:
        for name in ("all", f"country={country}", f"arm={arm}"):
            get(name)[0].add(t)
    for (_s, _ev, arm, country), t in labels:
        for name in ("all", f"country={country}", f"arm={arm}"):
            get(name)[1].add(t)
    return out


def _quantile_ms(hist: Sequence[int], q: float) -> float | None:
    n = sum(hist)
    if not n:
        return None
    need = q * n
    seen = 0
    for i, c in enumerate(hist):
        seen += c
        if seen >= need:
            return float(LATENCY_EDGES_MS[i]) if i < len(LATENCY_EDGES_MS) else math.inf
    return math.inf


def figures_of(t: Tally, lt: LabelTally, bins: DriftBins | None, cap: float | None) -> dict[str, Any]:
    """The figures people and policies read, from summed tallies."""
    fallbacks = sum(t.fallbacks.values())
    raw_n = t.valid + t.invalid
    out: dict[str, Any] = {
        "predictions": t.n,
        "fallbacks": dict(sorted(t.fallbacks.items())),
        "fallback_rate": fallbacks / t.n if t.n else None,
        "raw_outputs": raw_n,
        "invalid": t.invalid,
        "invalid_rate": t.invalid / raw_n if raw_n else None,
        "implausible": t.implausible,
        "implausible_rate": t.implausible / raw_n if raw_n else None,
        "implausible_cap": cap,
        "exceptions": t.fallbacks.get("exception", 0),
        "exception_rate": t.fallbacks.get("exception", 0) / t.n if t.n else None,
        "latency_mean_ms": t.latency_us / 1000 / t.n if t.n else None,
        "latency_p50_ms": _quantile_ms(t.latency, 0.5),
        "latency_p99_ms": _quantile_ms(t.latency, 0.99),
        "mean_prediction": t.pred_sum / SCALE / t.valid if t.valid else None,
        "drift_psi": bins.psi(t.pred_bins) if bins is not None and t.valid else None,
        "drift_n": t.valid if bins is not None else 0,
    }
    out |= label_figures(lt)
    return out


def label_figures(lt: LabelTally, k: float = 1.0) -> dict[str, Any]:
    """Realised error against the baseline over joined labels.

    ``error_ratio`` = mean model loss / mean baseline loss. ``error_t`` is the paired t statistic
    of d_i = m_i - k * b_i (positive: the model's loss exceeds k times the baseline's), with
    n - 1 degrees of freedom; a policy with threshold k reads its one-sided p-value.
    """
    n = lt.n
    if not n:
        return {
            "labelled": 0,
            "model_loss": None,
            "baseline_loss": None,
            "error_ratio": None,
            "error_t": None,
        }
    model = lt.m / SCALE / n
    base = lt.b / SCALE / n
    t_stat = None
    if n > 1:
        sum_d = (lt.m - k * lt.b) / SCALE
        sum_d2 = (lt.m2 - 2 * k * lt.mb + k * k * lt.b2) / SCALE**2
        mean_d = sum_d / n
        var = max((sum_d2 - n * mean_d * mean_d) / (n - 1), 0.0)
        if var > 0:
            t_stat = mean_d / math.sqrt(var / n)
        elif mean_d != 0:
            t_stat = math.copysign(math.inf, mean_d)
    return {
        "labelled": n,
        "model_loss": model,
        "baseline_loss": base,
        "error_ratio": model / base if base > 0 else (math.inf if model > 0 else None),
        "error_t": t_stat,
        "error_t_k": k,
        "mean_likes": lt.likes / n,
        "mean_labelled_prediction": lt.pred / SCALE / n,
    }


# -- joining predictions with their labels -----------------------------------------------------


@dataclass
class PendingPrediction:
    key: FineKey | None  # None: no model served it (not in the label window)
    predicted: float
    predicted_at: int
    arm: str


@dataclass
class Label:
    likes: int
    baseline: float
    closed_at: int


@dataclass
class LabelJoin:
    """Symmetric hash join of predictions and instances on (pupdate_id, extractor_version)."""

    max_pending: int = 2_000_000
    predictions: OrderedDict[tuple[str, str], PendingPrediction] = field(default_factory=OrderedDict)
    labels: OrderedDict[tuple[str, str], Label] = field(default_factory=OrderedDict)
    dropped: int = 0

    def prediction(self, key: tuple[str, str], p: PendingPrediction) -> Label | None:
        label = self.labels.pop(key, None)
        if label is not None:
            return label
        self.predictions[key] = p
        self._bound(self.predictions)
        return None

    def label(self, key: tuple[str, str], lab: Label) -> PendingPrediction | None:
        p = self.predictions.pop(key, None)
        if p is not None:
            return p
        self.labels[key] = lab
        self._bound(self.labels)
        return None

    def _bound(self, d: OrderedDict) -> None:
        while len(d) > self.max_pending:
            d.popitem(last=False)
            self.dropped += 1
