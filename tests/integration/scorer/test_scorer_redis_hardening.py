"""A real scorer process against a poisoned Redis: malformed model-cache entries never blind it
(issue 11, item 2)."""

from __future__ import annotations

import json

import pytest
import redis

from libs.common.artifacts import ModelCache
from services.scorer.fixtures import make_artifact, model_event, publish_events, train_model_text
from tests.support.kafkautil import wait_for
from tests.support.scorer import ScorerProcess

DRAFT = {
    "dog_id": "dog-00001",
    "posted_at": 1_795_000_000_000,
    "hashtags": ["#Adorable", "#puppy"],
    "dog": {"breed": "Beagle", "size": "MEDIUM", "age_months": 14},
    "dog_followers": 1200,
    "country": "US",
}


@pytest.fixture(scope="module")
def models():
    return {
        "a": make_artifact(train_model_text(rounds=20, seed=11), created_at=1),
        "b": make_artifact(train_model_text(rounds=20, seed=12), created_at=2),
    }


def _answer(scorer: ScorerProcess, draft: dict = DRAFT) -> dict:
    r = scorer.http.post("/v1/predict", json={"draft": draft})
    assert r.status_code == 200, r.text
    (row,) = r.json()["predictions"]
    return row


def test_poisoned_model_cache_is_skipped_and_the_topic_serves(topics, tmp_path, models):
    a, b = models["a"], models["b"]
    client = redis.Redis.from_url(topics.redis_url)
    cache = ModelCache(client, topics.topic_prefix)
    cache.put(a)
    cache.put(b)
    # a: valid JSON, wrong types (a number for the feature names, a string for created_at)
    meta = json.loads(client.hget(cache.key(a.model_version), "meta"))
    client.hset(
        cache.key(a.model_version),
        "meta",
        json.dumps(meta | {"feature_names": 5, "created_at": "yesterday"}),
    )
    # b: well-typed, but the cached bytes are not the model its sha256 names
    client.hset(cache.key(b.model_version), "artifact", b"\x00tampered")
    publish_events(topics, [a.to_event(), b.to_event()])

    scorer = ScorerProcess(topics, tmp_path, role="whatif", registry_sync_timeout_s=10).wait_ready()
    try:
        # The record serves: b (the newest) although its cached copy was refused.
        wait_for(
            lambda: _answer(scorer)["model_version"] == b.model_version,
            timeout=20,
            what="b served from the topic",
        )
        publish_events(topics, [model_event("PAUSED", b.model_version)])
        wait_for(
            lambda: _answer(scorer)["model_version"] == a.model_version,
            timeout=10,
            what="the PAUSED of b applied",
        )
        publish_events(topics, [model_event("PAUSED", a.model_version)])
        wait_for(
            lambda: _answer(scorer)["fallback_reason"] == "paused", timeout=10, what="the PAUSED of a applied"
        )
        assert scorer.http.get("/healthz").status_code == 200  # the models feed is alive
        assert scorer.metric_sum("pooch_model_cache_entries_rejected_total", service="scorer") == 1
        assert "malformed Redis model cache entry skipped" in scorer.log_tail(200_000)
        # The poisoned entry was replaced by the record's artifact (write-back after the sync).
        wait_for(
            lambda: cache.load_text(a.model_version) == a.model_text(),
            timeout=10,
            what="the cache repaired",
        )
    finally:
        assert scorer.stop() == 0
        client.close()
