"""The featurizer's deterministic core: event-time sequencing, point-in-time state and labels.

Facts arrive in Kafka's order, which across partitions and topics is not event-time order.
The engine buffers them and releases them in event-time order once the watermark (supplied by
the caller: "no event earlier than W will still arrive") has passed them:

- a pupdate released at ``posted_at`` gets features from the state as of that moment, which
  includes exactly the pupdates whose label horizon closed at or before ``posted_at``;
- a pupdate's horizon closes at ``posted_at + horizon``; its label is the number of its likes
  with ``posted_at <= liked_at < close``; the instance (features as of posting + label) is
  emitted and its likes folded into the dog's, the hashtags' and the global stats.

Ties are broken by (time, closures before postings, pupdate_id), so the output is a pure
function of the set of facts, whatever order they came in: a replay, a second worker or an
offline batch computation all get the same values. A like that arrives after its pupdate's
horizon was closed is counted as late (a metric), never silently folded into a closed label.

A like is counted once per ``event_id``: the collector forgets the ids it has seen after a
while, so a like re-sent later can reach the facts twice. The ids are kept per pupdate only
while its horizon is open (its label can still change); they are dropped when it closes.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from libs.common.features.extractors import Extractor
from libs.common.features.state import DogState, StateView, Stats

MAX_POSTED_AT_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last time datetime can hold

CLOSE, POST = 0, 1  # closures sort before postings at the same millisecond
# What became of a pupdate handed to the engine (``add_pupdate``).
ADDED, DUPLICATE, UNLABELLED = "added", "duplicate", "unlabelled"


@dataclass
class OpenPupdate:
    pupdate: dict[str, Any]
    source: tuple[int, int] | None  # (partition, offset) of the fact, for ownership and progress
    close_at: int
    likes: int = 0
    features: dict[str, list[float]] = field(default_factory=dict)
    baselines: dict[str, float] = field(default_factory=dict)
    tags: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class FeaturesOut:
    pupdate: dict[str, Any]
    version: str
    values: list[float]
    baseline: float
    source: tuple[int, int] | None


@dataclass(frozen=True)
class InstanceOut(FeaturesOut):
    """The features as of posting, labelled with the likes counted when the horizon closed."""

    likes: int
    close_at: int


@dataclass
class Counters:
    pupdates: int = 0
    likes_counted: int = 0
    likes_after_horizon: int = 0
    likes_late: int = 0
    likes_orphaned: int = 0
    pupdates_late: int = 0
    pupdates_unlabelled: int = 0
    duplicates: int = 0
    likes_duplicate: int = 0


class FeatureEngine:
    def __init__(self, extractors: Iterable[Extractor], *, horizon_ms: int) -> None:
        self.extractors = list(extractors)
        if not self.extractors:
            raise ValueError("at least one extractor version")
        self.horizon_ms = horizon_ms
        self.watermark = -(2**62)
        self.dogs: dict[str, DogState] = {}
        self.tag_stats: dict[str, dict[str, Stats]] = {e.version: {} for e in self.extractors}
        self.overall = Stats()
        self.open: dict[str, OpenPupdate] = {}
        # Closed pupdate ids are kept one more horizon, to tell late likes from orphans.
        self.closed: dict[str, int] = {}  # pupdate_id -> close_at
        self._closed_order: deque[tuple[int, str]] = deque()
        self.orphan_likes: dict[str, list[int]] = {}  # pupdate not seen yet
        self._early_likes: dict[str, int] = {}  # pupdate seen, not released yet; in its window
        # event_ids of the likes of each pupdate whose horizon has not closed (or not arrived)
        self._like_ids: dict[str, set[str]] = {}
        self.like_ids_kept = 0
        self._queue: list[tuple[int, int, str]] = []
        self._pending_posts: dict[str, tuple[dict[str, Any], tuple[int, int] | None]] = {}
        self._unlabelled: set[str] = set()  # arrived after their horizon had closed: no instance
        self.counters = Counters()

    # -- input -------------------------------------------------------------------------------

    def add_pupdate(self, pupdate: Mapping[str, Any], source: tuple[int, int] | None = None) -> str:
        """ADDED; DUPLICATE (ignored); or UNLABELLED: its horizon had already closed in event
        time (``posted_at + horizon < watermark``), so it gets features but no instance."""
        pid = pupdate["pupdate_id"]
        if pid in self._pending_posts or pid in self.open or pid in self.closed:
            self.counters.duplicates += 1
            return DUPLICATE
        posted_at = int(pupdate["posted_at"])
        if not 0 <= posted_at <= MAX_POSTED_AT_MS:
            # The extractors read posted_at as a calendar time; one they cannot (year 10000, say)
            # raised later, in advance(), and killed the featurizer (found by the fuzz test).
            # Raised here, the caller dead-letters the fact.
            raise ValueError(f"posted_at {posted_at} is not a time the extractors can read")
        outcome = ADDED
        if posted_at < self.watermark:
            # The caller's lateness bound was broken; featurize it now rather than drop it.
            self.counters.pupdates_late += 1
            if posted_at + self.horizon_ms < self.watermark:
                # Its label window is over and instances up to the watermark are already
                # committed: an instance now would fall behind that progress and be lost
                # unseen. The caller dead-letters it instead; it still folds into the
                # statistics at its close, as any pupdate does.
                self.counters.pupdates_unlabelled += 1
                self._unlabelled.add(pid)
                outcome = UNLABELLED
        self._pending_posts[pid] = (dict(pupdate), source)
        heapq.heappush(self._queue, (posted_at, POST, pid))
        for liked_at in self.orphan_likes.pop(pid, ()):
            self._count_like(pid, liked_at)
        return outcome

    def add_like(self, like: Mapping[str, Any]) -> None:
        pid, event_id = like["pupdate_id"], like.get("event_id")
        if event_id and pid not in self.closed:  # a closed label never changes: no ids needed
            ids = self._like_ids.setdefault(pid, set())
            if event_id in ids:
                self.counters.likes_duplicate += 1
                return
            ids.add(event_id)
            self.like_ids_kept += 1
        self._count_like(pid, int(like["liked_at"]))

    def _count_like(self, pid: str, liked_at: int) -> None:
        pending = self._pending_posts.get(pid)
        entry = self.open.get(pid)
        if entry is None and pending is None:
            if pid in self.closed:
                if liked_at >= self.closed[pid]:
                    self.counters.likes_after_horizon += 1
                else:
                    self.counters.likes_late += 1
            else:
                # Its pupdate has not arrived yet (another topic): keep it until it does.
                self.orphan_likes.setdefault(pid, []).append(liked_at)
            return
        posted_at = int((pending[0] if pending else entry.pupdate)["posted_at"])
        if liked_at >= posted_at + self.horizon_ms:
            self.counters.likes_after_horizon += 1
        elif liked_at < posted_at:
            self.counters.likes_orphaned += 1  # impossible after the collector; never counted
        elif entry is not None:
            entry.likes += 1
            self.counters.likes_counted += 1
        else:
            self._early_likes[pid] = self._early_likes.get(pid, 0) + 1

    # -- progress ----------------------------------------------------------------------------

    def advance(self, watermark: int) -> tuple[list[FeaturesOut], list[InstanceOut]]:
        """Release everything strictly before ``watermark`` in event-time order."""
        self.watermark = max(self.watermark, watermark)
        features: list[FeaturesOut] = []
        instances: list[InstanceOut] = []
        while self._queue and self._queue[0][0] < self.watermark:
            at, kind, pid = heapq.heappop(self._queue)
            if kind == POST:
                features.extend(self._post(pid))
            else:
                instances.extend(self._close(pid, at))
        self._prune()
        return features, instances

    def _prune(self) -> None:
        while self._closed_order and self._closed_order[0][0] + self.horizon_ms < self.watermark:
            self.closed.pop(self._closed_order.popleft()[1], None)
        # A like is never earlier than its pupdate, so once the watermark passes a like whose
        # pupdate is still unknown, that pupdate is not coming: the like is an orphan.
        if self.orphan_likes:
            for pid in [
                p for p, ts in self.orphan_likes.items() if max(ts) < self.watermark - self.horizon_ms
            ]:
                self.counters.likes_orphaned += len(self.orphan_likes.pop(pid))
                self._forget_like_ids(pid)

    def _forget_like_ids(self, pid: str) -> None:
        self.like_ids_kept -= len(self._like_ids.pop(pid, ()))

    def _post(self, pid: str) -> list[FeaturesOut]:
        pupdate, source = self._pending_posts.pop(pid)
        posted_at = int(pupdate["posted_at"])
        dog = self.dogs.setdefault(pupdate["dog_id"], DogState())
        entry = OpenPupdate(pupdate, source, posted_at + self.horizon_ms, self._early_likes.pop(pid, 0))
        self.counters.likes_counted += entry.likes
        out = []
        for ex in self.extractors:
            tags = ex.tags(pupdate)
            stats = self.tag_stats[ex.version]
            view = StateView(dog, {t: stats[t] for t in tags if t in stats}, self.overall)
            values = ex.extract(pupdate, view)
            baseline = ex.baseline(view)
            entry.features[ex.version] = values
            entry.baselines[ex.version] = baseline
            entry.tags[ex.version] = tags
            out.append(FeaturesOut(pupdate, ex.version, values, baseline, source))
        dog.posted(posted_at)
        self.open[pid] = entry
        heapq.heappush(self._queue, (entry.close_at, CLOSE, pid))
        self.counters.pupdates += 1
        return out

    def _close(self, pid: str, close_at: int) -> list[InstanceOut]:
        entry = self.open.pop(pid)
        self.closed[pid] = close_at
        self._forget_like_ids(pid)
        self._closed_order.append((close_at, pid))
        self.dogs[entry.pupdate["dog_id"]].matured.add(entry.likes)
        self.overall.add(entry.likes)
        labelled = pid not in self._unlabelled
        self._unlabelled.discard(pid)
        out = []
        for ex in self.extractors:
            stats = self.tag_stats[ex.version]
            for tag in entry.tags[ex.version]:
                stats.setdefault(tag, Stats()).add(entry.likes)
            if not labelled:
                continue
            out.append(
                InstanceOut(
                    pupdate=entry.pupdate,
                    version=ex.version,
                    values=entry.features[ex.version],
                    baseline=entry.baselines[ex.version],
                    source=entry.source,
                    likes=entry.likes,
                    close_at=close_at,
                )
            )
        return out

    # -- introspection -----------------------------------------------------------------------

    @property
    def open_horizons(self) -> int:
        return len(self.open)

    @property
    def buffered(self) -> int:
        return len(self._pending_posts)
