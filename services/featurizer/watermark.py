"""The event-time watermark: "no fact earlier than W will still arrive".

Per input partition, the newest event time read so far. A partition with a backlog holds the
watermark back to its own progress (its older facts are still coming); a partition that is
caught up with its end offset does not (nothing is waiting there). When every partition has
been caught up for ``idle_flush_ms`` of wall time, the stream is quiet and the watermark moves
past the newest fact, so the last postings of a finished run are not held forever.
"""

from __future__ import annotations

import time

NEVER = -(2**62)


class Watermark:
    def __init__(self, lateness_ms: int, idle_flush_ms: int) -> None:
        self.lateness_ms = lateness_ms
        self.idle_flush_s = idle_flush_ms / 1000
        self.newest: dict[tuple[str, int], int] = {}
        self.caught_up: dict[tuple[str, int], bool] = {}
        self.quiet_since: float | None = None

    def observe(self, key: tuple[str, int], event_time: int) -> None:
        if event_time > self.newest.get(key, NEVER):
            self.newest[key] = event_time

    def set_caught_up(self, key: tuple[str, int], caught_up: bool) -> None:
        self.caught_up[key] = caught_up

    def current(self, now: float | None = None) -> int:
        if not self.caught_up:
            return NEVER
        now = time.monotonic() if now is None else now
        newest = max(self.newest.values(), default=NEVER)
        behind = [self.newest.get(k, NEVER) for k, done in self.caught_up.items() if not done]
        if behind:
            self.quiet_since = None
            low = min(behind)
            return NEVER if low == NEVER else low - self.lateness_ms
        if self.quiet_since is None:
            self.quiet_since = now
        if now - self.quiet_since >= self.idle_flush_s and newest != NEVER:
            return newest + 1
        return NEVER if newest == NEVER else newest - self.lateness_ms
