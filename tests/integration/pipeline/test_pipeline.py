"""The learning half of the system on the simulated Sniffable: facts -> featurizer -> trainer.

Lesson 1 of Pooch Predictor 1.x: predictions stopped changing because nothing retrained.
Here models are learned continuously from what the simulation's hidden ground truth produced,
and every published version must beat the historical baseline on its own newest slice.
"""

from __future__ import annotations

from libs.common.serde import serde
from libs.common.topics import MODELS
from sniffable import SimConfig
from tests.support.kafkautil import read_all, wait_for
from tests.support.procs import ServiceProcess
from tests.support.simworld import facts_from_simulation

HORIZON_MS = 6 * 3600 * 1000
SIM_MAX_JITTER_MS = SimConfig(seed=0).max_jitter_ms


def _published(settings) -> list[dict]:
    events = [serde("model_event").decode(m.value()) for m in read_all(settings, settings.topic(MODELS))]
    return [e for e in events if e["kind"] == "PUBLISHED"]


def test_versions_learned_from_the_simulated_world_beat_the_baseline(topics, tmp_path):
    settings = topics
    pupdates, _likes = facts_from_simulation(settings, 60_000, seed=99)
    # The trainer first: it must see the instances arrive to retrain on them (a trainer that
    # starts after the featurizer wrote them all trains once, on the whole window).
    trainer = ServiceProcess(
        "trainer",
        settings,
        tmp_path,
        replica_id="t1",
        min_instances=300,
        retrain_every=300,
        retrain_interval_s=3,
    )
    featurizer = None
    try:
        trainer.wait_ready()
        featurizer = ServiceProcess(
            "featurizer",
            settings,
            tmp_path,
            horizon_ms=HORIZON_MS,
            lateness_ms=SIM_MAX_JITTER_MS,
            idle_flush_ms=1500,
            versions='["v1"]',
        )
        featurizer.wait_ready()
        wait_for(
            lambda: len(_published(settings)) >= 2, timeout=150, interval=2, what="two published versions"
        )
    finally:
        if featurizer is not None:
            featurizer.stop()
        trainer.stop()
    versions = _published(settings)
    assert len({v["model_version"] for v in versions}) == len(versions), "a version published twice"
    for v in versions:
        m = v["metrics"]
        # Learned from the simulated world's likes, judged on the newest slice in time.
        assert m["improvement_vs_baseline"] >= m["required_margin_vs_baseline"] > 0, (v["model_version"], m)
        assert m["mae_ratio_to_baseline"] < 1.0 and m["rmse_ratio_to_baseline"] < 1.0, m
    assert len(pupdates) > 1500
