"""Synthetic instances with real signal, for the trainer's tests, benchmark and demos.

Not the simulation (``sniffable`` has the hidden ground truth of the whole app): a small,
fast world that writes ``instance`` records directly, with the v1 feature names, so the trainer
can be tested alone. Likes ~ Poisson(mu) with

    log mu = 0.6 + 0.45 (log_followers - 5) + dog effect + breed effect + country effect[regime]
             + 0.6 tag quality + hour effect[regime]

The ``baseline`` is what the featurizer computes (the dog's mean realised likes before this
post, else the global mean so far), so it carries the dog effect but nothing else: a model that
learns followers, tags, country and hour beats it clearly. ``regime`` changes the country
effects and shifts the hour-of-day effect (concept drift), so a model trained on newer data
beats an older champion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from libs.common.features.extractors import BASE_FEATURES, country_code
from services.trainer.window import Chunk

COUNTRIES = ("US", "GB", "DE", "BR", "JP", "IN", "FR", None)
# Country effects per regime (cycled): the drift a newer model has to learn.
REGIMES = (
    (0.6, 0.0, -0.2, 0.3, -0.6, 0.2, 0.0, -0.1),
    (-0.6, 0.4, 0.5, -0.5, 0.6, -0.3, 0.2, 0.0),
    (0.0, -0.6, 0.6, 0.7, -0.2, 0.5, -0.5, 0.1),
)
NAMES = BASE_FEATURES
# Hour-of-day effect; each regime shifts its phase by 8 hours (habits change, per post).
HOUR_EFFECT = 0.5 * np.sin(np.arange(24) / 24 * 2 * math.pi)


@dataclass
class _Dogs:
    followers: np.ndarray
    breed: np.ndarray
    size: np.ndarray
    age: np.ndarray
    country: np.ndarray
    effect: np.ndarray
    likes_sum: np.ndarray
    likes_n: np.ndarray
    posts: np.ndarray
    last_posted: np.ndarray


@dataclass
class SyntheticWorld:
    """A stream of instances; successive batches continue the same dogs and clock."""

    seed: int = 0
    dogs: int = 2_000
    start_ms: int = 1_700_000_000_000
    spacing_ms: int = 30_000
    horizon_ms: int = 3_600_000
    extractor_version: str = "v1"
    _rng: np.random.Generator = field(init=False)
    _d: _Dogs = field(init=False)
    _count: int = field(init=False, default=0)
    _total_likes: float = field(init=False, default=0.0)
    _breed_eff: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        rng = self._rng = np.random.default_rng(self.seed)
        n = self.dogs
        self._breed_eff = rng.normal(0, 0.3, 41)
        self._d = _Dogs(
            followers=np.floor(rng.lognormal(5.0, 1.4, n)),
            breed=rng.integers(1, 41, n).astype(float),
            size=rng.integers(1, 6, n).astype(float),
            age=np.where(rng.random(n) < 0.15, -1.0, rng.integers(2, 180, n).astype(float)),
            country=rng.integers(0, len(COUNTRIES), n),
            effect=rng.normal(0, 0.35, n),
            likes_sum=np.zeros(n),
            likes_n=np.zeros(n),
            posts=np.zeros(n),
            last_posted=np.full(n, -1.0),
        )

    def arrays(self, n: int, regime: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``n`` more instances as arrays: X (v1 order), likes, baseline, posted_at."""
        rng, d = self._rng, self._d
        dog = rng.integers(0, self.dogs, n)
        posted = self.start_ms + (self._count + np.arange(n)) * self.spacing_ms
        hour = (posted // 3_600_000) % 24
        tag_q = rng.normal(0, 0.5, n)
        tags = rng.poisson(3, n)
        known = np.minimum(tags, rng.poisson(2, n))
        effects = np.asarray(REGIMES[regime % len(REGIMES)])
        log_f = np.log1p(d.followers[dog])
        log_mu = (
            0.6
            + 0.45 * (log_f - 5)
            + d.effect[dog]
            + self._breed_eff[d.breed[dog].astype(int)]
            + effects[d.country[dog]]
            + 0.6 * tag_q
            + HOUR_EFFECT[(hour + 8 * regime) % 24]
        )
        likes = rng.poisson(np.exp(log_mu)).astype(float)
        X = np.empty((n, len(NAMES)))
        baseline = np.empty(n)
        codes = np.array([country_code(c) for c in COUNTRIES])
        tag_mean = np.where(known > 0, np.exp(0.6 + 0.6 * tag_q + rng.normal(0, 0.3, n)) * 3, -1.0)
        for i in range(n):  # running per-dog state: a loop is clearest, and fast enough
            k = dog[i]
            dog_mean = d.likes_sum[k] / d.likes_n[k] if d.likes_n[k] else None
            overall = self._total_likes / self._count if self._count else 0.0
            baseline[i] = dog_mean if dog_mean is not None else overall
            X[i, 4] = d.posts[k]
            X[i, 5] = -1.0 if d.last_posted[k] < 0 else (posted[i] - d.last_posted[k]) / 3_600_000
            X[i, 6] = -1.0 if dog_mean is None else dog_mean
            X[i, 7] = d.likes_n[k]
            # Labels mature after the horizon; here every earlier post counts (close enough).
            d.likes_sum[k] += likes[i]
            d.likes_n[k] += 1
            d.posts[k] += 1
            d.last_posted[k] = posted[i]
            self._total_likes += likes[i]
            self._count += 1
        X[:, 0] = d.breed[dog]
        X[:, 1] = d.size[dog]
        X[:, 2] = d.age[dog]
        X[:, 3] = log_f
        X[:, 8] = tags
        X[:, 9] = known
        X[:, 10] = tag_mean
        X[:, 11] = np.where(known > 0, tag_mean * 1.3, -1.0)
        X[:, 12] = np.where(known > 0, tag_mean * 0.7, -1.0)
        X[:, 13] = np.log1p(known * 40.0)
        X[:, 14] = rng.integers(0, 9, n)
        X[:, 15] = hour
        X[:, 16] = (posted // 86_400_000 + 3) % 7
        X[:, 17] = codes[d.country[dog]]
        X[:, 18] = rng.integers(0, 120, n)
        return X, likes, baseline, posted.astype(np.int64)

    def instances(self, n: int, regime: int = 0, *, id_prefix: str = "p") -> list[dict]:
        """``n`` more ``instance`` records (``serde("instance").encode`` them to produce)."""
        first = self._count
        X, likes, baseline, posted = self.arrays(n, regime)
        return [
            {
                "pupdate_id": f"{id_prefix}{first + i}",
                "dog_id": f"d{i % self.dogs}",
                "country": None,
                "extractor_version": self.extractor_version,
                "posted_at": int(posted[i]),
                "names": list(NAMES),
                "values": [float(v) for v in X[i]],
                "baseline": float(baseline[i]),
                "likes": int(likes[i]),
                "horizon_ms": self.horizon_ms,
                "closed_at": int(posted[i]) + self.horizon_ms,
            }
            for i in range(n)
        ]


def window_chunk(n: int, seed: int = 1) -> Chunk:
    """``n`` instances as one window chunk, the first half in regime 0 and the rest in regime 1
    (what the trainer benchmarks learn from); 20 instances per dog, at least 500 dogs."""
    world = SyntheticWorld(seed=seed, dogs=max(500, n // 20))
    X, likes, baseline, posted = world.arrays(n // 2, 0)
    X2, likes2, baseline2, posted2 = world.arrays(n - n // 2, 1)
    posted_all = np.concatenate((posted, posted2))
    return Chunk(
        np.concatenate((X, X2)),
        np.concatenate((likes, likes2)),
        np.concatenate((baseline, baseline2)),
        posted_all,
        posted_all + 3_600_000,
        np.arange(n, dtype=np.uint64),
        (np.arange(n) % 6).astype(np.int32),
        np.arange(n, dtype=np.int64),
    )


def probe_set(n: int = 64, seed: int = 99) -> np.ndarray:
    """A fixed set of feature vectors to watch predictions change across versions."""
    X, _likes, _baseline, _posted = SyntheticWorld(seed=seed, dogs=200).arrays(n)
    return X
