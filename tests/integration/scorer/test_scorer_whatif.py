"""The what-if API of a real scorer process: features from the pure extractors and the Redis online
view, the same numbers a local computation gives; 422 for invalid drafts; answers with Redis
stopped."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
import redis

from libs.common.features.extractors import extractor
from libs.common.features.online_view import OnlineView
from libs.common.features.state import DogState, Stats
from services.scorer.fixtures import make_artifact, publish_events, train_model_text
from tests.support.kafkautil import wait_for
from tests.support.scorer import ScorerProcess

DRAFT = {
    "dog_id": "dog-00001",
    "posted_at": 1_795_000_000_000,
    "hashtags": ["#Adorable", "#puppy", "#newtag"],
    "caption": "look at him",
    "photo_filter": "sepia",
    "dog": {"breed": "Beagle", "size": "MEDIUM", "age_months": 14},
    "dog_followers": 1200,
    "country": "US",
}


def _expected(text: str, view: OnlineView, draft: dict) -> tuple[float, float]:
    ext = extractor("v1")
    state = view.read(draft | {"pupdate_id": ""}, ext)
    assert not state.degraded
    x = np.asarray([ext.extract(draft, state)])
    return float(lgb.Booster(model_str=text).predict(x)[0]), ext.baseline(state)


def test_whatif_uses_the_online_view_rejects_bad_drafts_and_survives_redis_stopping(topics, tmp_path, online):
    text = train_model_text(rounds=30, seed=5)
    art = make_artifact(text)
    publish_events(topics, [art.to_event()])
    view = OnlineView(redis.Redis.from_url(online.url), topics.topic_prefix)
    dog = DogState(posts=12, last_posted_at=1_794_990_000_000, matured=Stats(10, 230.0))
    view.write(
        {"dog-00001": dog},
        {"v1": {"adorable": Stats(50, 900.0), "puppy": Stats(20, 100.0)}},
        Stats(1000, 9000.0),
        1_794_999_000_000,
    )
    # The deadline is not under test here (tests/unit/scorer/test_scorer_whatif.py is): a slow
    # read on a loaded machine must not turn a state into "timeout".
    scorer = ScorerProcess(
        topics, tmp_path, redis_url=online.url, role="whatif", whatif_deadline_ms=2000
    ).wait_ready()
    try:
        r = scorer.http.post("/v1/predict", json={"draft": DRAFT})
        assert r.status_code == 200, r.text
        (p,) = r.json()["predictions"]
        want, baseline = _expected(text, view, DRAFT)
        assert p["state"] == "online"
        assert p["model_version"] == art.model_version and not p["fallback"]
        assert p["predicted_likes"] == pytest.approx(want, rel=1e-12)
        assert p["baseline"] == pytest.approx(baseline) == 23.0
        # The compiled trees take over in the background (issue 15) and answer the same.
        wait_for(
            lambda: scorer.http.get("/v1/models").json()["predictors"].get(art.model_version) == "native",
            timeout=60,
            what="the compiled predictor serving",
        )
        again = scorer.http.post("/v1/predict", json={"draft": DRAFT}).json()["predictions"][0]
        assert again["predicted_likes"] == pytest.approx(want, rel=1e-9)
        assert scorer.metric_sum("pooch_scorer_model_compiles_total") >= 1

        # Candidates: the other dog is unknown to the view (defaults, flagged); best first.
        candidates = [DRAFT, DRAFT | {"hashtags": []}, DRAFT | {"dog_id": "dog-new"}]
        r = scorer.http.post("/v1/predict", json={"candidates": candidates})
        body = r.json()
        assert r.status_code == 200, r.text
        likes = [c["predicted_likes"] for c in body["predictions"]]
        assert likes == sorted(likes, reverse=True)
        states = {c["index"]: c["state"] for c in body["predictions"]}
        assert states == {0: "online", 1: "online", 2: "dog_unknown"}

        r = scorer.http.post("/v1/predict", json={"draft": DRAFT | {"dog_followers": -5}})
        assert r.status_code == 422 and "dog_followers" in r.json()["reason"]

        online.stop()  # Redis stopped: still answered, by the model on default state, flagged
        for _ in range(3):
            r = scorer.http.post("/v1/predict", json={"candidates": candidates})
            assert r.status_code == 200, r.text
            assert {c["state"] for c in r.json()["predictions"]} == {"unavailable"}
            assert all(c["predicted_likes"] >= 0 for c in r.json()["predictions"])
        assert scorer.http.get("/readyz").status_code == 200
        degraded = scorer.metric_sum("pooch_scorer_whatif_state_degraded_total", reason="unavailable")
        assert degraded >= 9
        assert scorer.metric_sum("pooch_scorer_whatif_requests_total", outcome="invalid") == 1
    finally:
        assert scorer.stop() == 0
