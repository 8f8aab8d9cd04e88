r"""The hidden ground truth: how many likes a pupdate really gets, and when they arrive.

Nothing outside the simulator (and the evaluation code that scores models against it) may read
this module: it is what the whole system is trying to learn from the events alone.

Expected likes within the label horizon
=======================================

    mu = min(MU_CAP, exp(eta))

    eta = B0
        + B_FOLLOWERS * log(1 + dog_followers)
        + BREED[breed] + SIZE[size] + age(age_months) + COUNTRY[country]
        + sum(CONCEPT[c] for each distinct concept c among the hashtags)
        + tags(n)                       # n = number of hashtags as typed
        + FILTER[photo_filter]
        + hour(local hour of posted_at in the poster's country)
        + caption(len(caption))
        + charisma                      # latent per dog, ~ N(0, 0.5)

    age(a)     = 0.40 * exp(-a / 6) + 0.12 * [a >= 120]      # puppies shine, seniors a bit
    tags(n)    = 0.25 * log(1 + n) - 0.05 * n                # diminishing, then too many hurt
    hour(h)    = 0.20 * cos(2 * pi * (h - 20) / 24)          # evening posts do best
    caption(L) = 0.15 * min(L, 100) / 100 - 0.10 * max(0, L - 250) / 250

Every spelling of one hashtag concept (``#adorable``, ``#Adorable``, ``#adorabull``,
``#ÁDORABLE!``) has that concept's effect, and a concept counts once per post; hashtags of no
known concept have no effect. Spammy concepts (``#like4like``, ``#f4f``...) are negative. The
country is the poster's, whether or not their app version sends it; an app without captions or
filters (1.x) means no caption and no filter. Breed, size and age are the dog's real ones (the
profile an owner types may spell the breed differently).

Realised likes
==============

The total number of likes, in or after the horizon, is negative binomial (gamma-Poisson with
shape ``DISPERSION``) with mean ``mu / (1 - late_share)``; each like is late (after the horizon)
with probability ``late_share``, so the expected count inside ``[posted_at, posted_at + H)`` is
exactly ``mu``. A like inside the horizon comes after a truncated exponential delay with mean
``H / 5`` (most likes come early); a late one at ``H + Exp(H / 4)``. Because ``charisma`` is per
dog, a dog's past realised likes carry signal about its next pupdate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .world import COUNTRIES, VARIANT_TO_CONCEPT, Dog

B0 = -0.90
B_FOLLOWERS = 0.55
MU_CAP = 20_000.0
DISPERSION = 5.0
IN_HORIZON_MEAN = 1 / 5  # of the horizon
LATE_MEAN = 1 / 4  # of the horizon, after it

BREED: dict[str, float] = {
    "French Bulldog": 0.30,
    "Labrador Retriever": 0.10,
    "Golden Retriever": 0.20,
    "German Shepherd": 0.00,
    "Poodle": 0.05,
    "Beagle": 0.05,
    "Dachshund": 0.15,
    "Pembroke Welsh Corgi": 0.35,
    "Chihuahua": 0.05,
    "Pomeranian": 0.20,
    "Shiba Inu": 0.30,
    "Siberian Husky": 0.25,
    "Border Collie": 0.10,
    "Pug": 0.20,
    "Great Dane": 0.10,
    "Saint Bernard": 0.15,
    "Bernese Mountain Dog": 0.15,
    "Yorkshire Terrier": 0.00,
    "Shih Tzu": 0.00,
    "Boxer": -0.05,
    "Mixed": -0.10,
}
SIZE: dict[str, float] = {"TOY": 0.15, "SMALL": 0.05, "MEDIUM": 0.00, "LARGE": 0.05, "GIANT": 0.20}
COUNTRY: dict[str, float] = {
    "US": 0.00,
    "BR": 0.25,
    "IN": 0.15,
    "GB": -0.05,
    "DE": -0.15,
    "MX": 0.20,
    "JP": -0.20,
    "FR": -0.10,
    "ID": 0.20,
    "PH": 0.30,
    "CA": 0.00,
    "AU": 0.05,
    "ES": 0.10,
    "IT": 0.10,
    "KR": 0.05,
    "TR": 0.15,
    "NL": -0.10,
    "PL": 0.00,
    "AR": 0.20,
    "NG": 0.10,
    "ZA": 0.05,
    "SE": -0.20,
    "EG": 0.10,
    "TH": 0.15,
}
CONCEPT: dict[str, float] = {
    "adorable": 0.35,
    "puppy": 0.30,
    "goodboy": 0.25,
    "dogsofsniffable": 0.20,
    "cute": 0.05,
    "dog": 0.00,
    "frenchie": 0.15,
    "zoomies": 0.45,
    "sploot": 0.45,
    "blep": 0.35,
    "corgibutt": 0.50,
    "adoptdontshop": 0.30,
    "woofwednesday": 0.20,
    "like4like": -0.40,
    "follow4follow": -0.50,
    "instagood": -0.15,
    "freepuppies": -0.80,
    "crypto": -0.60,
}
FILTER: dict[str | None, float] = {
    None: 0.00,
    "clarendon": 0.10,
    "juno": 0.05,
    "valencia": 0.08,
    "lark": 0.03,
    "gingham": -0.05,
    "moon": -0.15,
    "x-pro ii": -0.10,
}

_HOUR = tuple(0.20 * math.cos(2 * math.pi * (h - 20) / 24) for h in range(24))
_TAGS = tuple(0.25 * math.log1p(n) - 0.05 * n for n in range(64))
_OFFSET = {c: off for c, (_, off) in COUNTRIES.items()}
_HOUR_MS = 3_600_000


def age_effect(age_months: int) -> float:
    return 0.40 * math.exp(-age_months / 6) + (0.12 if age_months >= 120 else 0.0)


def tags_effect(n: int) -> float:
    return _TAGS[n] if n < len(_TAGS) else 0.25 * math.log1p(n) - 0.05 * n


def caption_effect(caption: str | None) -> float:
    n = len(caption) if caption else 0
    return 0.15 * min(n, 100) / 100 - 0.10 * max(0, n - 250) / 250


def hour_effect(posted_at_ms: int, country: str) -> float:
    return _HOUR[(posted_at_ms // _HOUR_MS + _OFFSET[country]) % 24]


def concepts_effect(hashtags: list[str]) -> float:
    # dict, not set: summing in first-seen order keeps the float result independent of
    # PYTHONHASHSEED, so a seed gives the same likes in every process
    seen = dict.fromkeys(VARIANT_TO_CONCEPT.get(t) for t in hashtags)
    seen.pop(None, None)
    return sum(CONCEPT[c] for c in seen)


def dog_effect(dog: Dog) -> float:
    """The part of the linear predictor fixed for a dog; precomputed once per dog."""
    return (
        B0
        + BREED[dog.breed]
        + SIZE[dog.size]
        + age_effect(dog.age_months)
        + COUNTRY[dog.country]
        + dog.charisma
    )


def post_effect(
    followers: int,
    hashtags: list[str],
    photo_filter: str | None,
    posted_at: int,
    country: str,
    caption: str | None,
) -> float:
    """The part of the linear predictor that depends on the post itself."""
    return (
        B_FOLLOWERS * math.log1p(max(followers, 0))
        + concepts_effect(hashtags)
        + tags_effect(len(hashtags))
        + FILTER.get(photo_filter, 0.0)
        + hour_effect(posted_at, country)
        + caption_effect(caption)
    )


def mu_from_eta(eta: float) -> float:
    return min(MU_CAP, math.exp(eta))


def expected_likes(pupdate: Mapping[str, Any], dog: Dog) -> float:
    """Expected likes within the label horizon of one pupdate, as the truth defines them.

    ``pupdate`` is an event as the app sent it or as any reader schema decodes it (Avro field
    names; missing fields mean "this app version had no such thing"); ``dog`` supplies the
    traits no event carries (real breed, charisma, the poster's country: the dog's owner's,
    which is what a 3.x app sends and what older apps leave out).
    """
    eta = dog_effect(dog) + post_effect(
        int(pupdate["dog_followers"]),
        list(pupdate.get("hashtags") or ()),
        pupdate.get("photo_filter"),
        int(pupdate["posted_at"]),
        dog.country,
        pupdate.get("caption"),
    )
    return mu_from_eta(eta)


class LikeTiming:
    """When likes arrive after posting: an inverse CDF, so sorted uniforms give sorted delays.

    The simulator draws each pupdate's like times lazily in increasing order (order statistics
    of uniforms mapped through this monotone function), so it never holds every pending like of
    a long live run in memory at once.
    """

    def __init__(self, horizon_ms: float, late_share: float) -> None:
        if horizon_ms <= 0:
            raise ValueError("horizon must be positive")
        if not 0.0 <= late_share < 1.0:
            raise ValueError("late_share must be in [0, 1)")
        self.horizon_ms = float(horizon_ms)
        self.late_share = late_share
        self._in = 1.0 - late_share
        self._m = horizon_ms * IN_HORIZON_MEAN
        self._trunc = 1.0 - math.exp(-horizon_ms / self._m)
        self._late_m = horizon_ms * LATE_MEAN

    def delay_ms(self, u: float) -> int:
        """Delay for the uniform ``u`` in [0, 1); non-decreasing in ``u``."""
        if u < self._in:
            d = -self._m * math.log1p(-(u / self._in) * self._trunc)
            return min(int(d), int(self.horizon_ms) - 1)
        w = (u - self._in) / self.late_share
        return int(self.horizon_ms) + int(-self._late_m * math.log1p(-min(w, 0.999999999)))

    def total_mean(self, mu: float) -> float:
        """Mean of all likes (in and after the horizon) for an in-horizon expectation ``mu``."""
        return mu / self._in
