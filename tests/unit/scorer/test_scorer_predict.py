"""Containment: every row gets a finite, non-negative prediction and the reason when it fell back."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.scorer.fixtures import V1_NAMES, make_artifact, model_event, synthetic_rows, train_model_text
from services.scorer.predict import score
from services.scorer.registry import Registry
from services.scorer.routing import Router
from services.scorer.settings import ScorerSettings

N = 200


@pytest.fixture(scope="module")
def rows():
    x, _ = synthetic_rows(N, seed=3)
    return x


@pytest.fixture(scope="module")
def good():
    return make_artifact(train_model_text(rounds=20, seed=1), created_at=1)


@pytest.fixture(scope="module")
def rogue():
    # A real LightGBM model that predicts negative likes (lesson 6 of Pooch Predictor 1.x).
    return make_artifact(train_model_text(objective="regression", negative=True, rounds=20), created_at=2)


def _registry(*events, **settings) -> Registry:
    reg = Registry(ScorerSettings(**settings))
    for e in events:
        reg.apply(e)
    reg.rebuild(synced=True)
    return reg


def _score(reg, x, *, evs=None, names=None, baselines=None, dogs=None):
    n = len(x)
    return score(
        reg.snapshot,
        Router("t"),
        extractors=evs or ["v1"] * n,
        dogs=dogs or [f"dog-{i}".encode() for i in range(n)],
        names=names or [V1_NAMES] * n,
        values=[np.asarray(r, dtype="<f8").tobytes() for r in x],
        baselines=baselines if baselines is not None else [2.5] * n,
    )


def _valid(out) -> None:
    assert all(0 <= p < math.inf for p in out.predicted)
    for p, raw, v, r in zip(out.predicted, out.raw, out.model_version, out.reason, strict=True):
        if r is None and v is not None:
            assert raw == p
        if r is not None:
            assert v is None


def test_a_good_model_serves_every_row(rows, good):
    out = _score(_registry(good.to_event()), rows)
    _valid(out)
    assert set(out.model_version) == {good.model_version} and set(out.reason) == {None}
    assert set(out.arm) == {"champion"}
    assert out.counts == {("champion", good.model_version): N}


def test_negative_outputs_fall_back_with_the_raw_value_kept(rows, rogue):
    out = _score(_registry(rogue.to_event()), rows)
    _valid(out)
    assert set(out.reason) == {"invalid_output"}
    assert all(raw is not None and raw < 0 for raw in out.raw)
    assert out.predicted == [2.5] * N
    assert out.fallbacks == {"invalid_output": N}


def test_non_finite_outputs_fall_back(rows, good):
    reg = _registry(good.to_event())
    model = reg.snapshot.serving["v1"]["champion"]
    outputs = np.array([np.nan, np.inf, -np.inf, 1.0] * (N // 4))
    model.predict = lambda m: outputs[: len(m)]  # type: ignore[method-assign]
    try:
        out = _score(reg, rows)
    finally:
        del model.predict
    _valid(out)
    assert out.reason[:4] == ["invalid_output"] * 3 + [None]
    assert out.predicted[3] == 1.0


def test_predict_that_raises_falls_back_for_the_group(rows, good):
    bad = make_artifact(train_model_text(rounds=5, n_features=5), created_at=9)
    out = _score(_registry(bad.to_event(), probe_on_load=False), rows)
    _valid(out)
    assert set(out.reason) == {"exception"}


def test_paused_and_no_model_and_unknown_extractor(rows, good):
    out = _score(_registry(), rows[:3])
    assert out.reason == ["no_model"] * 3
    reg = _registry(good.to_event(), model_event("PAUSED", good.model_version))
    assert _score(reg, rows[:3]).reason == ["paused"] * 3
    out = _score(_registry(good.to_event()), rows[:3], evs=["v9", "v1", "v2"])
    assert out.reason == ["extractor_mismatch", None, "extractor_mismatch"]


def test_record_names_the_model_does_not_know(rows, good):
    reg = _registry(good.to_event())
    renamed = (*V1_NAMES[:-1], "caption_words")
    out = _score(reg, rows[:2], names=[renamed, V1_NAMES])
    assert out.reason == ["extractor_mismatch", None]


def test_same_names_in_another_order_are_reordered(rows, good):
    reg = _registry(good.to_event())
    perm = np.random.default_rng(0).permutation(len(V1_NAMES))
    shuffled = tuple(V1_NAMES[i] for i in perm)
    a = _score(reg, rows)
    b = _score(reg, rows[:, perm], names=[shuffled] * N)
    assert a.predicted == b.predicted


def test_values_not_matching_names_are_invalid_features(rows, good):
    reg = _registry(good.to_event())
    x = [list(rows[0]), list(rows[1])[:-2]]
    n = 2
    out = score(
        reg.snapshot,
        Router("t"),
        extractors=["v1"] * n,
        dogs=[b"a", b"b"],
        names=[V1_NAMES] * n,
        values=[np.asarray(r, dtype="<f8").tobytes() for r in x],
        baselines=[1.0, 1.0],
    )
    assert out.reason == [None, "invalid_features"]


def test_bad_baselines_are_made_valid(rows):
    out = _score(_registry(), rows[:4], baselines=[float("nan"), -3.0, float("inf"), 4.0])
    assert out.predicted == [0.0, 0.0, 0.0, 4.0]


def test_baseline_arm_serves_the_baseline_without_calling_it_a_fallback(rows, good):
    reg = _registry(good.to_event(), arm_weights={"champion": 0.5, "baseline": 0.5})
    out = _score(reg, rows)
    _valid(out)
    base = [i for i, a in enumerate(out.arm) if a == "baseline"]
    assert 0.3 * N < len(base) < 0.7 * N
    assert all(out.reason[i] is None and out.model_version[i] is None for i in base)
    assert all(out.predicted[i] == 2.5 for i in base)


def test_challenger_serves_its_share(rows, good):
    other = make_artifact(train_model_text(rounds=10, seed=7), created_at=3)
    reg = _registry(
        good.to_event(),
        other.to_event(),
        model_event("ACTIVATED", good.model_version, arm="champion"),
        model_event(
            "ACTIVATED", other.model_version, arm="challenger", arm_weights={"champion": 1, "challenger": 1}
        ),
    )
    out = _score(reg, rows)
    by_arm = {a: {v for v, b in zip(out.model_version, out.arm, strict=True) if b == a} for a in set(out.arm)}
    assert by_arm == {"champion": {good.model_version}, "challenger": {other.model_version}}
