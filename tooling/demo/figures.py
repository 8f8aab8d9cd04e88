"""The demo's numbers, computed from the decoded topics (and the demo's own log). Pure.

The experiment ("possible worlds") is defined on the topics alone, so anyone can recompute it:

* it starts at ``created_at`` of the first ACTIVATED record on ``models`` that carries arm
  weights (the demo's, once the warm start has a model), plus the supervisor's ``settle_ms``;
* its pupdates are the v1 ``predictions`` with ``predicted_at`` from then on, one per
  pupdate_id; a pupdate's world is its prediction's ``arm``: ``baseline`` is the historical
  world, ``champion`` and ``challenger`` the machine-learned one;
* its labels are the v1 ``instances`` joined by pupdate_id (likes within the horizon).

Two metrics, both per pupdate of a world:

* ``likes_per_pupdate``: the mean realised likes, as is;
* ``capped``: the mean of each pupdate's likes capped at ``cap``, the 99th percentile of the
  likes of the pupdates labelled before the experiment started (the warm start), so fixed before
  any outcome of the experiment is seen. The primary metric: likes have a celebrity tail (one
  post in a thousand gets fifty times the median) that makes the plain mean's variance several
  times larger while saying little about which world picks better drafts. Capping a metric at a
  pre-registered value is the usual remedy in online experiments (it changes the estimand to
  "likes per pupdate, a celebrity post counting as at most ``cap``"; both are reported).

The primary comparison is also **regression-adjusted** (CUPED, Deng et al. 2013, with several
covariates): each pupdate's capped likes minus ``(x - mean x) . beta``, where ``x`` holds what
was known of the dog before its world could matter: its mean capped likes over the warm start
(the global warm-start mean when it had no pupdate then), whether it had any, and
``log_followers`` at posting with its square (followers move only by the 3 % follow-back of
likes, so the worlds barely touch them within a run). ``beta`` is the least-squares fit over
both worlds together, so the adjustment is the same function in both and removes no difference
between them: it removes the between-dog spread (celebrities, charisma) the worlds do not cause,
which is most of the variance. Raw and capped means are reported unadjusted beside it.

Intervals are the supervisor's: an always-valid mSPRT confidence sequence
(:func:`services.supervisor.experiments.cs_half_width`, mixture sds and alpha from the policy
file: ``mixture_sd`` for differences, ``mean_mixture_sd`` for one world's mean), and beside it
the fixed-n t (Welch) interval, valid for one look only.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

import numpy as np
from scipy import stats

from services.supervisor.experiments import cs_half_width
from services.supervisor.policies import ExperimentRule

HISTORICAL, MACHINE_LEARNED = "historical", "machine-learned"
WORLD_OF = {"baseline": HISTORICAL, "champion": MACHINE_LEARNED, "challenger": MACHINE_LEARNED}
ARMS = ("champion", "challenger", "baseline")
SERIES_POINTS = 60
DEFINITION = (
    "The experiment starts at created_at of the first ACTIVATED record on `models` carrying arm weights, "
    "plus settle_ms; its pupdates are the v1 `predictions` from then on (one per pupdate_id), joined with "
    "the v1 `instances` by pupdate_id for their likes within the horizon. World: arm `baseline` = "
    "historical, `champion` + `challenger` = machine-learned. Capped: each pupdate's likes capped at the "
    "99th percentile of the instances posted before the start (fixed before any outcome). Adjusted: "
    "capped likes minus (x - mean x).beta, x = the dog's mean capped likes over the warm start (or the "
    "warm-start mean), whether it had any, log_followers and its square; beta by least squares over "
    "both worlds together. Intervals: mSPRT normal-mixture confidence sequences (always valid)."
)


def experiment_start(models: list[dict]) -> int | None:
    activated = sorted(
        (m for m in models if m["kind"] == "ACTIVATED" and m.get("arm_weights")),
        key=lambda m: m["created_at"],
    )
    return activated[0]["created_at"] if activated else None


def history_cap(instances: list[dict], start: int | None) -> int | None:
    """The 99th percentile of the likes labelled before the experiment (None without history)."""
    before = [
        i["likes"] for i in instances if i["extractor_version"] == "v1" and start and i["posted_at"] < start
    ]
    if len(before) < 100:
        return None
    return int(np.percentile(np.asarray(before, dtype=float), 99, method="lower"))


COVARIATES = (
    "dog_warm_start_mean_capped_likes",
    "dog_had_warm_start_pupdates",
    "log_followers",
    "log_followers^2",
)


def regression_adjusted(
    rows: list[dict], instances: list[dict], start: int, cap: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """Each labelled row's CUPED-adjusted capped likes (by pupdate_id), and the fit's diagnostics."""
    inst = {i["pupdate_id"]: i for i in instances if i["extractor_version"] == "v1"}
    pre: dict[str, list[int]] = defaultdict(list)
    for i in inst.values():
        if i["posted_at"] < start:
            pre[i["dog_id"]].append(min(i["likes"], cap))
    everyone = [y for ys in pre.values() for y in ys]
    overall = float(np.mean(everyone)) if everyone else 0.0
    ids, ys, xs = [], [], []
    for p in rows:
        i = inst.get(p["pupdate_id"])
        if i is None:
            continue
        past = pre.get(p["dog_id"])
        followers = i["values"][list(i["names"]).index("log_followers")]
        ids.append(p["pupdate_id"])
        ys.append(min(i["likes"], cap))
        xs.append([float(np.mean(past)) if past else overall, 1.0 if past else 0.0, followers, followers**2])
    if len(ids) < 10:
        return {}, {"covariates": list(COVARIATES), "beta": None, "r2": None}
    y, x = np.asarray(ys, dtype=float), np.asarray(xs, dtype=float)
    xc = x - x.mean(axis=0)
    beta = np.linalg.lstsq(xc, y - y.mean(), rcond=None)[0]
    adjusted = y - xc @ beta
    r2 = 1 - float(adjusted.var() / y.var()) if y.var() > 0 else 0.0
    diag = {"covariates": list(COVARIATES), "beta": beta.tolist(), "r2": r2, "warm_start_dogs": len(pre)}
    return dict(zip(ids, adjusted.tolist(), strict=True)), diag


def summary(likes: list[float], rule: ExperimentRule) -> dict[str, Any]:
    n = len(likes)
    out: dict[str, Any] = {"labelled": n, "likes": float(sum(likes))}
    if n < 2:
        return out | {"likes_per_pupdate": (likes[0] if n else None)}
    y = np.asarray(likes, dtype=float)
    mean, var = float(y.mean()), float(y.var(ddof=1))
    half_t = float(stats.t.ppf(0.5 + rule.confidence / 2, n - 1)) * math.sqrt(var / n)
    half_cs = cs_half_width(var / n, rule.mean_mixture_sd, 1 - rule.confidence)
    return out | {
        "likes_per_pupdate": mean,
        "std": math.sqrt(var),
        "cs_low": mean - half_cs,
        "cs_high": mean + half_cs,
        "ci_low": mean - half_t,
        "ci_high": mean + half_t,
    }


def difference(a: list[float], b: list[float], rule: ExperimentRule) -> dict[str, Any] | None:
    """mean(a) - mean(b): always-valid and fixed-n (Welch) intervals, and relative to mean(b)."""
    if len(a) < 2 or len(b) < 2:
        return None
    ya, yb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(ya.mean() - yb.mean())
    variance = float(ya.var(ddof=1) / len(ya) + yb.var(ddof=1) / len(yb))
    half = cs_half_width(variance, rule.mixture_sd, 1 - rule.confidence)
    welch = stats.ttest_ind(ya, yb, equal_var=False).confidence_interval(rule.confidence)
    base = float(yb.mean())
    return {
        "difference": diff,
        "cs_low": diff - half,
        "cs_high": diff + half,
        "ci_low": float(welch.low),
        "ci_high": float(welch.high),
        "relative_lift": diff / base if base else None,
        "relative_cs_low": (diff - half) / base if base else None,
        "relative_cs_high": (diff + half) / base if base else None,
        "excludes_zero": diff - half > 0 or diff + half < 0,
    }


def _clustered_variance(ys: list[float], dogs: list[str]) -> float:
    """Variance of the mean with dogs as clusters (CR0): a dog's posts are not independent."""
    y = np.asarray(ys, dtype=float)
    residual = y - y.mean()
    per_dog: dict[str, float] = defaultdict(float)
    for r, d in zip(residual.tolist(), dogs, strict=True):
        per_dog[d] += r
    return float(sum(v * v for v in per_dog.values()) / len(y) ** 2)


