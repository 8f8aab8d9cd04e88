"""report.json's numbers, recomputed from the topics alone without the report's code.

Only the run's topics are read (predictions, instances, models), with the plain topic reader and
the Avro serde; the statistics are written out again here with numpy and the policy file read as
TOML. The definitions are the ones report.json states: the experiment starts at the first
ACTIVATED record carrying arm weights (plus settle_ms); its pupdates are the v1 predictions from
then on, one per pupdate_id, joined with the v1 instances by pupdate_id; the historical world is
the baseline arm, the machine-learned one champion + challenger.
"""

from __future__ import annotations

import math
import tomllib
from collections import Counter, defaultdict

import numpy as np
import pytest

from libs.common.kafka.replay import read_topic
from libs.common.serde import serde
from libs.common.settings import CommonSettings
from tests.support import REPO

POLICIES = REPO / "services" / "supervisor" / "policies.toml"


def _read(settings: CommonSettings, topic: str, stem: str) -> list[dict]:
    codec = serde(stem)
    return [codec.decode(m.value()) for m in read_topic(settings, settings.topic(topic), timeout=60)]


def _half(variance: float, tau: float, alpha: float) -> float:
    """The normal-mixture SPRT boundary: |estimate - theta| at which the likelihood ratio is 1/alpha."""
    t2 = tau**2
    return math.sqrt(
        variance * (variance + t2) / t2 * (math.log((variance + t2) / variance) - 2 * math.log(alpha))
    )


def _mean_and_interval(y: np.ndarray, tau: float, alpha: float) -> tuple[float, float, float]:
    m = float(np.mean(y))
    h = _half(float(np.var(y, ddof=1)) / len(y), tau, alpha)
    return m, m - h, m + h


def _lift(a: np.ndarray, b: np.ndarray, tau: float, alpha: float) -> tuple[float, float, float]:
    d = float(a.mean() - b.mean())
    h = _half(float(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)), tau, alpha)
    return d, d - h, d + h


@pytest.fixture(scope="module")
def recomputed(short_demo, kafka_bootstrap, redis_url):
    settings = CommonSettings(
        kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, topic_prefix=short_demo.prefix
    )
    rule = tomllib.loads(POLICIES.read_text())["experiments"]
    predictions = _read(settings, "predictions", "prediction")
    instances = [i for i in _read(settings, "instances", "instance") if i["extractor_version"] == "v1"]
    models = _read(settings, "models", "model_event")
    start = min(m["created_at"] for m in models if m["kind"] == "ACTIVATED" and m["arm_weights"])
    first: dict[str, dict] = {}
    for p in predictions:
        if p["extractor_version"] == "v1" and p["predicted_at"] >= start + rule["settle_ms"]:
            first.setdefault(p["pupdate_id"], p)
    likes = {i["pupdate_id"]: i for i in instances}
    world = {"baseline": "historical", "champion": "machine-learned", "challenger": "machine-learned"}
    pupdates: Counter[str] = Counter(world[p["arm"]] for p in first.values())
    ys: dict[str, list[int]] = defaultdict(list)
    for pid, p in first.items():
        if pid in likes:
            ys[world[p["arm"]]].append(likes[pid]["likes"])
    before = sorted(i["likes"] for i in instances if i["posted_at"] < start)
    cap = int(np.percentile(before, 99, method="lower"))
    # the regression adjustment, written out again
    history: dict[str, list[int]] = defaultdict(list)
    for i in instances:
        if i["posted_at"] < start:
            history[i["dog_id"]].append(min(i["likes"], cap))
    overall = float(np.mean([v for vs in history.values() for v in vs]))
    rows = [(p, likes[pid]) for pid, p in first.items() if pid in likes]
    y = np.array([min(i["likes"], cap) for _, i in rows], dtype=float)
    lf = [i["values"][list(i["names"]).index("log_followers")] for _, i in rows]
    x = np.array(
        [
            [
                np.mean(history[p["dog_id"]]) if history.get(p["dog_id"]) else overall,
                float(bool(history.get(p["dog_id"]))),
                f,
                f * f,
            ]
            for (p, _), f in zip(rows, lf, strict=True)
        ]
    )
    xc = x - x.mean(axis=0)
    adjusted = y - xc @ np.linalg.lstsq(xc, y - y.mean(), rcond=None)[0]
    is_ml = np.array([world[p["arm"]] == "machine-learned" for p, _ in rows])
    dogs = np.array([p["dog_id"] for p, _ in rows])
    fallbacks = Counter(p["fallback_reason"] for p in first.values() if p["fallback"])
    return {
        "rule": rule,
        "start": start,
        "pupdates": pupdates,
        "likes": {w: np.array(v, dtype=float) for w, v in ys.items()},
        "cap": cap,
        "adjusted": (adjusted[is_ml], adjusted[~is_ml]),
        "dogs": (dogs[is_ml], dogs[~is_ml]),
        "fallbacks": fallbacks,
        "n": len(first),
    }


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def test_counts_and_means_per_world(short_demo, recomputed):
    exp = short_demo.report["experiment"]
    assert exp["started_at"] == recomputed["start"]
    assert exp["pupdates"] == recomputed["n"]
    rule = recomputed["rule"]
    alpha = 1 - rule["confidence"]
    for w in ("historical", "machine-learned"):
        got = exp["worlds"][w]
        y = recomputed["likes"][w]
        assert got["pupdates"] == recomputed["pupdates"][w]
        assert got["labelled"] == len(y)
        m, low, high = _mean_and_interval(y, rule["mean_mixture_sd"], alpha)
        assert _close(got["likes_per_pupdate"], m)
        assert _close(got["cs_low"], low) and _close(got["cs_high"], high)


