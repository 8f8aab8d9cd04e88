"""The trainer as a real process on the real broker and Redis: versions follow the data."""

from __future__ import annotations

import json
import time

import numpy as np
import redis

from libs.common.artifacts import ModelCache, version_for_sha
from libs.common.features.extractors import CATEGORICAL
from libs.common.topics import INSTANCES
from services.trainer.synthetic import NAMES, SyntheticWorld, probe_set
from services.trainer.train import predict
from tests.support.kafkautil import wait_for
from tests.support.trainer import TrainerProc, feed, published, wait_published


def test_versions_follow_the_data_beat_the_baseline_and_are_cached(topics, tmp_path):
    settings = topics
    world = SyntheticWorld(seed=11)
    trainer = TrainerProc(settings, tmp_path)
    try:
        trainer.wait_ready()
        assert trainer.status()["role"] == "leader"
        for i, regime in enumerate((0, 1, 2)):
            feed(settings, world.instances(300, regime))
            arts = wait_published(settings, i + 1, trainer)
        assert len(arts) == 3
        status = trainer.status()
        assert status["windows"]["v1"]["size"] == 900
        assert status["windows"]["v1"]["published"] == [a.model_version for a in arts]
        cache = ModelCache(redis.Redis.from_url(settings.redis_url), settings.topic_prefix)
        wait_for(lambda: not cache.missing([a.model_version for a in arts]), timeout=10, what="cached")
        assert trainer.metric("pooch_trainer_published_versions_total", extractor_version="v1") == 3
        assert trainer.metric("pooch_trainer_runs_total", extractor_version="v1", outcome="published") == 3
        assert trainer.metric("pooch_trainer_instances_total", extractor_version="v1") == 900
        assert trainer.metric("pooch_trainer_window_instances", extractor_version="v1") == 900
        assert trainer.metric("pooch_trainer_last_success_timestamp_seconds", extractor_version="v1") > 0
        assert trainer.metric("pooch_trainer_run_duration_seconds_count", extractor_version="v1") == 3
        assert trainer.metric("pooch_trainer_leader") == 1
        improvement = trainer.metric(
            "pooch_trainer_validation_metric", extractor_version="v1", metric="improvement_vs_baseline"
        )
        assert improvement == arts[-1].metrics["improvement_vs_baseline"]
        code, ready = trainer.get("/readyz")
        assert code == 200 and ready["detail"]["role"] == "leader"
    finally:
        trainer.stop()

    probes = probe_set()
    previous = None
    for n, art in enumerate(arts, start=1):
        text = art.model_text()
        assert art.model_version == version_for_sha(art.sha256, "v1")
        assert cache.load_text(art.model_version) == text
        assert art.feature_names == NAMES
        assert art.categorical_features == CATEGORICAL
        assert set(art.feature_importance) == set(NAMES)
        assert len(art.validation_quantiles) == 21
        m, p = art.metrics, art.params
        # Beats the historical baseline on its validation slice, and says by how much.
        assert m["improvement_vs_baseline"] >= m["required_margin_vs_baseline"] == 0.02
        assert m["improvement_vs_baseline"] == 1 - m["poisson_deviance"] / m["baseline_poisson_deviance"]
        assert {"mae", "rmse", "mae_ratio_to_baseline", "rmse_ratio_to_baseline"} <= set(m)
        assert p["data.rows"] == str(300 * n)
        assert p["data.topic"] == settings.topic(INSTANCES)
        assert json.loads(p["data.offsets"]), "offsets per partition"
        assert (
            int(p["data.posted_at_min"])
            <= int(p["data.validation_posted_at_min"])
            <= int(p["data.posted_at_max"])
        )
        assert p["lgb.objective"] == "poisson"
        assert p["trainer.replica"] == "t1"
        preds = predict(text, probes)
        assert np.all(preds > 0)
        if previous is not None:
            # Each later version beat the one before on the newest slice ...
            assert p["champion.model_version"] == previous[0]
            assert m["improvement_vs_champion"] >= 0
            # ... and the predictions really moved (the first lesson: models that never change).
            assert not np.allclose(preds, previous[1])
        previous = (art.model_version, preds)


