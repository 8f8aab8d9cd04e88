"""SIGKILL and restart: the supervisor rebuilds the same windows from the topics, and never takes
a decision twice (what is decided is read back from the models topic)."""

from __future__ import annotations

import time

import numpy as np

from tests.support.supervisor import (
    TOKEN,
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

COUNTRIES = ("US", "GB", "DE", "FR")


def test_sigkill_and_restart_rebuilds_the_same_windows_and_repeats_no_decision(topics, tmp_path):
    rng = np.random.default_rng(2)
    good_pred = rng.exponential(4, 3000)
    good = fake_artifact("good", good_pred, created_at=now_ms() - 20_000)
    rogue = fake_artifact("rogue", good_pred, created_at=now_ms() - 10_000)
    publish(topics, good.to_event(), rogue.to_event())
    writer = Writer(topics)
    sup = SupervisorProcess(topics, tmp_path).wait_ready()
    t0 = now_ms()
    # The good version on the champion arm, labelled; the rogue on the challenger arm, negative in
    # FR, and its invalid rows carry no model_version (as the scorer writes them): attributed.
    preds, insts = [], []
    for i in range(3000):
        c = COUNTRIES[i % 4]
        at = t0 + i // 100
        preds.append(
            prediction(f"g{i}", version=good.model_version, raw=float(good_pred[i]), country=c, at=at)
        )
        insts.append(instance(f"g{i}", likes=int(rng.poisson(good_pred[i])), baseline=4.0, country=c))
        if i < 800:
            raw = -2.0 if c == "FR" else float(good_pred[i])
            preds.append(
                prediction(f"r{i}", version=rogue.model_version, raw=raw, country=c, arm="challenger", at=at)
            )
    preds.append(prediction("nomodel", version=None, raw=None, reason="no_model", at=t0))
    writer.predictions(preds)
    writer.instances(insts)
    try:
        [pause] = wait_for(lambda: decisions(topics, "PAUSED"), timeout=20, what="the rogue paused")
        wait_for(
            lambda: (
                sup.models()["counters"]["instances_read"] == len(insts)
                and sup.models()["counters"]["predictions_read"] == len(preds)
            ),
            timeout=20,
            what="everything read",
        )
        before = sup.windows_state()
        health_before = sup.models()
        sup.kill()  # SIGKILL: no goodbye, nothing flushed
        sup = SupervisorProcess(topics, tmp_path).wait_ready()
        after = sup.windows_state()
        health_after = sup.models()
        time.sleep(2.0)  # several evaluations on the same, still breaching, evidence
        final = decisions(topics)
    finally:
        sup.stop()

    assert pause["model_version"] == rogue.model_version and pause["params"]["country"] == "FR"
    # The windows really hold something, and exactly the same after the restart.
    live = before["windows"]["live"]
    assert sum(t["n"] for k, t in live.items() if k.startswith(good.model_version)) == 3000
    assert sum(t["invalid"] for k, t in live.items() if k.startswith(rogue.model_version)) == 200  # FR
    assert sum(t["n"] for t in before["windows"]["labels"].values()) == 3000
    assert after == before
    for key in ("versions", "extractors", "as_of", "counters"):
        assert health_after[key] == health_before[key], key
    # No decision repeated: one PAUSED, as before the kill.
    assert [(e["kind"], e["model_version"]) for e in final] == [("PAUSED", rogue.model_version)]


def test_resumed_version_is_judged_on_new_evidence_only(topics, tmp_path):
    """An operator resumes a paused version: the old bad figures do not pause it again (a
    decision is not repeated), new bad ones do (a new decision)."""
    rogue = fake_artifact("rogue", [1.0, 2.0, 3.0, 4.0] * 25, created_at=now_ms() - 5_000)
    publish(topics, rogue.to_event())
    writer = Writer(topics)
    sup = SupervisorProcess(topics, tmp_path).wait_ready()
    try:
        writer.predictions(prediction(f"a{i}", version=rogue.model_version, raw=-1.0) for i in range(50))
        wait_for(lambda: decisions(topics, "PAUSED"), timeout=15, what="first pause")
        r = sup.http.post(
            f"/v1/models/{rogue.model_version}/resume", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert r.status_code == 200, r.text
        time.sleep(2.0)
        assert len(decisions(topics, "PAUSED")) == 1, "re-paused on evidence from before the resume"
        sup.kill()
        sup = SupervisorProcess(topics, tmp_path).wait_ready()
        time.sleep(1.5)
        assert len(decisions(topics, "PAUSED")) == 1, "re-paused after a restart on old evidence"
        writer.predictions(prediction(f"b{i}", version=rogue.model_version, raw=-1.0) for i in range(50))
        wait_for(
            lambda: len(decisions(topics, "PAUSED")) == 2, timeout=15, what="second pause on new evidence"
        )
    finally:
        sup.stop()
    kinds = [(e["kind"], e["event_id"]) for e in decisions(topics)]
    assert [k for k, _ in kinds] == ["PAUSED", "RESUMED", "PAUSED"]
    assert kinds[0][1] != kinds[2][1]