def clustered_difference(
    a: tuple[list[float], list[str]], b: tuple[list[float], list[str]], rule: ExperimentRule
) -> dict[str, Any] | None:
    """The same always-valid interval of mean(a) - mean(b), with a dog-clustered variance: a check
    that the pupdates' independence the plain interval assumes does not carry the verdict."""
    if len(a[0]) < 2 or len(b[0]) < 2:
        return None
    diff = float(np.mean(a[0]) - np.mean(b[0]))
    variance = _clustered_variance(*a) + _clustered_variance(*b)
    half = cs_half_width(variance, rule.mixture_sd, 1 - rule.confidence)
    return {
        "difference": diff,
        "cs_low": diff - half,
        "cs_high": diff + half,
        "dogs": len(set(a[1])) + len(set(b[1])),
        "excludes_zero": diff - half > 0 or diff + half < 0,
    }


def _quantiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    q = np.quantile(np.asarray(values, dtype=float), [0.5, 0.9, 0.99, 1.0])
    return {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "max": float(q[3])}


def compute(
    predictions: list[dict],
    instances: list[dict],
    models: list[dict],
    rule: ExperimentRule,
    run: dict[str, Any],
) -> dict[str, Any]:
    start = experiment_start(models)
    since = (start or 0) + rule.settle_ms
    labels = {i["pupdate_id"]: i["likes"] for i in instances if i["extractor_version"] == "v1"}
    window: dict[str, dict] = {}
    duplicates = 0
    for p in predictions:
        if p["extractor_version"] != "v1" or start is None or p["predicted_at"] < since:
            continue
        if p["pupdate_id"] in window:
            duplicates += 1
            continue
        window[p["pupdate_id"]] = p
    rows = sorted(window.values(), key=lambda p: (p["posted_at"], p["pupdate_id"]))

    by_world: dict[str, list[int]] = defaultdict(list)
    by_arm: dict[str, list[int]] = defaultdict(list)
    pupdates_world: Counter[str] = Counter()
    pupdates_arm: Counter[str] = Counter()
    for p in rows:
        world = WORLD_OF.get(p["arm"])
        pupdates_arm[p["arm"]] += 1
        if world:
            pupdates_world[world] += 1
        y = labels.get(p["pupdate_id"])
        if y is not None and world:
            by_world[world].append(y)
            by_arm[p["arm"]].append(y)

    cap = history_cap(instances, start)

    def capped(ys: list[int]) -> list[int]:
        return [min(y, cap) for y in ys] if cap is not None else []

    worlds = {
        w: {"pupdates": pupdates_world[w]} | summary(by_world[w], rule) for w in (HISTORICAL, MACHINE_LEARNED)
    }
    arms = {a: {"pupdates": pupdates_arm[a]} | summary(by_arm[a], rule) for a in ARMS}
    lift = difference(by_world[MACHINE_LEARNED], by_world[HISTORICAL], rule)
    capped_part = {
        "cap": cap,
        "cap_rule": "99th percentile of the likes of v1 instances posted before the experiment started",
        "worlds": {
            w: {"pupdates": pupdates_world[w]} | summary(capped(by_world[w]), rule)
            for w in (HISTORICAL, MACHINE_LEARNED)
        },
        "arms": {a: {"pupdates": pupdates_arm[a]} | summary(capped(by_arm[a]), rule) for a in ARMS},
        "lift": difference(capped(by_world[MACHINE_LEARNED]), capped(by_world[HISTORICAL]), rule),
    }
    if cap is not None and start is not None:
        adj, diag = regression_adjusted(rows, instances, start, cap)
        world_adj: dict[str, list[float]] = defaultdict(list)
        world_dogs: dict[str, list[str]] = defaultdict(list)
        for p in rows:
            if p["pupdate_id"] in adj and WORLD_OF.get(p["arm"]):
                world_adj[WORLD_OF[p["arm"]]].append(adj[p["pupdate_id"]])
                world_dogs[WORLD_OF[p["arm"]]].append(p["dog_id"])
        capped_part["adjusted"] = diag | {
            "worlds": {
                w: {"pupdates": pupdates_world[w]} | summary(world_adj[w], rule)
                for w in (HISTORICAL, MACHINE_LEARNED)
            },
            "lift": difference(world_adj[MACHINE_LEARNED], world_adj[HISTORICAL], rule),
            "lift_dog_clustered": clustered_difference(
                (world_adj[MACHINE_LEARNED], world_dogs[MACHINE_LEARNED]),
                (world_adj[HISTORICAL], world_dogs[HISTORICAL]),
                rule,
            ),
        }

    fallbacks = Counter(p["fallback_reason"] for p in rows if p["fallback"])
    latency = [float(p["predicted_at"] - p["posted_at"]) for p in rows]
    return {
        "definition": DEFINITION,
        "method": {
            "name": "mSPRT normal-mixture confidence sequence (always valid), beside a fixed-n t interval",
            "alpha": 1 - rule.confidence,
            "mixture_sd": rule.mixture_sd,
            "mean_mixture_sd": rule.mean_mixture_sd,
            "primary_metric": "capped likes per pupdate (cap fixed from the warm start)",
            "settle_ms": rule.settle_ms,
            "min_labelled_per_arm": rule.min_labelled_per_arm,
        },
        "experiment": {
            "started_at": start,
            "counted_from": since if start is not None else None,
            "pupdates": len(rows),
            "labelled": sum(len(v) for v in by_world.values()),
            "duplicate_predictions": duplicates,
            "worlds": worlds,
            "arms": arms,
            "lift": lift,
            "capped": capped_part,
            "series": series(rows, labels, rule, since),
            "series_capped": series(rows, {k: min(v, cap) for k, v in labels.items()}, rule, since)
            if cap is not None
            else {},
        },
        "predictions": {
            "total": len(predictions),
            "in_experiment": len(rows),
            "fallbacks": sum(fallbacks.values()),
            "fallback_share": sum(fallbacks.values()) / len(rows) if rows else None,
            "fallbacks_by_reason": dict(fallbacks),
        },
        "latency_ms": {
            "definition": "predicted_at - posted_at of each prediction in the experiment "
            "(app event time to prediction)",
            "quantiles": _quantiles(latency),
            "histogram": _histogram(latency),
        },
        "models": model_table(models, rows, instances),
        "decisions": decisions(models, start),
        "rogue": rogue_story(models, predictions, run),
        "run": run,
    }


