"""What-if predictions: draft pupdates in, predicted likes out, best first, within a deadline.

A draft is featurized by the same pure extractor the featurizer runs
(:mod:`libs.common.features.extractors`), with the dog's and its hashtags' state read from the
Redis online view in *one* MGET for all candidates. The answer is never late:

* the state read may take ``whatif_state_budget`` of the deadline; past it, or with Redis down,
  the drafts are featurized with default state and flagged (``state`` = ``unavailable``);
* prediction (tens of microseconds for a few rows) runs only when what is left of the deadline
  covers what it has been taking; otherwise each candidate gets its historical baseline with
  ``fallback_reason = "deadline"``.

Routing and containment are the stream's (:mod:`services.scorer.predict`): a dog sees the same
arm here as in its stream predictions, and every answer names the arm.

The ``baseline`` arm is the historical world of the online experiment. Its owners get their
drafts ranked by the **historical predictor** (:func:`historical_likes`), the way the first
Pooch Predictor ranked them: the past average likes of pupdates with the draft's hashtags,
scaled to the dog's own level. It looks at the draft, so two drafts of one dog get different
answers; a control that could not tell drafts apart would make the experiment trivial.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import time
from collections.abc import Sequence
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from libs.common.features.extractors import EXTRACTORS, SIZES, Extractor, extractor
from libs.common.features.online_view import InvalidViewValue, OnlineView, decode_dog, decode_stats
from libs.common.features.state import DogState, StateView, Stats
from services.scorer import metrics as m
from services.scorer.predict import DEADLINE, Scored, record_metrics, safe_baseline, score
from services.scorer.registry import Registry, Snapshot
from services.scorer.routing import Router
from services.scorer.settings import ScorerSettings
from services.scorer.view_reader import ViewReader

log = logging.getLogger(__name__)

MAX_CANDIDATES = 32
MIN_TIME_MS = 1_262_304_000_000  # 2010-01-01, as the collector
MAX_AHEAD_MS = 366 * 86_400_000  # a draft may be planned up to a year ahead


# -- the request -------------------------------------------------------------------------------


class DogProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    breed: str = Field(min_length=1, max_length=100)
    size: str = Field(description="TOY, SMALL, MEDIUM, LARGE or GIANT.")
    age_months: int | None = Field(None, ge=0, le=480)

    @field_validator("size")
    @classmethod
    def _size(cls, v: str) -> str:
        if v.upper() not in SIZES:
            raise ValueError(f"size {v!r} is not one of {', '.join(SIZES)}")
        return v.upper()


class Draft(BaseModel):
    """A pupdate not posted yet (the ``pupdates`` fields the features depend on)."""

    model_config = ConfigDict(extra="forbid")

    dog_id: str = Field(min_length=1, max_length=128)
    posted_at: int | None = Field(None, description="When it would be posted (ms); default: now.")
    hashtags: list[str] = Field(default_factory=list, max_length=30)
    caption: str | None = Field(None, max_length=4096)
    photo_filter: str | None = Field(None, max_length=100)
    dog: DogProfile
    dog_followers: int = Field(ge=0, le=10_000_000_000)
    country: str | None = Field(None, pattern=r"^[A-Za-z]{2}$")

    @field_validator("dog_id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("dog_id is blank")
        return v

    @field_validator("hashtags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        for tag in v:
            if not 1 <= len(tag) <= 100:
                raise ValueError(f"hashtag {tag[:20]!r} must have 1 to 100 characters")
        return v

    @field_validator("posted_at")
    @classmethod
    def _posted(cls, v: int | None) -> int | None:
        if v is None:
            return v
        now = int(time.time() * 1000)
        if v < MIN_TIME_MS:
            raise ValueError(f"posted_at {v} is before 2010 (milliseconds expected)")
        if v > now + MAX_AHEAD_MS:
            raise ValueError(f"posted_at {v} is more than a year ahead")
        return v

    def pupdate(self, now_ms: int) -> dict[str, Any]:
        return {
            "pupdate_id": "",
            "dog_id": self.dog_id,
            "posted_at": self.posted_at if self.posted_at is not None else now_ms,
            "hashtags": self.hashtags,
            "caption": self.caption,
            "photo_filter": self.photo_filter,
            "dog": self.dog.model_dump(),
            "dog_followers": self.dog_followers,
            "country": self.country,
        }


class PredictRequest(BaseModel):
    """``{"draft": {...}}`` or ``{"candidates": [{...}, ...]}`` (1 to 32)."""

    model_config = ConfigDict(extra="forbid")

    draft: Draft | None = None
    candidates: list[Draft] | None = Field(None, min_length=1, max_length=MAX_CANDIDATES)
    extractor_version: str | None = Field(None, description="Default: the live extractor version.")
    deadline_ms: float | None = Field(None, gt=0, le=10_000, description="Default: the service's.")

    @model_validator(mode="after")
    def _one_form(self) -> PredictRequest:
        if (self.draft is None) == (self.candidates is None):
            raise ValueError('give exactly one of "draft" or "candidates"')
        if self.extractor_version is not None and self.extractor_version not in EXTRACTORS:
            raise ValueError(
                f"unknown extractor_version {self.extractor_version!r}; "
                f"known: {', '.join(sorted(EXTRACTORS))}"
            )
        return self

    @property
    def drafts(self) -> list[Draft]:
        return [self.draft] if self.draft is not None else list(self.candidates or [])


# -- state from the online view ----------------------------------------------------------------

ONLINE, DOG_UNKNOWN, UNAVAILABLE, TIMEOUT = "online", "dog_unknown", "unavailable", "timeout"


def default_state() -> StateView:
    return StateView(DogState(), {}, Stats(), degraded=True)


def state_keys(
    view: OnlineView, pupdates: Sequence[dict], ext: Extractor
) -> tuple[list[str], list[list[str]]]:
    """One key list for all drafts (the overall stats first), and each draft's tags."""
    keys = [f"{view.prefix}overall"]
    seen = {keys[0]: 0}
    tags_of = []
    for p in pupdates:
        tags = ext.tags(p)
        tags_of.append(tags)
        for key in [view.dog_key(p["dog_id"])] + [view.tag_key(ext.version, t) for t in tags]:
            if key not in seen:
                seen[key] = len(keys)
                keys.append(key)
    return keys, tags_of


