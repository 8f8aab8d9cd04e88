"""A tampered artifact is refused, with a clear log line and a metric, wherever it comes from."""

from __future__ import annotations

import logging

import pytest
import redis
from prometheus_client import REGISTRY

from libs.common.artifacts import ArtifactIntegrityError, ModelCache, build_artifact
from libs.common.kafka.producer import Producer
from libs.common.serde import serde
from libs.common.topics import MODELS
from services.trainer.synthetic import NAMES, SyntheticWorld
from tests.support.kafkautil import wait_for
from tests.support.trainer import TrainerProc, feed, wait_published


def test_a_tampered_publication_on_models_is_refused_by_the_trainer(topics, tmp_path):
    settings = topics
    genuine = build_artifact(
        "tree\nversion=v4\nfeature_names=a\n", extractor_version="v1", feature_names=NAMES
    )
    # Someone swaps the bytes of a published model: the sha256 no longer names them.
    tampered = genuine.to_event() | {
        "artifact": build_artifact("tree\nevil\n", extractor_version="v1", feature_names=NAMES).artifact
    }
    producer = Producer(settings, name="attacker")
    producer.produce(settings.topic(MODELS), serde("model_event").encode(tampered), key=genuine.model_version)
    producer.flush(30)

    trainer = TrainerProc(settings, tmp_path)
    try:
        trainer.wait_ready()
        wait_for(
            lambda: (
                trainer.metric("pooch_model_integrity_failures_total", service="trainer", source="topic") == 1
            ),
            timeout=20,
            what="the integrity failure counted",
        )
        lines = [line for line in trainer.logs() if "REFUSED" in line.get("msg", "")]
        assert lines, trainer.log_tail()
        line = lines[0]
        assert line["level"] == "error"
        assert "sha256 mismatch" in line["msg"] and genuine.model_version in line["msg"]
        assert line["expected_sha256"] == genuine.sha256 and line["actual_sha256"] != genuine.sha256
        assert trainer.status()["refused_versions"] == [genuine.model_version]

        # The refused version is neither cached nor a champion: the first real model only has to
        # beat the baseline, and the cache holds only what was verified.
        feed(settings, SyntheticWorld(seed=41).instances(300))
        arts = wait_published(settings, 2, trainer)  # the tampered record, then the trainer's
        mine = arts[-1]
        assert "champion.model_version" not in mine.params
        cache = ModelCache(redis.Redis.from_url(settings.redis_url), settings.topic_prefix)
        wait_for(lambda: not cache.missing([mine.model_version]), timeout=10, what="cached")
        assert cache.missing([genuine.model_version]) == [genuine.model_version]
    finally:
        trainer.stop()


def test_a_tampered_redis_entry_is_refused_on_load(topics, caplog):
    settings = topics
    cache = ModelCache(redis.Redis.from_url(settings.redis_url), settings.topic_prefix, service="scorer")
    art = build_artifact("tree\nversion=v4\n" * 20, extractor_version="v1", feature_names=NAMES)
    cache.put(art)
    assert cache.load_text(art.model_version) == "tree\nversion=v4\n" * 20
    cache.client.hset(
        cache.key(art.model_version),
        "artifact",
        build_artifact("x", extractor_version="v1", feature_names=NAMES).artifact,
    )
    labels = {"service": "scorer", "source": "redis"}
    before = REGISTRY.get_sample_value("pooch_model_integrity_failures_total", labels) or 0.0
    with caplog.at_level(logging.ERROR), pytest.raises(ArtifactIntegrityError, match="sha256 mismatch"):
        cache.load_text(art.model_version)
    assert REGISTRY.get_sample_value("pooch_model_integrity_failures_total", labels) == before + 1
    assert any(art.model_version in r.getMessage() and "REFUSED" in r.getMessage() for r in caplog.records)
    cache.delete(art.model_version)
    assert cache.missing([art.model_version]) == [art.model_version]


def test_an_intact_model_lightgbm_cannot_use_is_refused_by_trainer_and_scorer_alike(topics, tmp_path):
    """Item 7 of issue 11: before one loading rule, the trainer took such a version as its
    champion (only the sha256 was checked), every comparison against it raised and nothing was
    published again, while the scorer refused it: the two disagreed about the champion."""
    from tests.support.scorer import ScorerProcess

    settings = topics
    broken = build_artifact("tree\nversion=v4\nnot a model\n", extractor_version="v1", feature_names=NAMES)
    producer = Producer(settings, name="careless-release")
    producer.produce(
        settings.topic(MODELS), serde("model_event").encode(broken.to_event()), key=broken.model_version
    )
    producer.flush(30)

    trainer = TrainerProc(settings, tmp_path)
    scorer = ScorerProcess(settings, tmp_path)
    try:
        trainer.wait_ready()
        scorer.wait_ready()
        wait_for(
            lambda: trainer.status().get("refused_versions") == [broken.model_version],
            timeout=20,
            what="the trainer refusing the unusable version",
        )
        assert trainer.metric("pooch_model_unloadable_total", service="trainer") == 1
        statuses = scorer.http.get("/v1/models").json()["statuses"]
        assert statuses.get(broken.model_version) == "refused", statuses

        feed(settings, SyntheticWorld(seed=43).instances(300))
        arts = wait_published(settings, 2, trainer)  # the broken record, then the trainer's own
        mine = arts[-1]
        assert mine.model_version != broken.model_version
        assert "champion.model_version" not in mine.params  # it only had to beat the baseline
        wait_for(
            lambda: (
                (scorer.http.get("/v1/models").json()["serving"].get("v1") or {}).get("champion")
                == mine.model_version
            ),
            timeout=20,
            what="the scorer serving the trainer's model",
        )
    finally:
        trainer.stop()
        scorer.stop()
