"""Which model serves: the selection rule, statuses, activations, weights and refused artifacts."""

from __future__ import annotations

import dataclasses

import pytest

from services.scorer.catalog import Catalog
from services.scorer.fixtures import make_artifact, model_event, train_model_text
from services.scorer.registry import Registry
from services.scorer.settings import ScorerSettings


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [train_model_text(rounds=5, seed=s) for s in range(4)]


@pytest.fixture(scope="module")
def bad_text() -> str:
    return train_model_text(rounds=5, n_features=5)  # its trees expect 5 features, records carry 19


def _published(texts, ev="v1"):
    return [make_artifact(t, extractor_version=ev, created_at=1000 + i) for i, t in enumerate(texts)]


def _catalog(*arts) -> Catalog:
    cat = Catalog()
    for a in arts:
        assert cat.apply(a.to_event())
    return cat


def test_newest_published_serves_until_an_activation(texts):
    a, b, c = _published(texts[:3])
    cat = _catalog(a, b)
    assert cat.champion("v1") == b.model_version
    cat.apply(model_event("ACTIVATED", a.model_version, arm="champion"))
    cat.apply(c.to_event())
    assert cat.champion("v1") == a.model_version  # activated beats newer published


def test_pause_hands_over_to_the_last_good_version_and_resume_takes_it_back(texts):
    a, b = _published(texts[:2])
    cat = _catalog(a, b)
    assert cat.apply(model_event("PAUSED", b.model_version))
    assert cat.champion("v1") == a.model_version
    assert cat.apply(model_event("PAUSED", a.model_version))
    assert cat.champion("v1") is None
    assert cat.reason_without_model("v1") == "paused"
    assert cat.apply(model_event("RESUMED", b.model_version))
    assert cat.champion("v1") == b.model_version


def test_retired_never_serves_again(texts):
    (a,) = _published(texts[:1])
    cat = _catalog(a)
    cat.apply(model_event("RETIRED", a.model_version))
    cat.apply(model_event("RESUMED", a.model_version))
    assert cat.champion("v1") is None
    assert cat.reason_without_model("v1") == "no_model"


def test_reasons_without_a_model(texts):
    assert Catalog().reason_without_model("v1") == "no_model"
    cat = _catalog(*_published(texts[:1], ev="v2"))
    assert cat.reason_without_model("v1") == "extractor_mismatch"
    assert cat.reason_without_model("v9") == "extractor_mismatch"


def test_challenger_and_promotion_and_weights(texts):
    a, b = _published(texts[:2])
    cat = _catalog(a, b)
    cat.apply(model_event("ACTIVATED", a.model_version, arm="champion"))
    cat.apply(
        model_event(
            "ACTIVATED", b.model_version, arm="challenger", arm_weights={"champion": 0.8, "challenger": 0.2}
        )
    )
    assert (cat.champion("v1"), cat.challenger("v1")) == (a.model_version, b.model_version)
    assert cat.weights == {"champion": 0.8, "challenger": 0.2, "baseline": 0.0}
    cat.apply(model_event("ACTIVATED", b.model_version, arm="champion", arm_weights={"champion": 1}))
    assert (cat.champion("v1"), cat.challenger("v1")) == (b.model_version, None)
    assert cat.weights == {"champion": 1.0, "challenger": 0.0, "baseline": 0.0}
    # invalid weights are ignored, the activation still applies
    cat.apply(model_event("ACTIVATED", a.model_version, arm="challenger", arm_weights={"champion": -1}))
    assert cat.weights == {"champion": 1.0, "challenger": 0.0, "baseline": 0.0}
    assert cat.challenger("v1") == a.model_version


def test_each_event_is_applied_once(texts):
    a, b = _published(texts[:2])
    cat = _catalog(a, b)
    pause = model_event("PAUSED", b.model_version)
    assert cat.apply(pause)
    assert cat.apply(model_event("RESUMED", b.model_version))
    assert not cat.apply(pause)  # a re-sent decision does not pause it again
    assert cat.champion("v1") == b.model_version


def test_redis_seeded_versions_the_topic_never_had_are_dropped(texts):
    a, b = _published(texts[:2])
    cat = Catalog()
    cat.publish(b, source="redis")
    cat.publish(a, source="redis")
    assert cat.order["v1"] == [a.model_version, b.model_version]  # by created_at
    cat.apply(a.to_event())
    assert cat.forget_unconfirmed() == [b.model_version]
    assert cat.champion("v1") == a.model_version


def test_the_topic_order_wins_over_the_cache_order(texts):
    a, b = _published(texts[:2])
    cat = Catalog()
    cat.publish(b, source="redis")
    cat.apply(a.to_event())
    cat.apply(b.to_event())  # b was published after a: it serves
    assert cat.order["v1"] == [a.model_version, b.model_version]
    assert cat.champion("v1") == b.model_version


# -- the registry: loading, refusing, snapshots ----------------------------------------------


