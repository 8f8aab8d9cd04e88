"""Experiments: intervals equal scipy's, the promotion rule, a new experiment per arm change."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from services.supervisor.catalog import Catalog
from services.supervisor.experiments import ArmTally, Experiments, mean_interval, welch
from services.supervisor.policies import ExperimentRule
from tests.support.experiments import T0, champion_against_challenger
from tests.support.experiments import model_event as _event


def _tally(likes) -> ArmTally:
    t = ArmTally()
    for y in likes:
        t.pupdates += 1
        t.labelled += 1
        t.likes += int(y)
        t.likes2 += int(y) ** 2
    return t


def test_intervals_equal_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.poisson(6, 700), rng.negative_binomial(3, 0.4, 900)
    low, high = mean_interval(_tally(a), 0.95)
    want = stats.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=stats.sem(a))
    assert (low, high) == pytest.approx(want, rel=1e-12)
    w = welch(_tally(a), _tally(b), 0.9)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.9)
    assert w["difference"] == pytest.approx(a.mean() - b.mean(), rel=1e-12)
    assert (w["ci_low"], w["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert w["df"] == pytest.approx(res.df, rel=1e-10)
    assert welch(_tally([1]), _tally(b), 0.9) is None


def _feed(exp: Experiments, arm: str, version: str, likes, at: int = T0) -> None:
    for y in likes:
        exp.prediction("v1", arm, version, at)
        exp.label("v1", arm, at, int(y), 5.0)


def test_a_challenger_that_wins_with_enough_evidence_is_promoted():
    rng = np.random.default_rng(1)
    rule = ExperimentRule(min_labelled_per_arm=500)
    cat, exp = _setup(rule)
    _feed(exp, "champion", "v1-c", rng.poisson(5, 300))
    _feed(exp, "challenger", "v1-x", rng.poisson(7, 300))
    p, why = exp.judge("v1")
    assert p is None and "not enough evidence" in why
    _feed(exp, "champion", "v1-c", rng.poisson(5, 300))
    _feed(exp, "challenger", "v1-x", rng.poisson(7, 300))
    [p] = exp.promotions()
    assert p.challenger == "v1-x" and p.champion == "v1-c" and p.figures["ci_low"] > 0
    assert "challenger wins" in p.reason
    # The promotion is an ACTIVATED record: a new experiment starts, the old one is gone.
    cat.apply(_event("ACTIVATED", "v1-x", T0 + 60_000, arm="champion"))
    assert exp.promotions() == []
    report = exp.report()["experiments"][0]
    assert report["started_at"] == T0 + 60_000 and report["arms"]["champion"]["pupdates"] == 0
    assert report["champion"] == "v1-x" and report["challenger"] is None


def test_no_promotion_when_the_difference_is_not_sure_or_promotion_is_off():
    rng = np.random.default_rng(2)
    _cat, exp = _setup(ExperimentRule(min_labelled_per_arm=100))
    _feed(exp, "champion", "v1-c", rng.poisson(5, 400))
    _feed(exp, "challenger", "v1-x", rng.poisson(5, 400))
    p, why = exp.judge("v1")
    assert p is None and why.startswith("no winner yet")
    _cat2, off = _setup(ExperimentRule(min_labelled_per_arm=100, promote=False))
    _feed(off, "champion", "v1-c", rng.poisson(5, 400))
    _feed(off, "challenger", "v1-x", rng.poisson(9, 400))
    assert off.judge("v1")[0] is not None and off.promotions() == []


def test_predictions_before_the_experiment_or_while_it_settles_are_left_out():
    _cat, exp = _setup(ExperimentRule(settle_ms=2000))
    start = T0 - 70_000
    assert not exp.prediction("v1", "champion", "v1-c", start - 1)
    assert not exp.prediction("v1", "champion", "v1-c", start + 1999)
    assert exp.prediction("v1", "champion", "v1-c", start + 2000)
    assert exp.report()["experiments"][0]["arms"]["champion"]["pupdates"] == 1


def _setup(rule: ExperimentRule) -> tuple[Catalog, Experiments]:
    return champion_against_challenger(rule)