def states_from(
    view: OnlineView, pupdates: Sequence[dict], ext: Extractor, keys: list[str], tags_of, raw: list
) -> tuple[list[StateView], list[str]]:
    """Each draft's StateView out of one MGET answer (same semantics as OnlineView.read)."""
    # Decoded once per key; a malformed value counts as missing (and is counted once).
    decoded: dict[str, Any] = {}
    dog_prefix = view.dog_key("")
    for key, r in zip(keys, raw, strict=True):
        if key == keys[0]:
            decoded[key] = _decoded(decode_stats, r, "overall", key)
        elif key.startswith(dog_prefix):
            decoded[key] = _decoded(decode_dog, r, "dog", key)
        else:
            decoded[key] = _decoded(decode_stats, r, "tag", key)
    overall = decoded[keys[0]]
    states, notes = [], []
    for p, tags in zip(pupdates, tags_of, strict=True):
        dog = decoded[view.dog_key(p["dog_id"])]
        tag_stats = {}
        for t in tags:
            st = decoded[view.tag_key(ext.version, t)]
            if st is not None:
                tag_stats[t] = st
        degraded = dog is None or overall is None
        states.append(StateView(dog or DogState(), tag_stats, overall or Stats(), degraded=degraded))
        notes.append(ONLINE if not degraded else (DOG_UNKNOWN if overall is not None else UNAVAILABLE))
    return states, notes


