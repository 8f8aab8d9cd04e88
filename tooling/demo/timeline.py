"""What the demo itself did and when (wall ms): phases, the rogue release, the chaos kill.

The topics say what the system did; this says what the demo did to it, so the report can put
both on one timeline. Written into report.json as is.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class RunLog:
    events: list[dict[str, Any]] = field(default_factory=list)
    marks: dict[str, int] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def mark(self, name: str, at: int | None = None) -> int:
        at = at if at is not None else now_ms()
        with self._lock:
            self.marks[name] = at
        return at

    def event(self, kind: str, text: str, **extra: Any) -> None:
        with self._lock:
            self.events.append({"at": now_ms(), "kind": kind, "text": text} | extra)

    def fact(self, key: str, value: Any) -> None:
        with self._lock:
            self.facts[key] = value

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"marks": dict(self.marks), "events": list(self.events), "facts": dict(self.facts)}
