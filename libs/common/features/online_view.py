"""The online view in Redis: per-dog and per-hashtag state as of the featurizer's watermark.

Written by the featurizer, read by the scorer's what-if API. Redis is a cache of state that is
always rebuildable from the fact topics; when it is missing or down, readers get defaults and a
``degraded`` flag, never an exception.

Keys (``P`` = POOCH_TOPIC_PREFIX, so tests and tenants never collide):
  ``P view:dog:<dog_id>``             JSON DogState
  ``P view:tag:<version>:<tag>``      JSON Stats
  ``P view:overall``                  JSON Stats
  ``P view:watermark``                event time (ms) the view is correct as of
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

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

    def write(
        self,
        dogs: Mapping[str, DogState],
        tags: Mapping[str, Mapping[str, Stats]],
        overall: Stats,
        watermark: int,
    ) -> None:
        values: dict[str, str] = {self.dog_key(d): json.dumps(s.to_dict()) for d, s in dogs.items()}
        for version, stats in tags.items():
            values.update({self.tag_key(version, t): json.dumps(s.to_dict()) for t, s in stats.items()})
        values[f"{self.prefix}overall"] = json.dumps(overall.to_dict())
        values[f"{self.prefix}watermark"] = str(watermark)
        pipe = self.client.pipeline(transaction=False)
        items = list(values.items())
        for i in range(0, len(items), 1000):
            pipe.mset(dict(items[i : i + 1000]))
        pipe.execute()

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
        dog_raw, overall_raw, *tag_raw = raw
        return StateView(
            DogState.from_dict(_load(dog_raw)),
            {t: Stats.from_dict(_load(r)) for t, r in zip(tags, tag_raw, strict=True) if r is not None},
            Stats.from_dict(_load(overall_raw)),
            degraded=dog_raw is None or overall_raw is None,
        )

    def watermark(self) -> int | None:
        value = self.client.get(f"{self.prefix}watermark")
        return int(value) if value is not None else None


def _load(raw: bytes | str | None) -> Any:
    return json.loads(raw) if raw else None