# The same bytes decode to the same state: the overall stats and a popular hashtag's are read by
# nearly every request and change only as likes mature, so each distinct value is decoded once.
# The decoded objects are shared, read-only here: extraction is pure (libs/common/features).
_DECODED: dict[tuple[Any, bytes], Any] = {}
_DECODED_MAX = 8192


def _decoded(decode: Any, raw: bytes | None, kind: str, key: str) -> Any:
    if raw is None:
        return None
    memo = (decode, raw)
    hit = _DECODED.get(memo)
    if hit is not None:
        return hit
    try:
        value = decode(raw)
    except InvalidViewValue as exc:
        # Per request, so debug only: the counter is what people watch.
        m.WHATIF_VIEW_INVALID.labels(kind).inc()
        log.debug("malformed online view value read as missing", extra={"key": key, "error": str(exc)})
        return None
    if len(_DECODED) >= _DECODED_MAX:
        _DECODED.clear()  # a new generation: cheaper than an LRU's bookkeeping on every hit
    _DECODED[memo] = value
    return value


# -- the historical predictor (the baseline arm's answer) ---------------------------------------

HISTORICAL = "historical"


def historical_likes(ext: Extractor, pupdate: dict, state: StateView) -> float:
    """The dog's historical baseline times how the draft's hashtags have done against everyone.

    ``baseline * mean(hashtag mean likes) / overall mean likes`` over the draft's hashtags that
    have a history; the plain baseline when none has (or nothing is known yet). For one dog the
    ranking of drafts is the ranking by the past average likes of pupdates with their hashtags.
    """
    base = safe_baseline(float(ext.baseline(state)))
    overall = state.overall.mean()
    if not overall or overall <= 0:
        return base
    means = [ext._tag_mean(state.tags[t], overall) for t in ext.tags(pupdate) if t in state.tags]
    means = [m for m in means if m is not None]
    if not means:
        return base
    return safe_baseline(base * (sum(means) / len(means)) / overall)


def _predictor(historical: float | None, model_version: str | None) -> str:
    """Which predictor made a row's number: the model, the historical predictor, or the baseline."""
    if historical is not None:
        return HISTORICAL
    return "model" if model_version else "baseline"


# -- answering ---------------------------------------------------------------------------------


