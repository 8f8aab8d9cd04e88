"""The online view in Redis: per-dog and per-hashtag state as of the featurizer's watermark.

Written by the featurizer, read by the scorer's what-if API. Redis is a cache of state that is
always rebuildable from the fact topics; when it is missing or down, readers get defaults and a
``degraded`` flag, never an exception.

Keys (``P`` = POOCH_TOPIC_PREFIX, so tests and tenants never collide):
  ``P view:dog:<dog_id>``             JSON DogState
  ``P view:tag:<version>:<tag>``      JSON Stats
  ``P view:overall``                  JSON Stats
  ``P view:watermark``                event time (ms) the view is correct as of
  ``P view:epoch:<instance_id>``      set by a featurizer once it has written its whole view;
                                      gone means Redis lost the view (FLUSHALL, a restart
                                      without persistence, eviction) and it must be rewritten

Every key may carry a TTL (the featurizer's ``view_ttl_s``), which the featurizer refreshes
by rewriting its whole view well before it runs out: keys outlive their writer by at most the
TTL (an abandoned topic prefix, a retired extractor version), never forever.

Values are read strictly: one that is not the JSON its key should hold (wrong types, negative
or non-finite numbers) is :class:`InvalidViewValue`, which readers treat as missing.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import orjson
import redis

from libs.common.features.extractors import Extractor
from libs.common.features.state import DogState, StateView, Stats

log = logging.getLogger(__name__)


class OnlineView:
    def __init__(self, client: redis.Redis, prefix: str = "") -> None:
        self.client = client
        self.prefix = f"{prefix}view:"

    def dog_key(self, dog_id: str) -> str:
        return f"{self.prefix}dog:{dog_id}"

    def tag_key(self, version: str, tag: str) -> str:
        return f"{self.prefix}tag:{version}:{tag}"

    @property
    def overall_key(self) -> str:
        return f"{self.prefix}overall"

    def epoch_key(self, instance_id: str) -> str:
        return f"{self.prefix}epoch:{instance_id}"

    def write(
        self,
        dogs: Mapping[str, DogState],
        tags: Mapping[str, Mapping[str, Stats]],
        overall: Stats,
        watermark: int,
        *,
        ttl_s: int = 0,
    ) -> None:
        """Write these values (and the overall stats and watermark); ``ttl_s`` > 0 sets their TTL."""
        values: dict[str, str] = {self.dog_key(d): json.dumps(s.to_dict()) for d, s in dogs.items()}
        for version, stats in tags.items():
            values.update({self.tag_key(version, t): json.dumps(s.to_dict()) for t, s in stats.items()})
        values[self.overall_key] = json.dumps(overall.to_dict())
        values[f"{self.prefix}watermark"] = str(watermark)
        pipe = self.client.pipeline(transaction=False)
        if ttl_s > 0:
            for key, value in values.items():
                pipe.set(key, value, ex=ttl_s)
        else:
            items = list(values.items())
            for i in range(0, len(items), 1000):
                pipe.mset(dict(items[i : i + 1000]))
        pipe.execute()

    def has_epoch(self, instance_id: str) -> bool:
        return bool(self.client.exists(self.epoch_key(instance_id)))

    def set_epoch(
        self, instance_id: str, value: str, *, ttl_s: int = 0, only_if_present: bool = False
    ) -> bool:
        """Mark the view as written; with ``only_if_present``, only if nothing wiped the mark since."""
        done = self.client.set(
            self.epoch_key(instance_id), value, ex=ttl_s if ttl_s > 0 else None, xx=only_if_present
        )
        return bool(done)

    def read(self, pupdate: Mapping[str, Any], extractor: Extractor) -> StateView:
        """State for featurizing a draft now; defaults and degraded=True when Redis fails."""
        tags = extractor.tags(pupdate)
        keys = [self.dog_key(pupdate["dog_id"]), f"{self.prefix}overall"]
        keys += [self.tag_key(extractor.version, t) for t in tags]
        try:
            raw = self.client.mget(keys)
        except redis.RedisError as exc:
            log.warning("online view unavailable; using defaults", extra={"error": str(exc)})
            return StateView(DogState(), {}, Stats(), degraded=True)
        dog, overall, *tag_stats = (
            _or_none(decode_dog, raw[0]),
            _or_none(decode_stats, raw[1]),
            *(_or_none(decode_stats, r) for r in raw[2:]),
        )
        return StateView(
            dog or DogState(),
            {t: st for t, st in zip(tags, tag_stats, strict=True) if st is not None},
            overall or Stats(),
            degraded=dog is None or overall is None,
        )

    def watermark(self) -> int | None:
        value = self.client.get(f"{self.prefix}watermark")
        return int(value) if value is not None else None


class InvalidViewValue(ValueError):
    """A value in the online view that is not what its key holds: read as missing."""


def _or_none(decode: Any, raw: bytes | str | None) -> Any:
    try:
        return decode(raw)
    except InvalidViewValue:
        return None


def _object(raw: bytes | str) -> dict[str, Any]:
    try:
        # orjson: the what-if path decodes one value per dog and hashtag of every draft (profiled:
        # the stdlib's json was a tenth of a request). It refuses what json let through and the
        # checks below refused anyway: NaN, Infinity, counts beyond 64 bits.
        value = orjson.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidViewValue(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidViewValue(f"a JSON {type(value).__name__}, not an object")
    return value


def _count(value: Any, what: str) -> int:
    # bool is an int to Python, and a count that is a float is a writer we do not know
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidViewValue(f"{what} is {value!r}, not a count")
    return value


def _stats(d: Any) -> Stats:
    if not isinstance(d, dict):
        raise InvalidViewValue(f"stats are {type(d).__name__}, not an object")
    likes = d.get("likes")
    if isinstance(likes, bool) or not isinstance(likes, int | float) or not math.isfinite(likes) or likes < 0:
        raise InvalidViewValue(f"likes is {likes!r}, not a finite number >= 0")
    return Stats(_count(d.get("n"), "n"), float(likes))


def decode_stats(raw: bytes | str | None) -> Stats | None:
    """The Stats a ``view:tag:*`` or ``view:overall`` value holds; None when missing."""
    return _stats(_object(raw)) if raw is not None else None


def decode_dog(raw: bytes | str | None) -> DogState | None:
    """The DogState a ``view:dog:*`` value holds; None when missing."""
    if raw is None:
        return None
    d = _object(raw)
    last = d.get("last_posted_at")
    if last is not None:
        _count(last, "last_posted_at")
    matured = d.get("matured")
    return DogState(
        _count(d.get("posts"), "posts"), last, _stats(matured) if matured is not None else Stats()
    )
