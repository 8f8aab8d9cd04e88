"""Experiments ("possible worlds"): the report's figures equal a plain offline recomputation from
the topics, and a challenger that beats the champion with enough evidence is promoted, once."""

from __future__ import annotations

import collections
import math
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from services.supervisor.settings import DEFAULT_POLICIES
from tests.support.supervisor import (
    SupervisorProcess,
    Writer,
    decisions,
    fake_artifact,
    instance,
    model_events,
    now_ms,
    prediction,
    publish,
    read_instances,
    read_predictions,
    status_event,
    wait_for,
)

CONFIDENCE = 0.95
SETTLE_MS = 2000


def offline_report(settings) -> dict[str, dict]:
    """The experiment, recomputed plainly from the three topics with scipy."""
    events = model_events(settings)
    start = max((e["created_at"] for e in events if e["kind"] == "ACTIVATED"), default=0)
    labels = {(i["pupdate_id"], i["extractor_version"]): i["likes"] for i in read_instances(settings)}
    pupdates: collections.Counter[str] = collections.Counter()
    likes: dict[str, list[int]] = collections.defaultdict(list)
    errors: dict[str, list[float]] = collections.defaultdict(list)
    for p in read_predictions(settings):
        if p["predicted_at"] < start + SETTLE_MS:
            continue
        pupdates[p["arm"]] += 1
        y = labels.get((p["pupdate_id"], p["extractor_version"]))
        if y is not None:
            likes[p["arm"]].append(y)
            errors[p["arm"]].append(abs(p["predicted_likes"] - y))
    out = {}
    for arm in ("champion", "challenger", "baseline"):
        y = np.array(likes[arm], dtype=float)
        low, high = stats.t.interval(CONFIDENCE, len(y) - 1, loc=y.mean(), scale=stats.sem(y))
        out[arm] = {
            "pupdates": pupdates[arm],
            "labelled": len(y),
            "likes": int(y.sum()),
            "likes_per_pupdate": y.mean(),
            "ci_low": low,
            "ci_high": high,
            "std": y.std(ddof=1),
            "mae": float(np.mean(errors[arm])),
        }
    for arm in ("challenger", "baseline"):
        t = stats.ttest_ind(likes[arm], likes["champion"], equal_var=False)
        ci = t.confidence_interval(CONFIDENCE)
        out[arm]["vs_champion"] = {
            "difference": np.mean(likes[arm]) - np.mean(likes["champion"]),
            "ci_low": ci.low,
            "ci_high": ci.high,
            "df": t.df,
        }
    return out | {"started_at": start}


def _approx(a, b) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@pytest.fixture
def no_promotion(tmp_path: Path) -> Path:
    path = tmp_path / "policies.toml"
    text = DEFAULT_POLICIES.read_text()
    assert "promote = true" in text
    path.write_text(text.replace("promote = true", "promote = false"))
    return path