def _registry(**kw) -> Registry:
    return Registry(ScorerSettings(**kw))


def test_snapshot_swap_keeps_old_snapshots_intact(texts):
    a, b = _published(texts[:2])
    reg = _registry()
    reg.apply(a.to_event())
    first = reg.rebuild(synced=True)
    assert first.resolve("v1", "champion")[1].version == a.model_version
    reg.apply(b.to_event())
    second = reg.rebuild()
    assert second.generation == first.generation + 1
    assert second.resolve("v1", "champion")[1].version == b.model_version
    assert first.resolve("v1", "champion")[1].version == a.model_version  # immutable
    with pytest.raises(dataclasses.FrozenInstanceError):
        second.generation = 0  # type: ignore[misc]


def test_a_model_that_cannot_predict_is_refused_and_the_last_good_one_serves(texts, bad_text):
    (good,) = _published(texts[:1])
    bad = make_artifact(bad_text, created_at=5000)
    reg = _registry()
    reg.apply(good.to_event())
    reg.apply(bad.to_event())
    snap = reg.rebuild(synced=True)
    assert snap.resolve("v1", "champion")[1].version == good.model_version
    assert snap.statuses[bad.model_version] == "refused"
    assert reg.catalog.refused[bad.model_version] == "unloadable"


def test_without_the_probe_the_bad_model_serves_and_predict_is_contained_later(bad_text):
    bad = make_artifact(bad_text)
    reg = _registry(probe_on_load=False)
    reg.apply(bad.to_event())
    assert reg.rebuild().resolve("v1", "champion")[1].version == bad.model_version


def test_a_tampered_artifact_is_refused(texts):
    a, b = _published(texts[:2])
    tampered = dataclasses.replace(b, artifact=a.artifact)  # b's address, a's bytes
    reg = _registry()
    reg.apply(a.to_event())
    reg.apply(tampered.to_event())
    snap = reg.rebuild()
    assert snap.resolve("v1", "champion")[1].version == a.model_version
    assert reg.catalog.refused[b.model_version] == "artifact_integrity"


def test_resolve_folds_a_missing_challenger_into_the_champion(texts):
    (a,) = _published(texts[:1])
    reg = _registry(arm_weights={"champion": 0.5, "challenger": 0.5})
    reg.apply(a.to_event())
    snap = reg.rebuild()
    assert snap.resolve("v1", "challenger")[:2] == ("champion", snap.serving["v1"]["champion"])
    assert snap.resolve("v1", "baseline") == ("baseline", None, None)
    assert snap.resolve("v2", "champion") == ("champion", None, "extractor_mismatch")


def test_loaded_models_are_evicted_beyond_the_limit(texts):
    reg = _registry(loaded_models_kept=1)
    for art in _published(texts):
        reg.apply(art.to_event())
        reg.rebuild()
    assert len(reg.loaded) == 2  # the serving one and one spare


@pytest.fixture(scope="module")
def many_texts() -> list[str]:
    return [train_model_text(rounds=3, seed=100 + s) for s in range(8)]


def test_only_the_newest_artifacts_are_kept_and_an_evicted_one_comes_back_from_the_cache(many_texts):
    arts = _published(many_texts)
    versions = [a.model_version for a in arts]
    reg = _registry(artifacts_kept=2, loaded_models_kept=1)
    cache = {a.model_version: a for a in arts}  # what the Redis model cache holds
    fetched: list[str] = []
    reg.fetch = lambda v: fetched.append(v) or cache.get(v)
    reg.apply(arts[0].to_event())
    reg.apply(model_event("ACTIVATED", versions[0], arm="champion"))
    for a in arts[1:]:
        reg.apply(a.to_event())
        reg.rebuild(synced=True)
    reg.apply(model_event("RETIRED", versions[-1]))
    with_bytes = {v for v, a in reg.catalog.artifacts.items() if a.artifact}
    # the activated champion and the newest not retired (the one before it went when 7 came,
    # and an evicted artifact is only fetched back when it is selected)
    assert with_bytes == {versions[0], versions[6]}
    assert reg.catalog.evicted == set(versions) - with_bytes
    assert len(reg.loaded) <= 1 + 1  # serving + loaded_models_kept

    # Everything newer paused and the champion retired: an evicted version serves again.
    reg.apply(model_event("RETIRED", versions[0]))
    for v in versions[4:7]:
        reg.apply(model_event("PAUSED", v))
    snap = reg.rebuild()
    assert snap.resolve("v1", "champion")[1].version == versions[3]
    assert fetched == [versions[3]]
    assert versions[-1] not in reg.loaded and versions[0] not in reg.loaded  # retired: dropped

    # Not in the cache either: refused, and the next one down serves.
    cache.pop(versions[2])
    reg.apply(model_event("PAUSED", versions[3]))
    assert reg.rebuild().resolve("v1", "champion")[1].version == versions[1]
    assert reg.catalog.refused[versions[2]] == "artifact_evicted"