def test_lifts_raw_capped_and_adjusted(short_demo, recomputed):
    exp = short_demo.report["experiment"]
    rule = recomputed["rule"]
    alpha, tau = 1 - rule["confidence"], rule["mixture_sd"]
    ml, hist = recomputed["likes"]["machine-learned"], recomputed["likes"]["historical"]
    for got, want in (
        (exp["lift"], _lift(ml, hist, tau, alpha)),
        (
            exp["capped"]["lift"],
            _lift(np.minimum(ml, recomputed["cap"]), np.minimum(hist, recomputed["cap"]), tau, alpha),
        ),
        (exp["capped"]["adjusted"]["lift"], _lift(*recomputed["adjusted"], tau, alpha)),
    ):
        assert _close(got["difference"], want[0])
        assert _close(got["cs_low"], want[1]) and _close(got["cs_high"], want[2])
        assert got["excludes_zero"] == (want[1] > 0 or want[2] < 0)
    assert exp["capped"]["cap"] == recomputed["cap"]


def _clustered(y: np.ndarray, dogs: np.ndarray) -> float:
    sums = defaultdict(float)
    for r, d in zip(y - y.mean(), dogs, strict=True):
        sums[d] += r
    return sum(v * v for v in sums.values()) / len(y) ** 2


def test_the_dog_clustered_check(short_demo, recomputed):
    got = short_demo.report["experiment"]["capped"]["adjusted"]["lift_dog_clustered"]
    rule = recomputed["rule"]
    (a, b), (da, db) = recomputed["adjusted"], recomputed["dogs"]
    d = float(a.mean() - b.mean())
    h = _half(_clustered(a, da) + _clustered(b, db), rule["mixture_sd"], 1 - rule["confidence"])
    assert _close(got["difference"], d) and _close(got["cs_low"], d - h) and _close(got["cs_high"], d + h)
    assert got["dogs"] == len(set(da)) + len(set(db))


def test_fallbacks_of_the_experiment(short_demo, recomputed):
    preds = short_demo.report["predictions"]
    assert preds["in_experiment"] == recomputed["n"]
    assert preds["fallbacks"] == sum(recomputed["fallbacks"].values())
    assert preds["fallbacks_by_reason"] == dict(recomputed["fallbacks"])
    assert preds["fallback_share"] < 0.05
