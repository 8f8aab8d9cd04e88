"""The supervisor's windows: drift bins and PSI, order independence, eviction by event time,
attribution of fallbacks without a model_version, realised error against the baseline."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats

from services.supervisor.catalog import Catalog
from services.supervisor.windows import (
    DriftBins,
    LabelTally,
    Obs,
    WindowConfig,
    Windows,
    label_figures,
    poisson_deviance,
)

T0 = 1_800_000_000_000


def published(version: str, quantiles, created_at: int = T0 - 60_000) -> dict:
    return {
        "kind": "PUBLISHED",
        "event_id": f"published:{version}",
        "model_version": version,
        "extractor_version": "v1",
        "validation_quantiles": list(quantiles),
        "created_at": created_at,
    }


def obs(
    i: int,
    version: str | None,
    raw: float | None,
    *,
    at: int,
    country: str = "US",
    arm: str = "champion",
    reason: str | None = None,
) -> Obs:
    if version is not None and raw is not None and not (raw >= 0 and math.isfinite(raw)):
        reason, version = "invalid_output", None
    return Obs(
        f"p{i}", "v1", arm, country, version, raw, 1.0 if raw is None else max(raw, 0.0), reason, at, 15.0
    )


def _quantiles(x) -> list[float]:
    return [float(q) for q in np.quantile(x, np.linspace(0, 1, 21))]


@pytest.fixture
def catalog() -> Catalog:
    cat = Catalog()
    rng = np.random.default_rng(0)
    cat.apply(published("v1-a", _quantiles(rng.exponential(5, 5000))))
    return cat


# -- drift -------------------------------------------------------------------------------------


def test_drift_bins_expected_shares_sum_to_one_and_ties_merge():
    bins = DriftBins.from_quantiles([0, 0, 0, 0, 1, 2, 3, 3, 5])  # levels 0, 1/8, ..., 1
    assert bins is not None
    assert bins.edges == (0.0, 1.0, 2.0, 3.0)
    # 0 carries levels up to 3/8 (a point mass), 1 -> 4/8, 2 -> 5/8, 3 -> 7/8, the rest above
    assert bins.expected == pytest.approx([3 / 8, 1 / 8, 1 / 8, 2 / 8, 1 / 8])
    assert sum(bins.expected) == pytest.approx(1.0)
    assert bins.index(0.0) == 0 and bins.index(0.5) == 1 and bins.index(3.0) == 3 and bins.index(9.0) == 4


def test_drift_bins_refuse_what_is_not_a_quantile_list():
    assert DriftBins.from_quantiles([]) is None
    assert DriftBins.from_quantiles([1.0, 2.0]) is None
    assert DriftBins.from_quantiles([3.0, 2.0, 1.0]) is None
    assert DriftBins.from_quantiles([0.0, math.nan, 1.0]) is None


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(1)
    bins = DriftBins.from_quantiles(_quantiles(rng.exponential(5, 20_000)))
    same = np.bincount([bins.index(x) for x in rng.exponential(5, 5000)], minlength=len(bins.expected))
    shifted = np.bincount([bins.index(x) for x in rng.exponential(9, 5000)], minlength=len(bins.expected))
    assert bins.psi(same) < 0.02
    assert bins.psi(shifted) > 0.25
    assert bins.psi([0] * len(bins.expected)) is None


# -- the live window -----------------------------------------------------------------------------


def test_counts_invalid_implausible_fallbacks_and_slices(catalog):
    w = Windows(WindowConfig(), catalog)
    cap = w.info("v1-a").cap
    items = [
        obs(0, "v1-a", 3.0, at=T0, country="US"),
        obs(1, "v1-a", -1.0, at=T0, country="DE"),
        obs(2, "v1-a", cap * 2, at=T0, country="DE"),
        obs(3, "v1-a", math.inf, at=T0, country="US", arm="challenger"),
    ]
    for o in items:
        w.observe(o)
    w.resolve(flush=True)
    f = w.figures("v1-a")
    assert f["all"]["predictions"] == 4 and f["all"]["invalid"] == 2 and f["all"]["implausible"] == 1
    assert f["all"]["fallbacks"] == {"invalid_output": 2}
    assert f["country=DE"]["invalid_rate"] == 0.5 and f["country=DE"]["implausible_rate"] == 0.5
    assert f["arm=challenger"]["invalid_rate"] == 1.0
    assert f["country=US"]["predictions"] == 2


def _stream(n: int, seed: int) -> list[Obs]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        at = T0 + rng.randrange(0, 900_000)  # 15 minutes: more than the 5-minute window
        raw = rng.choice([rng.expovariate(0.2), -1.0, 1e7])
        out.append(obs(i, "v1-a", raw, at=at, country=rng.choice("ABC")))
    return out


def test_the_windows_are_a_function_of_the_set_of_predictions(catalog):
    records = _stream(3000, seed=2)
    states = []
    for seed in range(3):
        random.Random(seed).shuffle(records)
        w = Windows(WindowConfig(), catalog)
        siblings = []
        for o in records:
            w.observe(o)
            siblings.append(o)
        w.resolve(flush=True)
        states.append(w.state())
    assert states[0] == states[1] == states[2]


def test_the_window_holds_exactly_the_last_window_seconds_of_event_time(catalog):
    records = _stream(3000, seed=3)
    w = Windows(WindowConfig(window_seconds=300, bucket_seconds=1), catalog)
    for o in records:
        w.observe(o)
    w.resolve(flush=True)
    watermark = max(o.predicted_at for o in records)
    low_bucket = (watermark - 300_000) // 1000 + 1
    inside = [o for o in records if o.predicted_at // 1000 >= low_bucket]
    f = w.figures("v1-a")["all"]
    assert f["predictions"] == len(inside)
    assert f["invalid"] == sum(1 for o in inside if o.raw_output < 0)


# -- attribution -------------------------------------------------------------------------------


def test_a_fallback_is_blamed_on_the_model_of_its_scorer_batch(catalog):
    catalog.apply(published("v1-b", [1, 2, 3, 4], created_at=T0 - 30_000))
    w = Windows(WindowConfig(), catalog)
    w.observe(obs(0, "v1-a", -5.0, at=T0 + 10, country="DE"))  # no version on the record
    assert w.pending
    w.observe(obs(1, "v1-a", 2.0, at=T0 + 10, country="US"))  # a sibling: same batch, named
    w.resolve()
    assert not w.pending
    assert w.figures("v1-a")["country=DE"]["invalid"] == 1
    assert "v1-b" not in w.subjects()


def test_without_a_sibling_the_models_topic_says_who_served_unless_near_a_swap(catalog):
    catalog.apply(published("v1-b", [1, 2, 3, 4], created_at=T0))  # newest published serves from T0
    w = Windows(WindowConfig(attribution_grace_ms=2000), catalog)
    w.observe(obs(0, "v1-a", -1.0, at=T0 - 10_000))  # a served then
    w.observe(obs(1, "v1-a", -1.0, at=T0 + 500))  # just after the swap: who knows
    w.observe(obs(2, "v1-a", -1.0, at=T0 + 10_000))  # b served then
    w.resolve(flush=True)
    assert w.figures("v1-a")["all"]["invalid"] == 1
    assert w.figures("v1-b")["all"]["invalid"] == 1
    assert w.figures("")["all"]["invalid"] == 1 and w.unattributed == 1


def test_pending_fallbacks_wait_for_event_time_to_pass(catalog):
    w = Windows(WindowConfig(attribution_wait_ms=2000), catalog)
    w.observe(obs(0, "v1-a", -1.0, at=T0))
    w.resolve(now=0.0)
    assert len(w.pending) == 1
    w.observe(obs(1, "v1-a", 1.0, at=T0 + 5000))  # the watermark moves on (another batch)
    w.resolve(now=0.0)
    assert not w.pending and w.figures("v1-a")["all"]["invalid"] == 1


# -- realised error ----------------------------------------------------------------------------


def test_label_figures_paired_t_equals_scipy():
    rng = np.random.default_rng(4)
    mu = np.exp(rng.normal(1.5, 0.5, 400))
    y = rng.poisson(mu)
    model = mu * 1.6
    base = mu * np.exp(rng.normal(0, 0.3, 400))
    lt = LabelTally()
    m = [poisson_deviance(a, b) for a, b in zip(y, model, strict=True)]
    b = [poisson_deviance(a, c) for a, c in zip(y, base, strict=True)]
    scale = 1_000_000
    for mi, bi in zip(m, b, strict=True):
        mm, bb = round(mi * scale), round(bi * scale)
        lt.n += 1
        lt.m += mm
        lt.b += bb
        lt.m2 += mm * mm
        lt.b2 += bb * bb
        lt.mb += mm * bb
    k = 1.1
    f = label_figures(lt, k)
    assert f["error_ratio"] == pytest.approx(np.mean(m) / np.mean(b), rel=1e-6)
    want = stats.ttest_1samp(np.array(m) - k * np.array(b), 0.0)
    assert f["error_t"] == pytest.approx(want.statistic, rel=1e-5)


def test_poisson_deviance_is_zero_at_the_truth_and_positive_elsewhere():
    assert poisson_deviance(4, 4) == pytest.approx(0.0)
    assert poisson_deviance(0, 0.0) == pytest.approx(2e-6)  # mu floored at 1e-6
    assert poisson_deviance(4, 1) > 0 and poisson_deviance(0, 3) == pytest.approx(6.0)
