"""Virtual event time, and how it maps onto the wall clock.

The generator works purely in virtual milliseconds (``posted_at``, ``liked_at``, the time an
event is due to be sent); it never sleeps and never reads the wall clock, so the same seed
gives the same events however fast they are consumed. Only the real-time runner maps virtual
time to wall time, with ``time_scale`` simulated seconds passing per wall second: at 3,600 a
24-hour label horizon closes in 24 wall seconds, which is what a live demo needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# Posting is busiest when the Americas and Europe are both awake; the world-wide mix of
# countries flattens the curve, hence the modest amplitude.
DIURNAL_AMPLITUDE = 0.45
DIURNAL_PEAK_UTC_HOUR = 19.0


def diurnal_factor(ms: int) -> float:
    """Relative posting rate at virtual time ``ms`` (UTC); averages 1 over a day."""
    hour = (ms % DAY_MS) / HOUR_MS
    return 1.0 + DIURNAL_AMPLITUDE * math.cos(2 * math.pi * (hour - DIURNAL_PEAK_UTC_HOUR) / 24)


@dataclass(frozen=True)
class VirtualClock:
    """Maps virtual event time to seconds of wall time since the run started."""

    start_ms: int
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale must be positive")

    def wall_offset_s(self, virtual_ms: int) -> float:
        """Wall seconds after the start at which virtual time ``virtual_ms`` is reached."""
        return (virtual_ms - self.start_ms) / 1000.0 / self.time_scale

    def virtual_ms(self, wall_offset_s: float) -> int:
        """Virtual time reached ``wall_offset_s`` wall seconds after the start."""
        return self.start_ms + int(wall_offset_s * 1000.0 * self.time_scale)
