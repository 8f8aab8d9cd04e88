"""Lesson 6 and 8: a rogue model version that predicts nonsense for one country only is paused
within seconds, by a record that says where, what figure and which threshold; the scorer falls
back to the last good version."""

from __future__ import annotations

import collections
import math

from tests.support.scorer import ScorerProcess
from tests.support.supervisor import (
    COUNTRIES,
    CountryFeeder,
    SupervisorProcess,
    Writer,
    decisions,
    fake_artifact,
    good_and_rogue_models,
    now_ms,
    prediction,
    publish,
    read_predictions,
    wait_for,
)


def test_rogue_version_negative_in_one_country_is_paused_and_the_scorer_falls_back(topics, tmp_path):
    good, rogue = good_and_rogue_models("DE")
    publish(topics, good.to_event())
    scorer = ScorerProcess(topics, tmp_path, batch_size=500)
    supervisor = SupervisorProcess(topics, tmp_path)
    feeder = CountryFeeder(topics, rate=2000, labels=True)
    try:
        scorer.wait_ready()
        supervisor.wait_ready()
        feeder.start()
        # The good version serves everywhere, realised likes join its predictions, and the
        # supervisor sees it healthy: no false alarm over 5,000 predictions.
        wait_for(
            lambda: supervisor.window(good.model_version).get("labelled", 0) >= 5000,
            timeout=60,
            what="5,000 labelled predictions of the good version",
        )
        healthy = supervisor.version(good.model_version)
        assert healthy["health"] == "healthy", healthy["breaches"]
        assert healthy["window"]["all"]["error_ratio"] < 1.0  # better than the baseline
        assert all(healthy["window"][f"country={c}"]["invalid"] == 0 for c in COUNTRIES)
        assert decisions(topics) == []

        # The rogue version arrives through the normal path: a PUBLISHED record.
        publish(topics, rogue.to_event())
        paused = wait_for(
            lambda: decisions(topics, "PAUSED", rogue.model_version),
            timeout=30,
            interval=0.3,
            what="a PAUSED record for the rogue version",
        )
        paused_seen = now_ms()
        # Keep traffic going: what the scorer does after the pause.
        wait_for(lambda: now_ms() > paused_seen + 3000, timeout=10, what="traffic after the pause")
    finally:
        written = feeder.stop()
    try:
        wait_for(
            lambda: len(read_predictions(topics)) >= len(written),
            timeout=60,
            interval=0.5,
            what="all predictions",
        )
        preds = read_predictions(topics)
        final = decisions(topics)
        assert supervisor.proc.poll() is None and scorer.proc.poll() is None
    finally:
        supervisor.stop()
        scorer.stop()

    # The rogue's nonsense really happened, in one country only, and was contained by the scorer.
    bad = [p for p in preds if p["fallback_reason"] == "invalid_output"]
    assert bad, "the rogue version never produced a negative output"
    assert {p["country"] for p in bad} == {"DE"}, collections.Counter(p["country"] for p in bad)
    assert all(p["raw_output"] < 0 and p["predicted_likes"] >= 0 for p in bad)
    rogue_valid = [p for p in preds if p["model_version"] == rogue.model_version]
    assert rogue_valid and {p["country"] for p in rogue_valid} == set(COUNTRIES) - {"DE"}

    # Paused within 10 seconds of its first bad prediction, once, and nothing else decided.
    [pause] = paused
    first_bad = min(p["predicted_at"] for p in bad)
    delay_ms = pause["created_at"] - first_bad
    assert 0 <= delay_ms <= 10_000, f"paused {delay_ms} ms after the first bad prediction"
    print(f"rogue paused {delay_ms} ms after its first bad prediction: {pause['reason']}")
    assert [(e["kind"], e["model_version"]) for e in final] == [("PAUSED", rogue.model_version)], final

    # The record says which country, what figure and which threshold.
    assert pause["actor"] == "supervisor"
    # (decided on country=DE itself, or on all/arm as soon as they had the evidence, the fault
    # located in DE: either way the record names the country and its figure)
    assert pause["params"]["country"] == "DE", pause
    assert pause["params"]["slice"] in ("country=DE", "all", "arm=champion")
    assert pause["params"]["policy"] == "invalid_outputs"
    assert pause["params"]["metric"] == "invalid_rate"
    assert pause["metrics"]["country_invalid_rate"] == 1.0
    assert pause["metrics"]["country_offending"] == pause["metrics"]["country_evidence"] >= 5
    assert pause["metrics"]["invalid_rate"] >= pause["metrics"]["threshold"] == 0.02
    assert pause["metrics"]["evidence"] >= pause["metrics"]["min_evidence"] == 20
    assert "country=DE" in pause["reason"] and "invalid_rate" in pause["reason"] and "0.02" in pause["reason"]

    # The scorer fell back to the last good version, in every country, a second after the pause.
    after = [p for p in preds if p["predicted_at"] >= pause["created_at"] + 1000]
    assert len(after) > 1000
    served = collections.Counter((p["model_version"], p["fallback"]) for p in after)
    late = sorted(
        p["predicted_at"] - pause["created_at"] for p in after if p["model_version"] != good.model_version
    )
    assert set(served) == {(good.model_version, False)}, (
        f"{served}; ms after the pause: {late[:5]}..{late[-5:]}"
    )
    assert {p["country"] for p in after} == set(COUNTRIES)
    assert all(math.isfinite(p["predicted_likes"]) and p["predicted_likes"] >= 0 for p in preds)


def test_wildly_high_outputs_in_one_country_pause_the_version(topics, tmp_path):
    """Supervisor alone, predictions written as the scorer writes them: a version whose finite
    outputs are absurd (a million likes) in BR only is paused by the implausible-output policy."""
    normal = [1.0 + (i % 40) * 0.5 for i in range(400)]  # validation predictions: 1 .. 20.5 likes
    wild = fake_artifact("wild", normal, created_at=now_ms() - 5000)
    publish(topics, wild.to_event())
    supervisor = SupervisorProcess(topics, tmp_path).wait_ready()
    writer = Writer(topics)
    try:
        t0 = now_ms()
        healthy = [
            prediction(f"h{i}", version=wild.model_version, raw=normal[i % 400], country=c, at=t0)
            for i, c in enumerate(["US", "GB", "FR"] * 300)
        ]
        writer.predictions(healthy)
        wait_for(
            lambda: supervisor.window(wild.model_version).get("predictions") == 900,
            timeout=20,
            what="healthy",
        )
        assert decisions(topics) == []
        first_bad = now_ms()
        writer.predictions(
            prediction(f"b{i}", version=wild.model_version, raw=1e6 + i, country="BR", at=first_bad)
            for i in range(30)
        )
        [pause] = wait_for(lambda: decisions(topics, "PAUSED"), timeout=15, what="the pause")
    finally:
        supervisor.stop()
    assert pause["model_version"] == wild.model_version
    assert pause["created_at"] - first_bad <= 10_000
    assert pause["params"]["country"] == "BR" and pause["params"]["policy"] == "implausible_outputs"
    assert pause["metrics"]["country_implausible_rate"] == 1.0 and pause["metrics"]["threshold"] == 0.02
    assert pause["metrics"]["country_offending"] >= 5
