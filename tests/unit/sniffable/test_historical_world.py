"""The historical world's answer: drafts ranked by the past average likes of their hashtags.

The scorer serves it on the ``baseline`` arm of the what-if API; it must tell two drafts of one
dog apart (a control that cannot would make the experiment trivial).
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from libs.common.features.extractors import extractor
from libs.common.features.state import DogState, StateView, Stats
from libs.common.health import Probes
from services.scorer.fixtures import make_artifact, train_model_text
from services.scorer.http_api import create_app
from services.scorer.registry import Registry
from services.scorer.routing import Router
from services.scorer.settings import ScorerSettings
from services.scorer.whatif import WhatIf, historical_likes
from tooling.stack.processes import free_port


def _stats(n: int, likes: float) -> Stats:
    return Stats(n=n, likes=likes)


def _state() -> StateView:
    dog = DogState(posts=4, matured=_stats(4, 80.0))  # the dog's own level: 20 likes
    tags = {"adorable": _stats(100, 4000.0), "like4like": _stats(50, 500.0), "dog": _stats(200, 5000.0)}
    return StateView(dog, tags, _stats(1000, 25_000.0))  # everyone: 25 likes


def test_the_historical_predictor_ranks_drafts_by_their_hashtags_past_likes():
    ext = extractor("v1")
    st = _state()
    good = historical_likes(ext, {"hashtags": ["#adorable"]}, st)
    spam = historical_likes(ext, {"hashtags": ["#like4like", "#dog"]}, st)
    unknown = historical_likes(ext, {"hashtags": ["#neverseen"]}, st)
    assert good == pytest.approx(20.0 * 40 / 25)
    assert spam == pytest.approx(20.0 * ((10 + 25) / 2) / 25)
    assert unknown == pytest.approx(20.0) == ext.baseline(st)
    assert good > unknown > spam


def test_nothing_known_yet_gives_the_plain_baseline():
    ext = extractor("v1")
    empty = StateView(DogState(), {}, Stats(), degraded=True)
    assert historical_likes(ext, {"hashtags": ["#adorable"]}, empty) == 0.0


@pytest.fixture
def baseline_world_client():
    settings = ScorerSettings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0", arm_weights={"champion": 0.5, "baseline": 0.5}
    )
    registry = Registry(settings)
    registry.apply(make_artifact(train_model_text(rounds=10, seed=2)).to_event())
    registry.rebuild(synced=True)
    probes = Probes("scorer")
    probes.ready("models_loaded", lambda: True)
    app = create_app(WhatIf(settings, registry, Router(settings.routing_salt)), registry, probes)
    with TestClient(app) as c:
        yield c


def test_the_api_names_each_dogs_world_the_same_way_as_the_stream_routes_it(baseline_world_client):
    settings = ScorerSettings(arm_weights={"champion": 0.5, "baseline": 0.5})
    router = Router(settings.routing_salt)
    from services.scorer.routing import Weights

    weights = Weights.of(settings.arm_weights)
    seen = set()
    for i in range(40):
        dog = f"dog_{i:015x}"
        body = {
            "candidates": [
                {
                    "dog_id": dog,
                    "hashtags": ["#a"],
                    "dog": {"breed": "Pug", "size": "SMALL"},
                    "dog_followers": 9,
                },
                {
                    "dog_id": dog,
                    "hashtags": ["#b"],
                    "dog": {"breed": "Pug", "size": "SMALL"},
                    "dog_followers": 9,
                },
            ]
        }
        r = baseline_world_client.post("/v1/predict", json=body).json()
        arms = {p["arm"] for p in r["predictions"]}
        assert arms == {router.arm(dog, weights)}
        predictor = {p["predictor"] for p in r["predictions"]}
        assert predictor == ({"historical"} if arms == {"baseline"} else {"model"})
        seen |= arms
    assert seen == {"champion", "baseline"}
