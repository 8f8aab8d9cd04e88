"""A real scorer process against a poisoned Redis: malformed model-cache entries and online-view
values never blind it (issue 11, item 2)."""

from __future__ import annotations

import json

import pytest
import redis

from libs.common.artifacts import ModelCache
from libs.common.features.online_view import OnlineView
from libs.common.features.state import DogState, Stats
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


@pytest.mark.parametrize(
    "overall",
    [
        b"[1, 2]",  # JSON, not an object
        b'{"n": "many", "likes": 3}',  # an object with a string count
        b'"9000"',  # a JSON string
        b"{not json",
        b'{"n": 10, "likes": NaN}',  # Python's json reads NaN
    ],
)
def test_malformed_online_view_values_are_treated_as_missing(topics, tmp_path, models, overall):
    client = redis.Redis.from_url(topics.redis_url)
    view = OnlineView(client, topics.topic_prefix)
    view.write(
        {"dog-00001": DogState(posts=12, last_posted_at=1_794_990_000_000, matured=Stats(10, 230.0))},
        {"v1": {"adorable": Stats(50, 900.0)}},
        Stats(1000, 9000.0),
        1_794_999_000_000,
    )
    client.set(f"{view.prefix}overall", overall)
    client.set(view.dog_key("dog-bad"), b'{"posts": "twelve", "matured": []}')
    client.set(view.tag_key("v1", "puppy"), b"[]")
    publish_events(topics, [models["a"].to_event()])
    # The deadline is not under test here: a slow first read on a loaded machine must not turn
    # "unavailable" into "timeout".
    scorer = ScorerProcess(
        topics, tmp_path, role="whatif", registry_sync_timeout_s=10, whatif_deadline_ms=2000
    ).wait_ready()
    try:
        for draft in (DRAFT, DRAFT | {"dog_id": "dog-bad"}):
            row = _answer(scorer, draft)
            assert row["state"] == "unavailable"  # overall missing: defaults, flagged
            assert row["model_version"] == models["a"].model_version and row["predicted_likes"] >= 0
        client.set(f"{view.prefix}overall", json.dumps(Stats(1000, 9000.0).to_dict()))
        assert _answer(scorer)["state"] == "online"
        assert _answer(scorer, DRAFT | {"dog_id": "dog-bad"})["state"] == "dog_unknown"
        invalid = {
            kind: scorer.metric_sum("pooch_scorer_whatif_view_invalid_total", kind=kind)
            for kind in ("overall", "dog", "tag")
        }
        assert invalid == {"overall": 2, "dog": 2, "tag": 4}
    finally:
        assert scorer.stop() == 0
        client.close()