def series(rows: list[dict], labels: dict[str, int], rule: ExperimentRule, since: int) -> dict[str, list]:
    """Per world, the running mean likes per pupdate and its always-valid interval over time."""
    out: dict[str, list] = {}
    if not rows:
        return out
    t_end = rows[-1]["posted_at"]
    checkpoints = np.linspace(since, t_end, SERIES_POINTS)[1:]
    groups = [(w, lambda p, w=w: WORLD_OF.get(p["arm"]) == w) for w in (HISTORICAL, MACHINE_LEARNED)]
    # the machine-learned world's two arms on their own too (the historical world is one arm)
    groups += [(f"arm {a}", lambda p, a=a: p["arm"] == a) for a in ("champion", "challenger")]
    for world, member in groups:
        ys = [
            (p["posted_at"], labels[p["pupdate_id"]]) for p in rows if member(p) and p["pupdate_id"] in labels
        ]
        points = []
        n = s = s2 = 0
        j = 0
        for t in checkpoints:
            while j < len(ys) and ys[j][0] <= t:
                y = ys[j][1]
                n, s, s2 = n + 1, s + y, s2 + y * y
                j += 1
            if n >= 2:
                mean = s / n
                var = max((s2 - s * s / n) / (n - 1), 0.0)
                half = cs_half_width(var / n, rule.mean_mixture_sd, 1 - rule.confidence)
                points.append([(t - since) / 1000, n, mean, mean - half, mean + half])
        if points:
            out[world] = points
    return out


