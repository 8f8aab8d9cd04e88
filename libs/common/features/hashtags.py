"""Hashtag normalisation: a deliberate, versioned decision about which spellings are one concept.

``#Adorable``, ``#adorable`` and ``#ÁDORABLE!`` differ only in case, accents and punctuation:
every extractor version folds those. Whether ``#adorabull`` *means* ``#adorable`` is a modelling
decision, not a typo to hide: extractor v1 keeps them apart, v2 maps known variants onto one
concept through :data:`VARIANTS`, so the trainer can measure whether the mapping helps
(``pooch trainer compare``). Unseen hashtags never raise; they are simply new concepts.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

MAX_TAG_CHARS = 64

# Known spelling variants -> the concept they stand for. Only pun-spellings seen in the wild
# and verified to be used interchangeably belong here; keep the mapping idempotent (no value
# may itself be a key), which tests/unit/test_features_hashtags.py checks.
VARIANTS: dict[str, str] = {
    "adorabull": "adorable",
    "adorbs": "adorable",
    "pawsome": "awesome",
    "pawfect": "perfect",
    "doggo": "dog",
    "doge": "dog",
    "pupper": "puppy",
    "puppers": "puppy",
    "furbaby": "furbabies",
    "woofwednesday": "wednesday",
    "frenchiesofinstagram": "frenchie",
    "frenchies": "frenchie",
    "goodboi": "goodboy",
    "smol": "small",
    "floof": "fluffy",
    "floofy": "fluffy",
}

_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


@lru_cache(maxsize=65536)
def fold(tag: str) -> str:
    """Case, accents, width, '#' and punctuation folded away; '' when nothing is left.

    NFKC first (full-width letters and ligatures become plain), then strip combining marks so
    'Á' and 'A' agree, then casefold (handles 'ß' and friends), then drop everything that is not
    a letter or digit. Idempotent: fold(fold(x)) == fold(x).
    """
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", tag))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = _NOT_WORD.sub("", text.casefold())
    # Casefolding can produce new combinable sequences; one more pass makes it a fixed point.
    text = unicodedata.normalize("NFKC", text)
    return text[:MAX_TAG_CHARS]


def canonical(tag: str, *, map_variants: bool) -> str:
    folded = fold(tag)
    if map_variants:
        return VARIANTS.get(folded, folded)
    return folded


def normalise_all(tags: list[str], *, map_variants: bool) -> list[str]:
    """Distinct canonical tags in first-seen order; empty ones dropped."""
    seen: dict[str, None] = {}
    for tag in tags:
        c = canonical(tag, map_variants=map_variants)
        if c:
            seen.setdefault(c, None)
    return list(seen)
