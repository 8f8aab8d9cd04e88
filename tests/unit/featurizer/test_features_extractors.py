from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from libs.common.features.extractors import EXTRACTORS, MISSING, SIZES, country_code, extractor
from libs.common.features.state import DogState, StateView, Stats

MS_2000 = 946_684_800_000
MS_2100 = 4_102_444_800_000

dogs = st.fixed_dictionaries(
    {
        "breed": st.text(max_size=40),
        "size": st.sampled_from(sorted(SIZES)),
        "age_months": st.none() | st.integers(0, 400),
    }
)
pupdates = st.fixed_dictionaries(
    {
        "event_id": st.text(min_size=1, max_size=20),
        "pupdate_id": st.text(min_size=1, max_size=20),
        "dog_id": st.text(min_size=1, max_size=20),
        "posted_at": st.integers(MS_2000, MS_2100),
        "hashtags": st.lists(st.text(max_size=40), max_size=30),
        "caption": st.none() | st.text(max_size=4096),
        "photo_filter": st.none() | st.text(max_size=30),
        "dog": dogs,
        "dog_followers": st.integers(0, 10**12),
        "country": st.none() | st.text(min_size=0, max_size=3),
        "app_version": st.just("3.0.0"),
    }
)
stats = st.builds(Stats, st.integers(0, 10**6), st.floats(0, 1e9))
states = st.builds(
    StateView,
    st.builds(DogState, st.integers(0, 10**5), st.none() | st.integers(MS_2000, MS_2100), stats),
    st.dictionaries(st.text(max_size=20), stats, max_size=10),
    stats,
)


@settings(max_examples=300, deadline=None)
@given(pupdates, states, st.sampled_from(sorted(EXTRACTORS)))
def test_total_finite_and_deterministic(pupdate, state, version):
    ex = extractor(version)
    values = ex.extract(pupdate, state)
    assert len(values) == len(ex.names)
    assert all(isinstance(v, float) and math.isfinite(v) for v in values)
    assert ex.extract(pupdate, state) == values
    assert math.isfinite(ex.baseline(state)) and ex.baseline(state) >= 0


@settings(max_examples=100, deadline=None)
@given(pupdates, states)
def test_categoricals_are_non_negative_integer_codes(pupdate, state):
    ex = extractor("v1")
    row = dict(zip(ex.names, ex.extract(pupdate, state), strict=True))
    for name in ex.categorical:
        assert row[name] >= 0 and row[name] == int(row[name])


def test_missing_is_the_sentinel_not_nan():
    p = {"posted_at": MS_2000, "hashtags": [], "dog": {"breed": "x", "size": "TOY"}, "dog_followers": 0}
    row = dict(
        zip(
            extractor("v1").names, extractor("v1").extract(p, StateView(DogState(), {}, Stats())), strict=True
        )
    )
    assert row["age_months"] == MISSING
    assert row["dog_mean_likes"] == MISSING
    assert row["hours_since_last_post"] == MISSING
    assert row["hashtag_mean_likes"] == MISSING


def test_versions_differ_only_where_documented():
    p = {
        "posted_at": MS_2000,
        "hashtags": ["#adorabull", "#Adorable"],
        "dog": {"breed": "Pug", "size": "SMALL"},
        "dog_followers": 10,
    }
    state = StateView(DogState(), {"adorable": Stats(4, 40.0)}, Stats(100, 500.0))
    v1 = dict(zip(extractor("v1").names, extractor("v1").extract(p, state), strict=True))
    v2 = dict(zip(extractor("v2").names, extractor("v2").extract(p, state), strict=True))
    assert v1["hashtag_count"] == 2 and v2["hashtag_count"] == 1
    assert v1["hashtag_mean_likes"] == 10.0
    assert v2["hashtag_mean_likes"] == (40.0 + 5 * 5.0) / (4 + 5)
    assert {k for k in v1 if v1[k] != v2[k]} <= {
        "hashtag_count",
        "hashtag_mean_likes",
        "hashtag_max_likes",
        "hashtag_min_likes",
    }


def test_baseline_prefers_the_dog_then_the_world():
    ex = extractor("v1")
    assert ex.baseline(StateView(DogState(matured=Stats(2, 30.0)), {}, Stats(10, 1000.0))) == 15.0
    assert ex.baseline(StateView(DogState(), {}, Stats(10, 1000.0))) == 100.0
    assert ex.baseline(StateView(DogState(), {}, Stats())) == 0.0


def test_country_codes_are_injective_on_iso_codes():
    codes = {country_code(a + b) for a in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
    assert len(codes) == 26 * 26 and min(codes) == 1
    assert country_code(None) == country_code("USA") == country_code("1x") == 0