def _histogram(values: list[float]) -> dict[str, list] | None:
    if not values:
        return None
    edges = np.geomspace(max(min(values), 1.0), max(max(values), 2.0), 40)
    counts, edges = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return {"edges_ms": edges.tolist(), "counts": counts.tolist()}


def model_table(models: list[dict], rows: list[dict], instances: list[dict]) -> list[dict]:
    """Each version: validation figures, and its realised error against the baseline's in the experiment."""
    inst = {i["pupdate_id"]: i for i in instances if i["extractor_version"] == "v1"}
    realised: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for p in rows:
        i = inst.get(p["pupdate_id"])
        if i is None or not p["model_version"]:
            continue
        realised[p["model_version"]].append(
            (abs(p["predicted_likes"] - i["likes"]), abs(i["baseline"] - i["likes"]))
        )
    out = []
    for m in models:
        if m["kind"] != "PUBLISHED":
            continue
        errs = realised.get(m["model_version"], [])
        mae = float(np.mean([e for e, _ in errs])) if errs else None
        base = float(np.mean([b for _, b in errs])) if errs else None
        out.append(
            {
                "model_version": m["model_version"],
                "published_at": m["created_at"],
                "actor": m["actor"],
                "validation": {
                    k: m["metrics"][k] for k in sorted(m["metrics"]) if "mae" in k or "deviance" in k
                },
                "experiment_predictions_labelled": len(errs),
                "realised_mae": mae,
                "baseline_mae": base,
                "realised_mae_ratio": mae / base if mae is not None and base else None,
            }
        )
    return out


