"""What the ``models`` topic says, as the supervisor needs it: a pure state machine.

Every model event is applied once (by ``event_id``) in topic order, so every process that reads
the topic from the beginning holds the same state, and the supervisor's *decided* state after a
restart is exactly what it decided before (never a decision taken twice).

It keeps, per version: the PUBLISHED metadata (extractor version, validation quantiles, metrics),
the status (``active``, ``paused``, ``retired``), its history of decisions, and since when the
automatic policies judge it (``evidence_since``: an operator's RESUMED or ACTIVATED starts the
evidence afresh, so old bad figures cannot re-pause a version a person just resumed).

The fold and the selection rule (champion, challenger, usable) are the shared
:class:`libs.common.models_ledger.ModelsLedger`, the very rule the scorer serves by, because a
prediction that fell back has no ``model_version``.

:meth:`Catalog.serving_at` answers "which version served this extractor version and arm at
time t" from the timeline of those selections, and says when the answer is ambiguous (a change
within a grace period of t: the scorer applies events within a second of their writing).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from libs.common.models_ledger import ARMS, Arm, EventKind, ModelsLedger

CHAMPION, CHALLENGER, BASELINE = Arm.CHAMPION, Arm.CHALLENGER, Arm.BASELINE
__all__ = ["ARMS", "BASELINE", "CHALLENGER", "CHAMPION", "Catalog", "Decision", "Version"]
STATUS_ACTIVE, STATUS_PAUSED, STATUS_RETIRED = "active", "paused", "retired"


@dataclass
class Decision:
    """One status event about a version, as people read it."""

    kind: str
    event_id: str
    created_at: int
    reason: str
    actor: str
    arm: str | None = None
    arm_weights: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "event_id": self.event_id,
            "created_at": self.created_at,
            "reason": self.reason,
            "actor": self.actor,
            "arm": self.arm,
            "arm_weights": self.arm_weights,
            "metrics": self.metrics,
            "params": self.params,
        }


@dataclass
class Version:
    model_version: str
    extractor_version: str
    published: bool = False
    created_at: int = 0
    validation_quantiles: tuple[float, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    actor: str = ""
    status: str = STATUS_ACTIVE
    evidence_since: int = 0  # ms: automatic policies judge only predictions from here on
    history: list[Decision] = field(default_factory=list)

    @property
    def events(self) -> int:
        """Status events applied so far: the sequence number of the next decision's event_id."""
        return len(self.history)


def _is_operator(actor: str) -> bool:
    return actor.startswith("operator")


