"""Early stopping read from a loss curve (the Dask engine's way) picks LightGBM's own round."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from services.trainer.synthetic import NAMES, SyntheticWorld
from services.trainer.train import TrainParams, count_loss, loss_curve, rounds_from_curve


def test_rounds_from_curve_follows_the_callbacks_rule():
    # best so far, strictly lower wins; stop after `stopping_rounds` rounds without a new best
    assert rounds_from_curve(np.array([5.0, 4.0, 4.0, 4.5, 4.2, 3.0]), 3) == 2
    assert rounds_from_curve(np.array([5.0, 4.0, 4.0, 4.5, 4.2, 3.0]), 4) == 6
    assert rounds_from_curve(np.array([3.0, 2.0, 1.0]), 30) == 3
    assert rounds_from_curve(np.array([]), 5) == 0


@pytest.mark.parametrize("objective", ["poisson", "tweedie"])
def test_the_curve_picks_the_round_lightgbm_early_stopping_picks(objective):
    world = SyntheticWorld(seed=3, dogs=300)
    X, y, _baseline, _posted = world.arrays(3000)
    X_es, y_es, _b, _p = world.arrays(600, regime=1)  # drift: the curve turns up, it must stop
    p = TrainParams(objective=objective, num_boost_round=200, learning_rate=0.2, early_stopping_rounds=10)
    params = p.lgb_params()
    train_set = lgb.Dataset(X, label=y, feature_name=list(NAMES), free_raw_data=False)
    es_set = lgb.Dataset(X_es, label=y_es, reference=train_set)
    stopped = lgb.train(
        params | {"metric": objective},
        train_set,
        num_boost_round=p.num_boost_round,
        valid_sets=[es_set],
        callbacks=[lgb.early_stopping(p.early_stopping_rounds, first_metric_only=True, verbose=False)],
    )
    assert 0 < stopped.best_iteration < p.num_boost_round, "the case must really stop early"
    full = lgb.train(params, train_set, num_boost_round=p.num_boost_round)
    curve = loss_curve(full.model_to_string(), X_es, y_es, p)
    assert len(curve) == p.num_boost_round
    assert rounds_from_curve(curve, p.early_stopping_rounds) == stopped.best_iteration
    # the loss is LightGBM's metric, value for value
    best = stopped.best_score["valid_0"][objective]
    assert curve[stopped.best_iteration - 1] == pytest.approx(best, rel=1e-6)
    assert count_loss(y_es, full.predict(X_es, num_iteration=stopped.best_iteration), p) == pytest.approx(
        best, rel=1e-6
    )
