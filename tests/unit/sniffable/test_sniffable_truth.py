"""The hidden ground truth has real, learnable signal, and the world is not US-only."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from sniffable import LIKE, PUPDATE, SimConfig, Simulation, expected_likes
from sniffable import truth as t
from sniffable.world import COUNTRIES, HASHTAGS, SIZES, VARIANT_TO_CONCEPT

START = 1_700_000_000_000
HORIZON_MS = 86_400_000


@pytest.fixture(scope="module")
def sim():
    # late_share 0 would hide the late likes; keep the default and count inside the horizon
    return Simulation(SimConfig(seed=21, start_ms=START, max_events=400_000, bad_share=0.0, n_dogs=5_000))


@pytest.fixture(scope="module")
def posts(sim):
    """(pupdate event, likes inside the horizon, all likes) for every pupdate."""
    pupdates, in_h, total = {}, Counter(), Counter()
    for e in sim.events():
        if e.kind == PUPDATE:
            pupdates[e.key] = e
        elif e.kind == LIKE:
            total[e.key] += 1
            if e.event_time_ms < pupdates[e.key].event_time_ms + HORIZON_MS:
                in_h[e.key] += 1
    assert len(pupdates) >= 5_000
    return [(p, in_h[k], total[k]) for k, p in pupdates.items()]


def test_truth_tables_cover_the_world():
    assert set(t.CONCEPT) == set(VARIANT_TO_CONCEPT.values())
    assert set(t.COUNTRY) == set(COUNTRIES)
    assert set(t.SIZE) == set(SIZES)


def test_expected_likes_function_agrees_with_the_generator(sim, posts):
    for p, _, _ in posts[:2_000]:
        dog = sim.world.dog(p.json_payload["dog_id"])
        assert expected_likes(p.json_payload, dog) == pytest.approx(p.truth, rel=1e-12)
        assert sim.expected_likes(p.json_payload) == pytest.approx(p.truth, rel=1e-12)


def test_realised_likes_inside_the_horizon_average_the_expectation(posts):
    mu = sum(p.truth for p, _, _ in posts)
    realised = sum(n for _, n, _ in posts)
    assert realised / mu == pytest.approx(1.0, abs=0.08)
    late = sum(total - n for _, n, total in posts) / sum(total for _, _, total in posts)
    assert 0.01 < late < 0.06


def test_log_followers_correlate_with_likes(posts):
    followers = np.array([math.log1p(p.json_payload["dog_followers"]) for p, _, _ in posts])
    likes = np.array([n for _, n, _ in posts], dtype=float)
    assert np.corrcoef(followers, likes)[0, 1] > 0.2
    assert np.corrcoef(followers, np.log1p(likes))[0, 1] > 0.4


def test_a_dogs_past_likes_carry_signal(posts):
    """Charisma is latent and per dog: a dog's first post predicts its next one."""
    by_dog: dict[str, list] = {}
    for p, n, _ in posts:
        by_dog.setdefault(p.json_payload["dog_id"], []).append((p, n))
    pairs = [
        (
            math.log1p(a[1]) - t.B_FOLLOWERS * math.log1p(a[0].json_payload["dog_followers"]),
            math.log1p(b[1]) - t.B_FOLLOWERS * math.log1p(b[0].json_payload["dog_followers"]),
        )
        for ps in by_dog.values()
        if len(ps) >= 2
        for a, b in [ps[:2]]
    ]
    assert len(pairs) > 300
    x, y = np.array(pairs).T
    assert np.corrcoef(x, y)[0, 1] > 0.3


def test_variant_hashtags_share_their_concepts_effect(sim):
    dog = sim.world.dogs[0]
    base = {"dog_followers": 100, "posted_at": START, "hashtags": []}

    def mu(*tags):
        return expected_likes(base | {"hashtags": list(tags)}, dog)

    for concept in HASHTAGS:
        values = {round(mu(v), 9) for v in concept.variants}
        assert len(values) == 1, concept.name
    assert mu("#adorabull") == mu("#adorable") == mu("#ÁDORABLE!") == mu("#Adorable")
    assert mu("#adorable") > mu("#dog") > mu("#like4like")
    assert mu("#adorable", "#Adorable") < mu("#adorable", "#puppy")  # one concept counts once
    assert mu("#like4like") < mu()  # spam hurts even after the tag-count bonus
    assert mu("#notatag") == mu("#dog")  # unknown tags: no concept effect, only the count