def decisions(models: list[dict], start: int | None) -> list[dict]:
    return [
        {
            "at": m["created_at"],
            "seconds": (m["created_at"] - start) / 1000 if start else None,
            "kind": m["kind"],
            "model_version": m["model_version"],
            "actor": m["actor"],
            "arm": m.get("arm"),
            "reason": m["reason"],
            "country": (m.get("params") or {}).get("country"),
        }
        for m in sorted(models, key=lambda m: m["created_at"])
    ]


def rogue_story(models: list[dict], predictions: list[dict], run: dict[str, Any]) -> dict[str, Any] | None:
    version = (run.get("facts") or {}).get("rogue_version")
    if not version:
        return None
    events = [m for m in models if m["model_version"] == version]
    published = next((m["created_at"] for m in events if m["kind"] == "PUBLISHED"), None)
    activated = next((m["created_at"] for m in events if m["kind"] == "ACTIVATED"), None)
    paused = next((m for m in events if m["kind"] == "PAUSED"), None)
    country = run["facts"].get("rogue_country")
    bad = sorted(
        p["predicted_at"]
        for p in predictions
        if p["fallback_reason"] == "invalid_output"
        and p["country"] == country
        and activated
        and p["predicted_at"] >= activated
    )
    first_bad = bad[0] if bad else None
    by_country = Counter(
        p["country"] or "-"
        for p in predictions
        if p["fallback_reason"] == "invalid_output" and activated and p["predicted_at"] >= activated
    )
    after = Counter()
    restored = None
    if paused is not None:
        restored = next(
            (
                m["model_version"]
                for m in models
                if m["kind"] == "ACTIVATED"
                and m["created_at"] >= paused["created_at"]
                and m["actor"] == "supervisor"
            ),
            None,
        )
        for p in predictions:
            if (
                p["country"] == country
                and p["arm"] != "baseline"
                and p["predicted_at"] >= paused["created_at"] + 1000
            ):
                after[p["model_version"] or f"fallback:{p['fallback_reason']}"] += 1
    return {
        "model_version": version,
        "country": country,
        "published_at": published,
        "activated_at": activated,
        "first_invalid_output_at": first_bad,
        "invalid_outputs_contained": len(bad),
        "invalid_outputs_by_country": dict(by_country),
        "paused": paused is not None,
        "paused_at": paused["created_at"] if paused else None,
        "paused_by": paused["actor"] if paused else None,
        "pause_reason": paused["reason"] if paused else None,
        "pause_delay_ms": (paused["created_at"] - first_bad) if paused and first_bad else None,
        "pause_delay_after_activation_ms": (paused["created_at"] - activated)
        if paused and activated
        else None,
        "champion_restored": restored,
        "served_instead": dict(after.most_common()),
    }