@dataclass
class Catalog(ModelsLedger):
    versions: dict[str, Version] = field(default_factory=dict)
    # extractor -> the experiment's start (ms): the last ACTIVATED that changed its arms or weights
    epoch_start: dict[str, int] = field(default_factory=dict)
    weights_changed_at: int = 0
    # extractor -> [(created_at, champion, challenger)] after every event that touched it
    timeline: dict[str, list[tuple[int, str | None, str | None]]] = field(default_factory=dict)
    events_read: int = 0

    # -- applying events ---------------------------------------------------------------------

    def apply(self, event: Mapping[str, Any]) -> bool:
        """Apply one ``model_event`` record; True when it was new (not applied before)."""
        weights_before = self.weights
        if super().apply(event) is None:
            return False
        self.events_read += 1
        version = event["model_version"]
        kind = event.get("kind")
        created_at = int(event.get("created_at") or 0)
        ev = event.get("extractor_version") or ""
        v = self.versions.get(version)
        if v is None:
            v = self.versions[version] = Version(version, ev)
        if kind == EventKind.PUBLISHED:
            if not v.published:
                v.published = True
                v.extractor_version = ev or v.extractor_version
                v.created_at = created_at
                v.validation_quantiles = tuple(float(q) for q in event.get("validation_quantiles") or ())
                v.metrics = dict(event.get("metrics") or {})
                v.reason = event.get("reason") or ""
                v.actor = event.get("actor") or ""
            self._mark(v.extractor_version, created_at)
            return True
        decision = Decision(
            kind=str(kind),
            event_id=event.get("event_id") or "",
            created_at=created_at,
            reason=event.get("reason") or "",
            actor=event.get("actor") or "",
            arm=event.get("arm"),
            arm_weights=dict(event.get("arm_weights") or {}),
            metrics=dict(event.get("metrics") or {}),
            params=dict(event.get("params") or {}),
        )
        v.history.append(decision)
        status = self.status(version)
        v.status = STATUS_ACTIVE if status == "published" else status
        if kind == EventKind.ACTIVATED:
            if (ev or v.extractor_version) and (decision.arm or CHAMPION) in (CHAMPION, CHALLENGER):
                key = ev or v.extractor_version
                self.epoch_start[key] = max(self.epoch_start.get(key, 0), created_at)
            if self.weights != weights_before:
                self.weights_changed_at = max(self.weights_changed_at, created_at)
        if kind in (EventKind.RESUMED, EventKind.ACTIVATED) and _is_operator(decision.actor):
            v.evidence_since = max(v.evidence_since, created_at)
        self._mark(v.extractor_version, created_at)
        return True

    def _mark(self, ev: str, created_at: int) -> None:
        if not ev:
            return
        line = self.timeline.setdefault(ev, [])
        entry = (created_at, self.champion(ev), self.challenger(ev))
        if line and line[-1][1:] == entry[1:]:
            return
        # created_at comes from writers' clocks: keep the line sorted even if they disagree
        if line and created_at < line[-1][0]:
            entry = (line[-1][0], entry[1], entry[2])
        line.append(entry)

    # -- selection (the ledger's rule) ----------------------------------------------------------

    def serving_at(self, ev: str, arm: str, t_ms: int, grace_ms: int) -> tuple[str | None, bool]:
        """(version serving ``ev``/``arm`` at ``t_ms``, sure).

        Not sure when the selection changed within ``grace_ms`` of ``t_ms`` to another version
        (the scorer may not have swapped yet, or already had), or before anything was known.
        """
        if arm == BASELINE:
            return None, True
        line = self.timeline.get(ev)
        if not line:
            return None, False

        def pick(entry: tuple[int, str | None, str | None]) -> str | None:
            return (entry[2] or entry[1]) if arm == CHALLENGER else entry[1]

        lo = bisect.bisect_right(line, t_ms - grace_ms, key=lambda e: e[0]) - 1
        at = bisect.bisect_right(line, t_ms, key=lambda e: e[0]) - 1
        hi = bisect.bisect_right(line, t_ms + grace_ms, key=lambda e: e[0]) - 1
        if at < 0:
            return None, False
        version = pick(line[at])
        sure = lo >= 0 and all(pick(line[j]) == version for j in range(lo, hi + 1))
        return version, sure

    def last_good(self, ev: str, *, excluding: str) -> str | None:
        """The version to serve instead of ``excluding``: the previous champion activation that is
        still usable, else the newest usable published version other than it."""
        for v in reversed(self.order.get(ev, [])):
            if v == excluding:
                continue
            ver = self.versions[v]
            if self.usable(v) and any(
                d.kind == EventKind.ACTIVATED and (d.arm or CHAMPION) == CHAMPION for d in ver.history
            ):
                return v
        for v in reversed(self.order.get(ev, [])):
            if v != excluding and self.usable(v):
                return v
        return None

    def experiment_start(self, ev: str) -> int:
        return max(self.epoch_start.get(ev, 0), self.weights_changed_at)

    def roles(self, version: str) -> list[str]:
        v = self.versions.get(version)
        if v is None:
            return []
        out = []
        if self.champion(v.extractor_version) == version:
            out.append(CHAMPION)
        if self.challenger(v.extractor_version) == version:
            out.append(CHALLENGER)
        return out
