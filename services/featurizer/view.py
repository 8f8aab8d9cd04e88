"""Keeping the Redis online view equal to the engine's state, whatever happens to Redis.

Changed dogs and hashtags are written after every cycle. That alone never repairs a view Redis
lost (FLUSHALL, a restart without persistence, eviction): nothing changed, so nothing is
rewritten. So each worker also keeps an epoch key (``view:epoch:<instance_id>``, see
:mod:`libs.common.features.online_view`), set once it has written its *whole* view, and checks
it every ``view_check_s``. Missing, the whole view is rewritten, in slices of
``view_rewrite_batch`` keys per cycle so the loop never stalls on a large state; the epoch is set
again only if it is still there from the start of the rewrite (``SET XX``), so a wipe during the
rewrite starts it over.

With ``view_ttl_s`` > 0 every key expires after that long unless rewritten, and the whole view is
rewritten every third of it: live keys never expire, and those of a featurizer that is gone
(an abandoned topic prefix, an extractor version no longer run) do.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import redis

from libs.common.features.online_view import OnlineView
from services.featurizer import metrics as m
from services.featurizer.engine import FeatureEngine

log = logging.getLogger(__name__)

START, WIPED, REFRESH = "start", "wiped", "refresh"
# Every reason's series born at 0: increase() over a series whose first sample is already 1 is
# 0, so PoochOnlineViewWiped would never see a worker's first wipe.
for _reason in (START, WIPED, REFRESH):
    m.VIEW_REWRITES.labels(_reason)


class ViewWriter:
    def __init__(
        self,
        view: OnlineView,
        engine: FeatureEngine,
        *,
        instance_id: str,
        ttl_s: int,
        check_s: float,
        batch: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.view = view
        self.engine = engine
        self.instance_id = instance_id
        self.ttl_s = ttl_s
        self.check_s = check_s
        self.batch = batch
        self.clock = clock
        self.dirty_dogs: set[str] = set()
        self.dirty_tags: dict[str, set[str]] = defaultdict(set)
        self._next_check = 0.0
        self._complete_at: float | None = None  # when the whole view was last known written
        self._rewrite: list[tuple[str, ...]] | None = None  # what is left of a full rewrite
        self._rewrite_reason = ""
        self._warned = False

    def changed_dog(self, dog_id: str) -> None:
        self.dirty_dogs.add(dog_id)

    def changed_tags(self, version: str, tags: list[str]) -> None:
        self.dirty_tags[version].update(tags)

    def write(self, watermark: int, *, rebuilt: bool) -> None:
        """Write what changed; once the state is rebuilt, keep the whole view present and fresh."""
        try:
            self._write_dirty(watermark)
            if rebuilt:
                self._maybe_start()
                if self._rewrite is not None:
                    self._rewrite_slice(watermark)
        except redis.RedisError as exc:
            if not self._warned:
                log.warning(
                    "online view not written; will retry with the next changes", extra={"error": str(exc)}
                )
                self._warned = True
            return
        self._warned = False

    # -- what changed ------------------------------------------------------------------------

    def _write_dirty(self, watermark: int) -> None:
        if not self.dirty_dogs and not self.dirty_tags:
            return
        dogs = {d: self.engine.dogs[d] for d in self.dirty_dogs if d in self.engine.dogs}
        tags = {
            v: {t: self.engine.tag_stats[v][t] for t in ts if t in self.engine.tag_stats[v]}
            for v, ts in self.dirty_tags.items()
        }
        self.view.write(dogs, tags, self.engine.overall, watermark, ttl_s=self.ttl_s)
        self.dirty_dogs.clear()
        self.dirty_tags.clear()

    # -- the whole view ----------------------------------------------------------------------

    def _maybe_start(self) -> None:
        now = self.clock()
        if self._rewrite is not None or now < self._next_check:
            return
        self._next_check = now + self.check_s
        if not self.view.has_epoch(self.instance_id):
            self._start(START if self._complete_at is None else WIPED)
        elif self._complete_at is None:
            # Epoch from an earlier run of this worker, and the replay wrote every key again.
            self._complete_at = now
        elif self.ttl_s > 0 and now - self._complete_at >= self.ttl_s / 3:
            self._start(REFRESH)

    def _start(self, reason: str) -> None:
        # A snapshot of the names only: values are read when their slice is written, so they
        # are current then, and what appears meanwhile is written as a change.
        work: list[tuple[str, ...]] = [("dog", d) for d in self.engine.dogs]
        for version, stats in self.engine.tag_stats.items():
            work.extend(("tag", version, t) for t in stats)
        work.reverse()  # popped from the end
        self.view.set_epoch(self.instance_id, f"rewriting:{reason}", ttl_s=self.ttl_s)
        self._rewrite, self._rewrite_reason = work, reason
        m.VIEW_REWRITES.labels(reason).inc()
        log_at = log.warning if reason == WIPED else log.info
        log_at(
            "rewriting the whole online view",
            extra={"reason": reason, "keys": len(work), "instance_id": self.instance_id},
        )

    def _rewrite_slice(self, watermark: int) -> None:
        assert self._rewrite is not None
        todo = self._rewrite[-self.batch :]
        dogs: dict[str, Any] = {}
        tags: dict[str, dict[str, Any]] = defaultdict(dict)
        for item in todo:
            if item[0] == "dog":
                dogs[item[1]] = self.engine.dogs[item[1]]
            else:
                tags[item[1]][item[2]] = self.engine.tag_stats[item[1]][item[2]]
        self.view.write(dogs, tags, self.engine.overall, watermark, ttl_s=self.ttl_s)
        del self._rewrite[-self.batch :]
        m.VIEW_KEYS_REWRITTEN.inc(len(todo))
        if self._rewrite:
            return
        self._rewrite = None
        if self.view.set_epoch(self.instance_id, "complete", ttl_s=self.ttl_s, only_if_present=True):
            self._complete_at = self.clock()
            log.info("online view rewritten", extra={"reason": self._rewrite_reason})
        else:  # wiped while it was being rewritten
            self._start(WIPED)
