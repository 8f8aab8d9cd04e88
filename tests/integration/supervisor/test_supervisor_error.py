"""Realised error: a version whose realised loss is worse than the historical baseline's over
enough labelled predictions is paused; a healthy version with thousands of predictions, and a
bad version that is merely new (too little evidence), are not."""

from __future__ import annotations

import numpy as np

from tests.support.supervisor import (
    SupervisorProcess,
    Writer,
    decisions,
    fake_artifact,
    instance,
    now_ms,
    prediction,
    publish,
    wait_for,
)

COUNTRIES = ("US", "GB", "DE", "FR", "JP")


def _world(n: int, seed: int):
    """Truth mu per pupdate, realised likes ~ Poisson(mu), a historical baseline that is a
    noisier estimate of mu than a good model's."""
    rng = np.random.default_rng(seed)
    mu = np.exp(rng.normal(1.5, 0.6, n))
    likes = rng.poisson(mu)
    baseline = mu * np.exp(rng.normal(0.0, 0.5, n))
    good = mu * np.exp(rng.normal(0.0, 0.1, n))
    return mu, likes, baseline, good


def test_worse_than_baseline_is_paused_healthy_and_new_versions_are_not(topics, tmp_path):
    # healthy: close to the truth. bad: three times too high. new: as bad, but few labels yet.
    mu, likes, baseline, good_pred = _world(9000, seed=11)
    healthy = fake_artifact("healthy", good_pred[:2000], created_at=now_ms() - 30_000)
    bad = fake_artifact("bad", 3 * mu[:2000], created_at=now_ms() - 20_000)
    new = fake_artifact("new", 3 * mu[:2000], created_at=now_ms() - 10_000)
    publish(topics, healthy.to_event(), bad.to_event(), new.to_event())
    supervisor = SupervisorProcess(topics, tmp_path).wait_ready()
    writer = Writer(topics)
    plan = [(healthy, "champion")] * 6000 + [(bad, "challenger")] * 2000 + [(new, "challenger")] * 250
    try:
        preds, insts = [], []
        t0 = now_ms()
        for i, (art, arm) in enumerate(plan):
            pid = f"e{i:05d}"
            country = COUNTRIES[i % len(COUNTRIES)]
            raw = float(good_pred[i] if art is healthy else 3 * mu[i])
            preds.append(
                prediction(pid, version=art.model_version, raw=raw, country=country, arm=arm, at=t0 + i // 50)
            )
            labelled = art is not new or i % 5 == 0  # the new version: 50 labels so far
            if labelled:
                insts.append(instance(pid, likes=int(likes[i]), baseline=float(baseline[i]), country=country))
        writer.predictions(preds)
        writer.instances(insts)
        wait_for(
            lambda: supervisor.models()["counters"]["instances_read"] == len(insts),
            timeout=30,
            what="every label read",
        )
        [pause] = wait_for(lambda: decisions(topics, "PAUSED"), timeout=15, what="the bad version paused")
        h = supervisor.window(healthy.model_version)
        n = supervisor.window(new.model_version)
        wait_for(lambda: now_ms() > pause["created_at"] + 2000, timeout=5, what="two more seconds of judging")
        final = decisions(topics)
    finally:
        supervisor.stop()

    assert pause["model_version"] == bad.model_version
    assert pause["params"]["policy"] == "realised_error" and pause["params"]["metric"] == "error_ratio"
    assert pause["metrics"]["error_ratio"] > 1.10 and pause["metrics"]["threshold"] == 1.10
    assert pause["metrics"]["evidence"] >= 300 and pause["metrics"]["p_value"] < 0.01
    assert pause["metrics"]["model_loss"] > pause["metrics"]["baseline_loss"]
    # The healthy version: thousands of predictions, all labelled, better than the baseline.
    assert h["predictions"] == 6000 and h["labelled"] == 6000
    assert h["error_ratio"] < 1.0
    assert h["drift_psi"] < 0.25 and h["invalid"] == 0 and h["implausible"] == 0
    # The new version is as bad, but 50 labels are not enough evidence.
    assert n["labelled"] == 50 and n["error_ratio"] > 1.10
    assert [(e["kind"], e["model_version"]) for e in final] == [("PAUSED", bad.model_version)]