class WhatIf:
    def __init__(self, settings: ScorerSettings, registry: Registry, router: Router) -> None:
        self.s = settings
        self.registry = registry
        self.router = router
        self.view = OnlineView(None, settings.topic_prefix)  # key layout only; reads are async here
        self._redis: ViewReader | None = None
        self._predict_cost: dict[str, float] = {}  # seconds a predict call has been taking

    def _client(self) -> ViewReader:
        if self._redis is None:  # used inside the server's event loop
            self._redis = ViewReader(self.s.redis_url, connect_timeout_s=self.s.whatif_deadline_ms / 1000)
        return self._redis

    async def read_states(
        self, pupdates: list[dict], ext: Extractor, timeout: float
    ) -> tuple[list[StateView], list[str]]:
        keys, tags_of = state_keys(self.view, pupdates, ext)
        try:
            if timeout <= 0:  # the budget went on queueing: a read now could only be cancelled
                raise TimeoutError
            async with asyncio.timeout(timeout):  # unlike wait_for, no task of its own per read
                raw = await self._client().mget(keys)
        except TimeoutError:
            m.WHATIF_STATE_DEGRADED.labels(TIMEOUT).inc(len(pupdates))
            return [default_state() for _ in pupdates], [TIMEOUT] * len(pupdates)
        except (redis.RedisError, OSError) as exc:
            m.WHATIF_STATE_DEGRADED.labels(UNAVAILABLE).inc(len(pupdates))
            log.debug("online view unavailable", extra={"error": str(exc)})
            return [default_state() for _ in pupdates], [UNAVAILABLE] * len(pupdates)
        states, notes = states_from(self.view, pupdates, ext, keys, tags_of, raw)
        for note in notes:
            if note != ONLINE:
                m.WHATIF_STATE_DEGRADED.labels(note).inc()
        return states, notes

    async def predict(self, req: PredictRequest, started: float | None = None) -> dict[str, Any]:
        """``started``: time.perf_counter() when the request arrived (default: now)."""
        if started is None:
            started = time.perf_counter()
        deadline_s = (req.deadline_ms or self.s.whatif_deadline_ms) / 1000
        ext = extractor(req.extractor_version or self.s.whatif_extractor_version)
        now_ms = int(time.time() * 1000)
        drafts = req.drafts
        pupdates = [d.pupdate(now_ms) for d in drafts]
        budget = started + deadline_s * self.s.whatif_state_budget - time.perf_counter()
        states, notes = await self.read_states(pupdates, ext, max(budget, 0.0))
        # Little-endian doubles, as the stream's feature vectors (struct: half the cost of numpy).
        pack = _row_packer(len(ext.names))
        values = [pack(*ext.extract(p, st)) for p, st in zip(pupdates, states, strict=True)]
        baselines = [float(ext.baseline(st)) for st in states]
        snapshot = self.registry.snapshot
        n = len(drafts)
        remaining = deadline_s - (time.perf_counter() - started)
        scored: Scored | None = None
        # Predicting a few rows takes tens of microseconds: inline, as long as what is left of
        # the deadline covers what predict has been taking (an EWMA per extractor version).
        if remaining > self._predict_cost.get(ext.version, 0.0):
            t0 = time.perf_counter()
            scored = score(
                snapshot,
                self.router,
                extractors=[ext.version] * n,
                dogs=[d.dog_id.encode() for d in drafts],
                names=[ext.names] * n,
                values=values,
                baselines=baselines,
                path="whatif",
            )
            took = time.perf_counter() - t0
            cost = self._predict_cost.get(ext.version)
            self._predict_cost[ext.version] = took if cost is None else 0.8 * cost + 0.2 * took
        if scored is None:
            scored = _deadline_fallback(snapshot, self.router, ext.version, drafts, baselines)
        record_metrics(scored, "whatif")
        historical = [
            historical_likes(ext, p, st) if arm == "baseline" and reason is None else None
            for p, st, arm, reason in zip(pupdates, states, scored.arm, scored.reason, strict=True)
        ]
        rows = [
            {
                "index": i,
                "predicted_likes": scored.predicted[i] if historical[i] is None else historical[i],
                "predictor": _predictor(historical[i], scored.model_version[i]),
                "model_version": scored.model_version[i],
                "extractor_version": ext.version,
                "arm": scored.arm[i],
                "fallback": scored.reason[i] is not None,
                "fallback_reason": scored.reason[i],
                "baseline": safe_baseline(baselines[i]),
                "state": notes[i],
            }
            for i in range(n)
        ]
        rows.sort(key=lambda r: (-r["predicted_likes"], r["index"]))
        elapsed = time.perf_counter() - started
        m.WHATIF_SECONDS.observe(elapsed)
        return {
            "predictions": rows,
            "best_index": rows[0]["index"],
            "registry": {"generation": snapshot.generation, "synced": snapshot.synced},
            "elapsed_ms": round(elapsed * 1000, 3),
            "deadline_ms": deadline_s * 1000,
        }

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


@functools.cache
def _row_packer(width: int) -> Any:
    return struct.Struct(f"<{width}d").pack


def _deadline_fallback(
    snapshot: Snapshot, router: Router, ev: str, drafts: Sequence[Draft], baselines: Sequence[float]
) -> Scored:
    n = len(drafts)
    arms = [snapshot.resolve(ev, snapshot.weights.arm_at(router.point(d.dog_id.encode())))[0] for d in drafts]
    reasons = [None if a == "baseline" else DEADLINE for a in arms]
    out = Scored(
        predicted=[safe_baseline(b) for b in baselines],
        raw=[None] * n,
        model_version=[None] * n,
        arm=arms,
        reason=reasons,
    )
    out.counts.update((a, None) for a in arms)
    out.fallbacks.update(r for r in reasons if r is not None)
    return out