def test_number_of_hashtags_has_diminishing_returns():
    gains = [t.tags_effect(n + 1) - t.tags_effect(n) for n in range(12)]
    assert gains[0] > 0
    assert all(a > b for a, b in itertools.pairwise(gains))
    assert t.tags_effect(20) < t.tags_effect(3)


def test_other_terms_move_expected_likes(sim):
    dog = sim.world.dogs[0]
    base = {"dog_followers": 100, "posted_at": START, "hashtags": ["#dog"]}
    assert expected_likes(base | {"dog_followers": 10_000}, dog) > expected_likes(base, dog)
    assert expected_likes(base | {"photo_filter": "clarendon"}, dog) > expected_likes(
        base | {"photo_filter": "moon"}, dog
    )
    hours = {expected_likes(base | {"posted_at": START + h * 3_600_000}, dog) for h in range(24)}
    assert len(hours) > 12
    assert expected_likes(base | {"caption": "Look at this face!"}, dog) > expected_likes(base, dog)
    puppy = replace(dog, age_months=3)
    adult = replace(dog, age_months=48)
    assert expected_likes(base, puppy) > expected_likes(base, adult)
    assert expected_likes(base, replace(dog, country="BR")) > expected_likes(base, replace(dog, country="SE"))
    assert expected_likes(base, replace(dog, charisma=1.0)) > expected_likes(
        base, replace(dog, charisma=-1.0)
    )


def test_expected_likes_is_positive_everywhere():
    """Lesson 6: no input makes the truth negative (or non-finite)."""
    dog = Simulation(SimConfig(seed=1, start_ms=START, n_dogs=50)).world.dogs[0]
    for country in COUNTRIES:
        for followers in (0, 1, 10**9):
            mu = expected_likes(
                {"dog_followers": followers, "posted_at": START, "hashtags": ["#crypto"] * 40},
                replace(dog, country=country),
            )
            assert 0 < mu <= t.MU_CAP and math.isfinite(mu)


def test_countries_sizes_and_breeds_span_the_world(posts, sim):
    countries = Counter(sim.world.dog(p.json_payload["dog_id"]).country for p, _, _ in posts)
    assert len(countries) >= 20
    assert countries["US"] / sum(countries.values()) < 0.4
    sent = Counter(p.json_payload.get("country") for p, _, _ in posts)
    assert len(sent) > 15 and None in sent  # older apps do not send it
    sizes = Counter(p.json_payload["dog"]["size"] for p, _, _ in posts if p.json_payload.get("dog"))
    assert set(sizes) == set(SIZES)
    breeds = Counter(sim.world.dog(p.json_payload["dog_id"]).breed for p, _, _ in posts)
    assert "French Bulldog" in breeds and len(breeds) >= 15


def test_followers_are_heavy_tailed(posts):
    f = np.array([p.json_payload["dog_followers"] for p, _, _ in posts])
    assert np.quantile(f, 0.99) > 20 * np.median(f)


def test_hashtag_spellings_vary_but_the_common_one_dominates(posts):
    tags = Counter(tag for p, _, _ in posts for tag in p.json_payload["hashtags"])
    assert tags["#adorable"] > tags["#adorabull"] > 0
    assert tags["#ÁDORABLE!"] > 0 and tags["#Adorable"] > 0
    assert any(tags[v] for v in ("#like4like", "#l4l", "#f4f"))


def test_like_timing_is_monotone_decaying_and_has_a_late_tail():
    timing = t.LikeTiming(HORIZON_MS, 0.03)
    us = np.linspace(0, 0.9999999, 10_001)
    delays = [timing.delay_ms(u) for u in us]
    assert delays == sorted(delays)
    assert delays[0] == 0
    inside = [d for d in delays if d < HORIZON_MS]
    assert len(inside) / len(delays) == pytest.approx(0.97, abs=0.001)
    # decaying: the first quarter of the horizon gets more likes than the last
    assert sum(d < HORIZON_MS / 4 for d in inside) > 3 * sum(d >= 3 * HORIZON_MS / 4 for d in inside)
