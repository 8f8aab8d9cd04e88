"""Versioned feature extractors: pure functions from (pupdate, state as of posting) to numbers.

Rules every version keeps, checked by property tests:
- deterministic and total: any valid pupdate gives a vector, unseen hashtags and breeds too;
- every value finite; a missing value is the explicit sentinel ``MISSING`` (-1), never NaN;
- categoricals are stable non-negative integer codes (0 = none/unknown), so a model trained
  today reads tomorrow's vectors the same way.

Adding, removing or changing any feature means a new version: models are trained and served
per ``extractor_version``, so old and new can run side by side.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from libs.common.features.hashtags import fold, normalise_all
from libs.common.features.state import StateView, Stats

MISSING = -1.0
SIZES = {"TOY": 1.0, "SMALL": 2.0, "MEDIUM": 3.0, "LARGE": 4.0, "GIANT": 5.0}
CATEGORY_BUCKETS = 1021  # prime; CRC32 buckets for open vocabularies (breeds, filters)

BASE_FEATURES = (
    "breed",
    "size",
    "age_months",
    "log_followers",
    "dog_posts",
    "hours_since_last_post",
    "dog_mean_likes",
    "dog_matured_posts",
    "hashtag_count",
    "hashtag_known",
    "hashtag_mean_likes",
    "hashtag_max_likes",
    "hashtag_min_likes",
    "hashtag_log_popularity",
    "photo_filter",
    "hour_of_day",
    "day_of_week",
    "country",
    "caption_length",
)
CATEGORICAL = ("breed", "photo_filter", "country")


def bucket(text: str | None) -> float:
    """Stable code for an open vocabulary: 1..CATEGORY_BUCKETS, 0 when absent."""
    if not text:
        return 0.0
    folded = fold(text)
    if not folded:
        return 0.0
    return float(zlib.crc32(folded.encode()) % CATEGORY_BUCKETS + 1)


def country_code(country: str | None) -> float:
    """ISO 3166-1 alpha-2 to 1..676 (injective); 0 for absent or malformed."""
    if not country or len(country) != 2 or not country.isascii() or not country.isalpha():
        return 0.0
    a, b = country.upper()[0], country.upper()[1]
    return float((ord(a) - 65) * 26 + (ord(b) - 65) + 1)


def _or_missing(value: float | None) -> float:
    return MISSING if value is None else float(value)


@dataclass(frozen=True)
class Extractor:
    version: str
    map_variants: bool
    # Pseudo-count pulling a rarely seen hashtag's mean towards the global mean; 0 = raw mean.
    tag_prior_weight: float
    names: tuple[str, ...] = BASE_FEATURES
    categorical: tuple[str, ...] = CATEGORICAL

    def tags(self, pupdate: Mapping[str, Any]) -> list[str]:
        return normalise_all(list(pupdate.get("hashtags") or ()), map_variants=self.map_variants)

    def baseline(self, state: StateView) -> float:
        """The historical baseline: the dog's mean realised likes, else the global mean, else 0."""
        dog_mean = state.dog.matured.mean()
        if dog_mean is not None:
            return dog_mean
        overall = state.overall.mean()
        return overall if overall is not None else 0.0

    def _tag_mean(self, stats: Stats, overall_mean: float | None) -> float | None:
        if not stats.n:
            return None
        if self.tag_prior_weight and overall_mean is not None:
            return (stats.likes + self.tag_prior_weight * overall_mean) / (stats.n + self.tag_prior_weight)
        return stats.likes / stats.n

    def extract(self, pupdate: Mapping[str, Any], state: StateView) -> list[float]:
        posted_at = int(pupdate["posted_at"])
        dog = pupdate.get("dog") or {}
        tags = self.tags(pupdate)
        overall_mean = state.overall.mean()
        tag_means = [
            m
            for m in (self._tag_mean(state.tags.get(t, Stats()), overall_mean) for t in tags)
            if m is not None
        ]
        tag_posts = sum(state.tags[t].n for t in tags if t in state.tags)
        last = state.dog.last_posted_at
        when = datetime.fromtimestamp(posted_at / 1000, tz=UTC)
        followers = max(int(pupdate.get("dog_followers") or 0), 0)
        values = [
            bucket(dog.get("breed")),
            SIZES.get(str(dog.get("size") or "").upper(), MISSING),
            _or_missing(dog.get("age_months")),
            math.log1p(followers),
            float(state.dog.posts),
            MISSING if last is None else max(posted_at - last, 0) / 3_600_000,
            _or_missing(state.dog.matured.mean()),
            float(state.dog.matured.n),
            float(len(tags)),
            float(len(tag_means)),
            sum(tag_means) / len(tag_means) if tag_means else MISSING,
            max(tag_means) if tag_means else MISSING,
            min(tag_means) if tag_means else MISSING,
            math.log1p(tag_posts),
            bucket(pupdate.get("photo_filter")),
            float(when.hour),
            float(when.weekday()),
            country_code(pupdate.get("country")),
            float(len(pupdate.get("caption") or "")),
        ]
        return values


# v1: tags folded (case, accents, punctuation) only; raw per-tag means.
# v2: also maps known variants (#adorabull -> adorable) and smooths rare tags' means.
EXTRACTORS: dict[str, Extractor] = {
    "v1": Extractor("v1", map_variants=False, tag_prior_weight=0.0),
    "v2": Extractor("v2", map_variants=True, tag_prior_weight=5.0),
}
LIVE_VERSION = "v1"


def extractor(version: str) -> Extractor:
    try:
        return EXTRACTORS[version]
    except KeyError:
        raise KeyError(f"unknown extractor_version {version!r}; known: {sorted(EXTRACTORS)}") from None
