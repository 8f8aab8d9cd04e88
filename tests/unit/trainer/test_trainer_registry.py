"""The trainer's view of the models topic: verified versions and the champion to beat."""

from __future__ import annotations

import functools
import hashlib
import logging

import lightgbm as lgb
import numpy as np

from libs.common.artifacts import ModelArtifact, build_artifact
from services.trainer.registry import Registry


@functools.cache
def model(tag: str) -> str:
    """A real one-feature LightGBM text, the same for the same tag and different across tags."""
    rng = np.random.default_rng(int(hashlib.sha256(tag.encode()).hexdigest()[:8], 16))
    x = rng.normal(size=(200, 1))
    params = {"objective": "regression", "verbosity": -1, "num_threads": 1, "min_data_in_leaf": 5}
    return lgb.train(
        params, lgb.Dataset(x, x[:, 0] * 3 + rng.normal(size=200), feature_name=["a"]), 3
    ).model_to_string()


def published(tag: str, ev: str = "v1") -> dict:
    return build_artifact(model(tag), extractor_version=ev, feature_names=["a"]).to_event()


def event(kind: str, version: str, **extra) -> dict:
    return {"kind": kind, "model_version": version, "event_id": f"{kind}:{version}"} | extra


def test_the_newest_published_is_the_champion_until_one_is_activated():
    r = Registry()
    a, b, c = (r.apply(published(t)) for t in ("model a", "model b", "model c"))
    assert None not in (a, b, c) and len({a, b, c}) == 3
    assert r.champion_version("v1") == c
    r.apply(event("ACTIVATED", a, extractor_version="v1", arm="champion"))
    assert r.champion_version("v1") == a
    r.apply(event("ACTIVATED", b, extractor_version="v1", arm="challenger"))
    assert r.champion_version("v1") == a
    r.apply(event("PAUSED", a))
    assert r.champion_version("v1") == c
    r.apply(event("RETIRED", c))
    assert r.champion_version("v1") == b
    r.apply(event("RESUMED", a))
    assert r.champion_version("v1") == a
    assert r.champion_version("v2") is None


def test_extractor_versions_have_their_own_champions():
    r = Registry()
    v1 = r.apply(published("same text", "v1"))
    v2 = r.apply(published("same text", "v2"))
    assert v1 != v2
    assert (r.champion_version("v1"), r.champion_version("v2")) == (v1, v2)
    art, text = r.champion_text("v2")
    assert art.model_version == v2 and text == model("same text")


def test_a_tampered_publication_is_refused_and_never_champion(caplog):
    r = Registry()
    good = r.apply(published("good model"))
    bad = published("evil model") | {"artifact": published("other model")["artifact"]}
    with caplog.at_level(logging.ERROR):
        assert r.apply(bad) is None
    assert bad["model_version"] in r.refused
    assert r.champion_version("v1") == good
    assert any("REFUSED" in rec.getMessage() for rec in caplog.records)


def test_republishing_a_version_is_idempotent():
    r = Registry()
    e = published("model")
    assert r.apply(e) == r.apply(e)
    assert r.order["v1"] == [e["model_version"]]


def test_old_texts_are_evicted_but_the_champion_stays_usable():
    r = Registry(keep_artifacts=2)
    events = [published(f"model {i}") for i in range(5)]
    cache = {e["model_version"]: ModelArtifact.from_event(e) for e in events}  # the Redis model cache
    r.fetch = cache.get
    versions = [r.apply(e) for e in events]
    r.apply(event("ACTIVATED", versions[0], extractor_version="v1"))
    assert versions[0] not in r.texts  # evicted before it was activated
    art, text = r.champion_text("v1")  # fetched back from the cache and verified again
    assert (art.model_version, text) == (versions[0], model("model 0"))
    r.apply(published("model 5"))
    assert versions[0] in r.texts, "the champion's text is kept"
    assert versions[1] not in r.texts


def test_a_version_lightgbm_cannot_use_is_refused_like_the_scorer_refuses_it(caplog):
    # An intact artifact (its sha256 matches) of a text that is no LightGBM model: before one
    # loading rule, the trainer took it as its champion and every comparison raised after.
    r = Registry()
    good = r.apply(published("good model"))
    broken = build_artifact("tree\nversion=v4\nnot a model\n", extractor_version="v1", feature_names=["a"])
    with caplog.at_level(logging.ERROR):
        assert r.apply(broken.to_event()) is None
    assert (
        broken.model_version in r.refused and "not a LightGBM text model" in r.refused[broken.model_version]
    )
    assert r.champion_version("v1") == good
    assert any("LightGBM cannot use it" in rec.getMessage() for rec in caplog.records)


def test_only_the_newest_artifacts_stay_in_memory_and_an_evicted_champion_is_fetched_back():
    arts = [
        build_artifact(model(f"model {i}"), extractor_version="v1", feature_names=["a"]) for i in range(10)
    ]
    cache = {a.model_version: a for a in arts}  # what the Redis model cache holds
    r = Registry(keep_artifacts=2)
    r.fetch = cache.get
    for a in arts:
        r.apply(a.to_event())
    versions = [a.model_version for a in arts]
    assert {v for v, a in r.published.items() if a.artifact} == set(versions[-2:])
    assert set(r.texts) == set(versions[-2:]) and r.evicted == set(versions[:-2])
    r.apply(event("ACTIVATED", versions[3], extractor_version="v1", arm="champion"))
    art, text = r.champion_text("v1")
    assert art.model_version == versions[3] and text == model("model 3")
    assert versions[3] not in r.evicted
    cache.pop(versions[4])
    r.apply(event("ACTIVATED", versions[4], extractor_version="v1", arm="champion"))
    assert r.champion_text("v1") is None  # gone everywhere: compared with the baseline only