def test_post_train_runs_now_and_a_restart_rebuilds_the_same_window(topics, tmp_path):
    settings = topics
    trainer = TrainerProc(
        settings, tmp_path, POOCH_TRAINER_RETRAIN_EVERY=100_000, POOCH_TRAINER_FIRST_MODEL_ASAP="false"
    )
    try:
        trainer.wait_ready()
        feed(settings, SyntheticWorld(seed=12).instances(400))
        wait_for(
            lambda: trainer.status().get("windows", {}).get("v1", {}).get("size") == 400,
            timeout=30,
            what="400 instances read",
        )
        time.sleep(1)
        assert published(settings) == [], "neither the count nor the interval is due"
        code, body = trainer.post("/v1/train", {"extractor_version": "v1"})
        assert (code, body) == (202, {"accepted": True, "extractor_versions": ["v1"]})
        (art,) = wait_published(settings, 1, trainer)
        assert art.params["trainer.trigger"].startswith("requested")
        assert trainer.post("/v1/train", {"extractor_version": "v9"})[0] == 404
    finally:
        trainer.stop()
    # A restart replays instances into the same window and trains it again (leadership
    # acquired): the same model text, so the same version, which is not published twice.
    again = TrainerProc(settings, tmp_path, replica="t1-again", POOCH_TRAINER_RETRAIN_EVERY=100_000)
    try:
        again.wait_ready()
        wait_for(
            lambda: again.status().get("last_runs", {}).get("v1"), timeout=30, what="the restart's first run"
        )
        run = again.status()["last_runs"]["v1"]
        assert run["outcome"] == "unchanged", run
        assert run["model_version"] == art.model_version
        assert len(published(settings)) == 1
    finally:
        again.stop()


def test_a_failing_run_leaves_the_service_consuming_and_reporting_it(topics, tmp_path):
    settings = topics
    world = SyntheticWorld(seed=13)
    # num_leaves=1 is refused by LightGBM inside the run: a real failure, not a mock.
    trainer = TrainerProc(settings, tmp_path, POOCH_TRAINER_NUM_LEAVES=1)
    try:
        trainer.wait_ready()
        feed(settings, world.instances(300))
        wait_for(
            lambda: trainer.metric("pooch_trainer_runs_total", extractor_version="v1", outcome="failed"),
            timeout=30,
            what="a failed run",
        )
        code, ready = wait_for(
            lambda: (r := trainer.get("/readyz"))[1]["detail"]["failed_runs"] and r,
            timeout=10,
            what="readiness detail",
        )
        assert code == 503
        assert ready["checks"]["last_training_run_ok"] is False
        assert "num_leaves" in ready["detail"]["failed_runs"]["v1"]["error"]
        assert trainer.get("/healthz")[0] == 200
        assert any("training run FAILED" in line.get("msg", "") for line in trainer.logs())
        feed(settings, world.instances(300))
        wait_for(
            lambda: trainer.metric("pooch_trainer_instances_total", extractor_version="v1") == 600,
            timeout=30,
            what="consumption goes on",
        )
        wait_for(
            lambda: trainer.metric("pooch_trainer_runs_total", extractor_version="v1", outcome="failed") == 2,
            timeout=30,
            what="the next trigger runs again",
        )
        assert trainer.proc.poll() is None
        assert published(settings) == []
    finally:
        trainer.stop()


def test_the_status_document_is_whole_from_the_first_answer_and_rebuilt_once_ready(topics, tmp_path):
    # Seen in CI: /readyz said 200 and the next /v1/status answered 200 with {} (the document
    # was first filled by the loop's throttled gauges, up to half a second after readiness).
    trainer = TrainerProc(topics, tmp_path)
    answers: list[dict] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            code, body = trainer.get("/v1/status")
            if code == 200:
                answers.append(body)
            if trainer.ready():
                break
        code, body = trainer.get("/v1/status")
        assert code == 200, body
        answers.append(body)
    finally:
        trainer.stop()
    assert answers, "the trainer never answered /v1/status"
    partial = [
        a for a in answers if not isinstance(a, dict) or not {"role", "rebuilt", "windows"} <= a.keys()
    ]
    assert not partial, f"{len(partial)} of {len(answers)} status answers were partial: {partial[:3]}"
    assert answers[-1]["rebuilt"] is True and answers[-1]["role"] in ("leader", "standby")