def test_report_equals_offline_recomputation_and_a_winning_challenger_is_promoted_once(
    topics, tmp_path, no_promotion
):
    rng = np.random.default_rng(5)
    started = now_ms() - 60_000
    # Both models predict about the mean of their world (better than the baseline's 4 likes).
    champion = fake_artifact("champion", 5 * np.exp(rng.normal(0, 0.05, 500)), created_at=started - 20_000)
    challenger = fake_artifact(
        "challenger", 6 * np.exp(rng.normal(0, 0.05, 500)), created_at=started - 10_000
    )
    weights = {"champion": 0.45, "challenger": 0.45, "baseline": 0.1}
    publish(
        topics,
        champion.to_event(),
        challenger.to_event(),
        status_event(
            "ACTIVATED", champion, arm="champion", created_at=started - 5_000, actor="operator:tests"
        ),
        status_event("ACTIVATED", challenger, arm="challenger", weights=weights, created_at=started),
    )
    # The challenger's world gets more likes per pupdate (6 vs 5); baseline as the champion.
    mean_likes = {"champion": 5.0, "challenger": 6.0, "baseline": 5.0}
    served = {"champion": champion.model_version, "challenger": challenger.model_version, "baseline": None}
    plan = ["champion"] * 1500 + ["challenger"] * 1500 + ["baseline"] * 300
    preds, insts = [], []
    t0 = now_ms()
    for i, arm in enumerate(plan):
        pid = f"x{i:05d}"
        version = served[arm]
        raw = float(mean_likes[arm] * np.exp(rng.normal(0, 0.05))) if version else None
        p = prediction(pid, version=version, raw=raw, arm=arm, baseline=4.0, at=t0)
        if version is None:  # the baseline arm: served as intended, not a fallback
            p |= {"fallback": False, "fallback_reason": None, "predicted_likes": 4.0}
        preds.append(p)
        if i % 10 != 0:  # 90% labelled so far
            insts.append(instance(pid, likes=int(rng.poisson(mean_likes[arm])), baseline=4.0))
    # Before the experiment began: never counted.
    preds += [
        prediction(f"old{i}", version=champion.model_version, raw=1.0, at=started + 500) for i in range(50)
    ]
    writer = Writer(topics)
    writer.predictions(preds)
    writer.instances(insts)

    supervisor = SupervisorProcess(topics, tmp_path, policies_file=no_promotion).wait_ready()
    try:
        wait_for(
            lambda: supervisor.models()["counters"]["instances_read"] == len(insts),
            timeout=30,
            what="every label read",
        )
        report = supervisor.http.get("/v1/experiments").json()
    finally:
        supervisor.stop()
    expected = offline_report(topics)
    [exp] = report["experiments"]
    assert exp["started_at"] == expected["started_at"] == started
    for arm in ("champion", "challenger", "baseline"):
        got, want = exp["arms"][arm], expected[arm]
        for k in ("pupdates", "labelled", "likes"):
            assert got[k] == want[k], (arm, k, got[k], want[k])
        for k in ("likes_per_pupdate", "ci_low", "ci_high", "std", "mae"):
            assert _approx(got[k], want[k]), (arm, k, got[k], want[k])
    for arm in ("challenger", "baseline"):
        got, want = exp["vs_champion"][arm], expected[arm]["vs_champion"]
        for k in ("difference", "ci_low", "ci_high", "df"):
            assert _approx(got[k], want[k]), (arm, k, got[k], want[k])
    assert exp["arms"]["champion"]["pupdates"] == 1500  # the 50 from before the experiment left out
    assert exp["winner"] == "challenger" and expected["challenger"]["vs_champion"]["ci_low"] > 0
    assert decisions(topics) == []  # promotion disabled by the policy file

    # With the default policies the challenger is promoted: one ACTIVATED record, with the figures.
    supervisor = SupervisorProcess(topics, tmp_path).wait_ready()
    try:
        [promoted] = wait_for(lambda: decisions(topics, "ACTIVATED"), timeout=15, what="the promotion")
        after = supervisor.http.get("/v1/experiments").json()["experiments"][0]
    finally:
        supervisor.stop()
    assert promoted["model_version"] == challenger.model_version and promoted["arm"] == "champion"
    assert promoted["actor"] == "supervisor" and "challenger wins" in promoted["reason"]
    want = expected["challenger"]["vs_champion"]
    assert _approx(promoted["metrics"]["difference"], want["difference"])
    assert _approx(promoted["metrics"]["ci_low"], want["ci_low"])
    assert promoted["params"]["previous_champion"] == champion.model_version
    # The promotion started a new experiment: the challenger is now the champion, nothing counted yet.
    assert after["champion"] == challenger.model_version and after["challenger"] is None
    assert after["started_at"] == promoted["created_at"]
    assert all(a["pupdates"] == 0 for a in after["arms"].values())

    # Restarted again: the promotion is not repeated.
    supervisor = SupervisorProcess(topics, tmp_path).wait_ready()
    try:
        time.sleep(2.5)  # a few evaluations, on the same evidence
    finally:
        supervisor.stop()
    assert [(e["kind"], e["model_version"]) for e in decisions(topics)] == [
        ("ACTIVATED", challenger.model_version)
    ]
