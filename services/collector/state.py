"""What the collector remembers, all of it rebuilt from its own outputs on start.

* ``seen``: event_ids of accepted facts, to drop exact re-sends.
* ``dogs``: dog_id -> the latest profile filed with one of its pupdates (1.x apps send none).
* ``pupdates``: pupdate_id -> posted_at, to judge likes.
* ``dead``: raw (topic, partition, offset) positions already dead-lettered, so re-reading a
  range after a crash never writes a dead letter twice.

Memory is bounded twice over: entries older than the state window (``state_window_s``, by the
time the fact was written) are evicted, and each structure keeps at most its ``max_*`` newest
entries. The same rule applies at run time and when rebuilding from the topics, so a restart
knows exactly what the process knew before (up to eviction order among records of the same
millisecond). A re-send arriving after its first copy was evicted is accepted again; downstream
readers that must be exact key their state by event_id as well.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import Any


class BoundedSet:
    """A set that forgets its oldest members: past ``max_size`` or older than a cutoff."""

    __slots__ = ("_members", "_order", "evicted", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._members: set[Hashable] = set()
        self._order: deque[tuple[int, Hashable]] = deque()
        self.evicted = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._members

    def __len__(self) -> int:
        return len(self._members)

    def add(self, key: Hashable, ts_ms: int) -> bool:
        """Remember ``key`` as of ``ts_ms``; False when it was already there."""
        if key in self._members:
            return False
        self._members.add(key)
        self._order.append((ts_ms, key))
        if len(self._members) > self.max_size:
            self._pop()
        return True

    def discard(self, key: Hashable) -> None:
        self._members.discard(key)  # its order entry is skipped when it reaches the front

    def _pop(self) -> None:
        while self._order:
            _ts, key = self._order.popleft()
            if key in self._members:
                self._members.remove(key)
                self.evicted += 1
                return

    def evict_older_than(self, cutoff_ms: int) -> int:
        n = 0
        order, members = self._order, self._members
        while order and order[0][0] < cutoff_ms:
            _ts, key = order.popleft()
            if key in members:
                members.remove(key)
                n += 1
        self.evicted += n
        return n


class BoundedMap:
    """A dict that forgets its least recently written entries: past ``max_size`` or too old."""

    __slots__ = ("_data", "evicted", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._data: OrderedDict[Hashable, tuple[int, Any]] = OrderedDict()
        self.evicted = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable) -> Any | None:
        item = self._data.get(key)
        return None if item is None else item[1]

    def put(self, key: Hashable, value: Any, ts_ms: int) -> None:
        data = self._data
        if key in data:
            data.move_to_end(key)
        data[key] = (ts_ms, value)
        if len(data) > self.max_size:
            data.popitem(last=False)
            self.evicted += 1

    def evict_older_than(self, cutoff_ms: int) -> int:
        n = 0
        data = self._data
        while data:
            key = next(iter(data))
            if data[key][0] >= cutoff_ms:
                break
            del data[key]
            n += 1
        self.evicted += n
        return n


class CollectorState:
    """The four structures, with the rules for filing a fact into them."""

    def __init__(
        self,
        *,
        window_ms: int,
        max_seen: int,
        max_pupdates: int,
        max_dogs: int,
        max_dead_positions: int,
    ) -> None:
        self.window_ms = window_ms
        self.seen = BoundedSet(max_seen)
        self.pupdates = BoundedMap(max_pupdates)
        self.dogs = BoundedMap(max_dogs)  # dog_id -> (posted_at, profile)
        self.dead = BoundedSet(max_dead_positions)
        # raw (topic, partition) -> highest offset any collector wrote an output for; re-reads
        # at or below it after a restart are replays, not re-sends.
        self.replay_marks: dict[tuple[str, int], int] = {}

    def file_pupdate(
        self, event_id: str, pupdate_id: str, dog_id: str, posted_at: int, profile: dict, ts_ms: int
    ) -> None:
        self.seen.add(event_id, ts_ms)
        self.pupdates.put(pupdate_id, posted_at, ts_ms)
        known = self.dogs.get(dog_id)
        # Cross-partition arrival order is arbitrary; the profile of the latest post wins, and
        # any post keeps the dog fresh.
        if known is None or posted_at >= known[0]:
            known = (posted_at, profile)
        self.dogs.put(dog_id, known, ts_ms)

    def file_like(self, event_id: str, ts_ms: int) -> None:
        self.seen.add(event_id, ts_ms)

    def file_dead(self, topic: str, partition: int, offset: int, ts_ms: int) -> None:
        self.dead.add((topic, partition, offset), ts_ms)

    def mark_source(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        if offset > self.replay_marks.get(key, -1):
            self.replay_marks[key] = offset

    def profile(self, dog_id: str) -> dict | None:
        known = self.dogs.get(dog_id)
        return None if known is None else known[1]

    def evict(self, now_ms: int) -> int:
        cutoff = now_ms - self.window_ms
        return (
            self.seen.evict_older_than(cutoff)
            + self.pupdates.evict_older_than(cutoff)
            + self.dogs.evict_older_than(cutoff)
            + self.dead.evict_older_than(cutoff)
        )

    def sizes(self) -> dict[str, int]:
        return {
            "seen": len(self.seen),
            "pupdates": len(self.pupdates),
            "dogs": len(self.dogs),
            "dead_positions": len(self.dead),
        }
