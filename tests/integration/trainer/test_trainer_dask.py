"""The trainer's Dask engine (lightgbm.dask on a LocalCluster of two worker processes).

* The distributed model is as good on validation as the single-process one, same window.
* The trainer service with ``POOCH_TRAINER_ENGINE=dask`` publishes a model the scorer loads.

Tolerance: the distributed model's validation Poisson deviance is at most 1 % (relative) above
the local model's. Data-parallel LightGBM is not bit-identical to one process (each worker proposes
bin boundaries from its own rows; histogram sums are added in another order), so equality is
not the claim. 1 % is half the trainer's publish margin over the baseline (2 %): a difference
below it cannot turn a clear win into a loss. It is well above the gap measured on this kind of
window: on seeds 1, 2 and 4 the distributed model was 0.37 %, 0.82 % and 0.31 % *better* (at
143, 150 and 125 rounds, the local one at 125, 139 and 98: two slightly different models' curves reach
their minimum at different rounds, so the round counts are not compared). Defects the deviance
alone might miss are asserted directly: both LightGBM machines took part, and every training
parameter reached the workers under its own name.
Durations: ~15 s for the comparison (the cluster's start included), ~30 s for the service.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from libs.common.artifacts import build_artifact
from libs.common.features.extractors import CATEGORICAL
from services.trainer.distributed import DaskFitter, DaskOptions
from services.trainer.synthetic import NAMES, SyntheticWorld, probe_set
from services.trainer.train import TrainParams, predict, train
from services.trainer.window import Windows
from tests.support.trainer import TrainerProc, feed, wait_published

TOLERANCE = 0.01
PARAMS = TrainParams(num_boost_round=150, learning_rate=0.1, num_threads=1, min_validation_rows=50)


def _snapshot(n: int, seed: int):
    ws = Windows(max_count=10**6, max_age_ms=10**13, categorical_of={"v1": CATEGORICAL})
    for i, r in enumerate(SyntheticWorld(seed=seed, dogs=800).instances(n)):
        ws.add(r, i % 3, i)
    return ws["v1"].snapshot()


def _lgb_params(model_text: str) -> dict[str, str]:
    return dict(re.findall(r"^\[(\w+): (.*)\]$", model_text, flags=re.M))


@pytest.fixture(scope="module")
def dask_fitter():
    fitter = DaskFitter(DaskOptions(workers=2, threads_per_worker=1))
    yield fitter
    fitter.close()


def test_the_distributed_model_is_as_good_on_validation_as_the_local_one(dask_fitter):
    snap = _snapshot(20_000, seed=4)
    local = train(snap, PARAMS)
    dist = train(snap, PARAMS, fitter=dask_fitter)

    # It really ran on two machines of LightGBM's network, data-parallel.
    lp, dp = _lgb_params(local.model_text), _lgb_params(dist.model_text)
    assert dp["num_machines"] == "2" and dp["tree_learner"] == "data"
    assert lp["num_machines"] == "1" and lp["tree_learner"] == "serial"
    # The trainer's parameters reached the workers under their own names.
    for key in (
        "objective",
        "learning_rate",
        "num_leaves",
        "min_data_in_leaf",
        "feature_fraction",
        "lambda_l2",
        "max_bin",
        "seed",
        "deterministic",
        "max_cat_to_onehot",
        "cat_smooth",
        "categorical_feature",
    ):
        assert dp[key] == lp[key], key
    assert dist.metrics["train_rows"] == local.metrics["train_rows"]
    assert 1 <= dist.metrics["rounds"] <= PARAMS.num_boost_round

    # As good: at most TOLERANCE worse (better is fine).
    dev_local, dev_dist = local.metrics["poisson_deviance"], dist.metrics["poisson_deviance"]
    print(
        f"validation poisson deviance: local {dev_local:.5f}, dask {dev_dist:.5f}, rounds "
        f"{local.metrics['rounds']:.0f} and {dist.metrics['rounds']:.0f}"
    )
    assert dev_dist <= dev_local * (1 + TOLERANCE), (dev_local, dev_dist)
    assert dist.decision.publish == local.decision.publish is True, dist.decision.reason
    assert dist.metrics["improvement_vs_baseline"] >= PARAMS.margin_vs_baseline

    # The same artifact format: LightGBM text with the window's feature names, positive counts.
    art = build_artifact(
        dist.model_text,
        extractor_version="v1",
        feature_names=snap.names,
        categorical_features=snap.categorical,
    )
    from services.scorer.model import load

    loaded = load(art, source="memory")
    assert loaded.feature_names == NAMES
    probes = probe_set()
    assert np.all(loaded.predict(probes) > 0)
    assert np.allclose(loaded.predict(probes), predict(dist.model_text, probes))


def test_the_trainer_service_on_dask_publishes_a_model_the_scorer_loads(topics, tmp_path):
    settings = topics
    trainer = TrainerProc(
        settings,
        tmp_path,
        POOCH_TRAINER_ENGINE="dask",
        POOCH_TRAINER_DASK_WORKERS="2",
        POOCH_TRAINER_MIN_INSTANCES="2000",
        POOCH_TRAINER_RETRAIN_EVERY="2000",
    )
    try:
        trainer.wait_ready()
        feed(settings, SyntheticWorld(seed=12).instances(2000))
        [art] = wait_published(settings, 1, trainer, timeout=120)
    finally:
        trainer.stop()
    assert art.params["trainer.engine"] == "dask"
    assert _lgb_params(art.model_text())["num_machines"] == "2"
    assert art.metrics["improvement_vs_baseline"] >= 0.02
    from services.scorer.model import load

    loaded = load(art, source="topic")
    assert loaded.feature_names == NAMES
    probes = probe_set()
    assert np.all(np.isfinite(loaded.predict(probes))) and np.all(loaded.predict(probes) > 0)
