"""Training runs as pure functions: time split, count objective, metrics, publish decisions."""

from __future__ import annotations

import math

import lightgbm as lgb
import numpy as np
import pytest

from services.trainer.synthetic import NAMES, SyntheticWorld, probe_set
from services.trainer.train import (
    Champion,
    NotEnoughData,
    TrainParams,
    compare,
    decide,
    poisson_deviance,
    predict,
    prediction_quantiles,
    time_split,
    train,
)
from services.trainer.window import Windows

CATS = ("breed", "photo_filter", "country")
FAST = TrainParams(num_boost_round=120, learning_rate=0.1, num_threads=1, min_validation_rows=50)


def snapshot(world: SyntheticWorld, batches: list[tuple[int, int]], max_count: int = 100_000):
    ws = Windows(max_count=max_count, max_age_ms=10**13, categorical_of={"v1": CATS})
    i = 0
    for n, regime in batches:
        for r in world.instances(n, regime):
            ws.add(r, i % 3, i)
            i += 1
    return ws["v1"].snapshot()


@pytest.fixture(scope="module")
def world_snap():
    return snapshot(SyntheticWorld(seed=5, dogs=400), [(3000, 0)])


def test_time_split_validates_on_the_newest_rows():
    s = time_split(1000, TrainParams(validation_fraction=0.2, early_stopping_fraction=0.1))
    assert (s.train_end, s.n) == (800, 1000)
    assert s.fit_end == 720
    assert time_split(100, TrainParams(min_validation_rows=50)).train_end == 50
    with pytest.raises(NotEnoughData):
        time_split(60, TrainParams(min_validation_rows=50))


def test_poisson_deviance_matches_its_definition():
    y, mu = np.array([0.0, 1.0, 4.0]), np.array([0.5, 1.0, 2.0])
    expected = np.mean(2 * np.array([0 - (0 - 0.5), 1 * math.log(1) - 0, 4 * math.log(2) - 2]))
    assert poisson_deviance(y, mu) == pytest.approx(expected)
    assert poisson_deviance(y, y) == pytest.approx(0.0, abs=1e-8)
    assert math.isfinite(poisson_deviance(np.array([3.0]), np.array([0.0])))


def test_a_model_is_learned_beats_the_baseline_and_is_never_negative(world_snap):
    cand = train(world_snap, FAST)
    assert cand.decision.publish, cand.decision.reason
    mt = cand.metrics
    assert mt["validation_rows"] == 600
    ratio = mt["poisson_deviance"] / mt["baseline_poisson_deviance"]
    assert mt["improvement_vs_baseline"] == pytest.approx(1 - ratio)
    assert mt["improvement_vs_baseline"] >= FAST.margin_vs_baseline
    assert "beats the baseline" in cand.decision.reason
    # the validation slice is the newest: it starts where training ends
    assert int(cand.params["data.validation_posted_at_min"]) == int(world_snap.rows.posted_at[2400])
    assert cand.params["data.validation_rows"] == "600"
    extreme = probe_set(200) * np.where(np.arange(len(NAMES)) == NAMES.index("log_followers"), -50.0, 1.0)
    assert np.all(predict(cand.model_text, extreme) > 0), "a count model's predictions are positive"
    assert len(cand.validation_quantiles) == 21
    assert cand.validation_quantiles == sorted(cand.validation_quantiles)
    assert set(cand.feature_importance) == set(NAMES)
    assert cand.feature_importance["log_followers"] > 0


def test_training_is_deterministic(world_snap):
    assert train(world_snap, FAST).model_text == train(world_snap, FAST).model_text


def test_categoricals_are_categories_in_the_model(world_snap):
    text = train(world_snap, FAST).model_text
    booster = lgb.Booster(model_str=text)
    cat_idx = [NAMES.index(c) for c in CATS]
    assert f"[categorical_feature: {','.join(map(str, cat_idx))}]" in text
    assert booster.feature_name() == list(NAMES)
    assert "objective=poisson" in text
    assert "pickle" not in text


def test_tweedie_objective_also_counts(world_snap):
    cand = train(world_snap, TrainParams(objective="tweedie", num_boost_round=60, num_threads=1))
    assert "objective=tweedie" in cand.model_text
    assert cand.params["lgb.objective"] == "tweedie"
    assert np.all(predict(cand.model_text, probe_set()) > 0)


def test_other_objectives_are_refused():
    with pytest.raises(ValueError, match="count model"):
        TrainParams(objective="regression").lgb_params()


def test_a_newer_model_beats_an_older_champion_after_drift():
    world = SyntheticWorld(seed=7, dogs=2000)
    old = train(snapshot(world, [(1500, 0)]), FAST)
    world2 = SyntheticWorld(seed=7, dogs=2000)
    snap = snapshot(world2, [(1500, 0), (1500, 1)])
    champion = Champion("v1-old", old.model_text, NAMES)
    new = train(snap, FAST, champion=champion)
    assert new.champion_version == "v1-old"
    assert new.metrics["improvement_vs_champion"] > 0.05
    assert new.decision.publish, new.decision.reason
    assert new.params["champion.model_version"] == "v1-old"
    assert not np.allclose(predict(old.model_text, probe_set()), predict(new.model_text, probe_set()))


def test_the_champion_is_ignored_when_its_features_differ(world_snap):
    other = Champion("v1-other", train(world_snap, FAST).model_text, ("a", "b"))
    cand = train(world_snap, FAST, champion=other)
    assert cand.champion_version is None
    assert cand.notes and "not comparable" in cand.notes[0]


def _metrics(model: float, baseline: float, champion: float | None = None) -> dict:
    y = np.array([1.0, 2.0, 3.0])
    out = compare(y, y * 0 + 2, y * 0 + 2, None if champion is None else y * 0 + 2)
    out |= {"validation_rows": 3.0, "poisson_deviance": model, "baseline_poisson_deviance": baseline}
    out["improvement_vs_baseline_poisson_deviance"] = 1 - model / baseline
    if champion is not None:
        out["champion_poisson_deviance"] = champion
        out["improvement_vs_champion_poisson_deviance"] = 1 - model / champion
    return out


@pytest.mark.parametrize(
    ("model", "baseline", "champion", "publish"),
    [
        (0.90, 1.0, None, True),  # 10% better than the baseline, no champion
        (0.99, 1.0, None, False),  # 1% better: under the 2% margin
        (1.10, 1.0, None, False),
        (0.90, 1.0, 0.95, True),
        (0.90, 1.0, 0.89, False),  # beats the baseline, loses to the champion
        (0.90, 1.0, 0.90, True),  # margin 0 vs the champion: a tie is enough
    ],
)
def test_publish_decision(model, baseline, champion, publish):
    p = TrainParams(margin_vs_baseline=0.02, margin_vs_champion=0.0)
    d = decide(_metrics(model, baseline, champion), p, has_champion=champion is not None)
    assert d.publish is publish, d.reason


def test_invalid_predictions_are_never_published():
    d = decide(_metrics(0.5, 1.0), TrainParams(), has_champion=False, predictions_valid=False)
    assert not d.publish and "invalid" in d.reason


def test_quantiles():
    q = prediction_quantiles(np.arange(101.0), 21)
    assert len(q) == 21 and q[0] == 0 and q[-1] == 100 and q[10] == 50
