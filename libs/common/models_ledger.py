"""The fold of the ``models`` topic, written once: which versions exist, their status, who serves.

The scorer (to serve), the trainer (to know the champion a candidate must beat) and the
supervisor (to know what it is judging) each wrap :class:`ModelsLedger` with only what they add
(artifacts, verification, decision history), so the three can never disagree about it.

* Every event is applied once, by ``event_id``, in topic order: every process that reads the
  topic from the beginning holds the same state. The ids of the newest
  :data:`APPLIED_IDS_KEPT` events are remembered, not all of them: an id is repeated only by a
  producer's retry or a service re-sending the decision it made just before a crash, both a
  few events after the original, while the topic grows for ever. An event repeated further
  back than that would be applied again.
* With a verifier (:mod:`libs.common.signing`), an event without a valid signature from a
  trusted key is refused before it is applied: only the trainer and the supervisor can change
  what serves.
* **Usable** = published, not PAUSED (until RESUMED), not RETIRED, not refused (a wrapper's own
  verdict on the artifact: its sha256 or LightGBM could not load it).
* **Champion** of an extractor version: the version ACTIVATED on the champion arm if it is still
  usable, else the newest usable PUBLISHED version. A paused champion hands over to the last
  good version at once, and before any activation a new version serves as soon as it arrives.
* **Challenger**: the version ACTIVATED on the challenger arm, if usable and not the champion;
  without one, challenger traffic is served (and recorded) as the champion arm.
* **Arm weights**: the last valid ``arm_weights`` an ACTIVATED event set, normalised to sum 1.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from libs.common.signing import ModelEventVerifier

log = logging.getLogger(__name__)


class EventKind(StrEnum):
    PUBLISHED = "PUBLISHED"
    ACTIVATED = "ACTIVATED"
    PAUSED = "PAUSED"
    RESUMED = "RESUMED"
    RETIRED = "RETIRED"


class Arm(StrEnum):
    CHAMPION = "champion"
    CHALLENGER = "challenger"
    BASELINE = "baseline"


# Model events are a few per training run or decision: years of them, and a repeat comes within
# a handful of events of its original.
APPLIED_IDS_KEPT = 100_000

# The order of the arms' slices in the routing hash space: part of the stable assignment.
ARMS: tuple[Arm, ...] = (Arm.CHAMPION, Arm.CHALLENGER, Arm.BASELINE)


def normalise_weights(weights: Mapping[str, float] | None) -> dict[str, float] | None:
    """Weights over the arms summing to 1; None when they cannot be (empty, all zero, negative, NaN)."""
    if not weights:
        return None
    try:
        w = {str(arm): float(weights.get(arm, 0.0) or 0.0) for arm in ARMS}
    except (TypeError, ValueError):
        return None
    if any(not math.isfinite(v) or v < 0 for v in w.values()):
        return None
    total = sum(w.values())
    if total <= 0:
        return None
    return {arm: v / total for arm, v in w.items()}


@dataclass
class ModelsLedger:
    order: dict[str, list[str]] = field(default_factory=dict)  # extractor -> published, oldest first
    extractor: dict[str, str] = field(default_factory=dict)  # published version -> extractor version
    paused: set[str] = field(default_factory=set)
    retired: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)  # version -> why (the wrapper's verdict)
    activated: dict[str, dict[str, str]] = field(default_factory=dict)  # extractor -> arm -> version
    weights: dict[str, float] | None = None
    applied: set[str] = field(default_factory=set)  # the newest applied_ids_kept event ids
    applied_order: deque[str] = field(default_factory=deque)  # the same, oldest first
    applied_ids_kept: int = APPLIED_IDS_KEPT
    # Events it refuses never reach the fold (nor ``applied``: a forged event cannot claim the
    # id of a real one to have that one dropped as a repeat).
    verifier: ModelEventVerifier | None = None

    # -- applying events ---------------------------------------------------------------------

    def apply(self, event: Mapping[str, Any]) -> bool | None:
        """Apply one ``model_event``: None when not applied (a repeated event_id, no version, an
        unknown kind), else whether it changed the ledger."""
        event_id = event.get("event_id") or ""
        version = event.get("model_version") or ""
        if not version or (event_id and event_id in self.applied):
            return None
        kind = event.get("kind")
        if kind not in EventKind.__members__:
            log.warning("unknown model event kind ignored", extra={"kind": kind, "model_version": version})
            return None
        if self.verifier is not None and not self.verifier.accepts(event):
            return None
        if event_id:
            self._remember(event_id)
        if kind == EventKind.PUBLISHED:
            return self.on_published(event)
        if kind == EventKind.PAUSED:
            changed = version not in self.paused
            self.paused.add(version)
        elif kind == EventKind.RESUMED:
            changed = version in self.paused
            self.paused.discard(version)
        elif kind == EventKind.RETIRED:
            changed = version not in self.retired
            self.retired.add(version)
        else:
            changed = self._activate(event, version)
        return changed

    def _remember(self, event_id: str) -> None:
        self.applied.add(event_id)
        self.applied_order.append(event_id)
        while len(self.applied_order) > self.applied_ids_kept:
            self.applied.discard(self.applied_order.popleft())

    def on_published(self, event: Mapping[str, Any]) -> bool:
        """A PUBLISHED event; wrappers extend it with what they keep of the artifact."""
        return self.add_published(event["model_version"], event.get("extractor_version") or "")

    def add_published(self, version: str, extractor_version: str) -> bool:
        if version in self.extractor:
            return False
        self.extractor[version] = extractor_version
        self.order.setdefault(extractor_version, []).append(version)
        return True

    def _activate(self, event: Mapping[str, Any], version: str) -> bool:
        changed = False
        arm = event.get("arm") or Arm.CHAMPION
        ev = event.get("extractor_version") or self.extractor.get(version)
        if ev and arm in (Arm.CHAMPION, Arm.CHALLENGER):
            slots = self.activated.setdefault(ev, {})
            if slots.get(arm) != version:
                slots[arm] = version
                changed = True
            if arm == Arm.CHAMPION and slots.get(Arm.CHALLENGER) == version:  # a challenger promoted
                del slots[Arm.CHALLENGER]
                changed = True
        raw = event.get("arm_weights") or {}
        if raw:
            weights = normalise_weights(raw)
            if weights is None:
                log.warning("ACTIVATED with invalid arm weights ignored", extra={"arm_weights": dict(raw)})
            elif weights != self.weights:
                self.weights = weights
                changed = True
        return changed

    def refuse(self, version: str, why: str) -> None:
        self.refused[version] = why

    # -- selection ---------------------------------------------------------------------------

    def extractor_of(self, version: str) -> str | None:
        return self.extractor.get(version)

    def usable(self, version: str | None) -> bool:
        return (
            version is not None
            and version in self.extractor
            and version not in self.paused
            and version not in self.retired
            and version not in self.refused
        )

    def champion(self, ev: str) -> str | None:
        activated = self.activated.get(ev, {}).get(Arm.CHAMPION)
        if activated and self.usable(activated):
            return activated
        for version in reversed(self.order.get(ev, [])):
            if self.usable(version):
                return version
        return None

    def challenger(self, ev: str) -> str | None:
        activated = self.activated.get(ev, {}).get(Arm.CHALLENGER)
        if activated and self.usable(activated) and activated != self.champion(ev):
            return activated
        return None

    def serving(self, ev: str, arm: str) -> str | None:
        """The version that serves ``arm`` of ``ev`` now (None: the historical baseline)."""
        if arm == Arm.BASELINE:
            return None
        if arm == Arm.CHALLENGER:
            return self.challenger(ev) or self.champion(ev)
        return self.champion(ev)

    def worth_keeping(self, newest: int) -> set[str]:
        """The versions whose artifacts a wrapper keeps in memory: per extractor version the
        ``newest`` published ones not retired, and whatever is champion, challenger or activated.
        Any other non-retired version can still serve again (everything newer paused, an
        ACTIVATED), so a wrapper that dropped its artifact must be able to fetch it back."""
        keep: set[str] = set()
        for ev, versions in self.order.items():
            keep.update([v for v in versions if v not in self.retired][-newest:])
            keep.update(v for v in (self.champion(ev), self.challenger(ev)) if v)
            keep.update(v for v in self.activated.get(ev, {}).values() if v not in self.retired)
        return keep

    def extractors(self) -> list[str]:
        return [ev for ev, versions in self.order.items() if versions]

    def status(self, version: str) -> str:
        if version in self.refused:
            return "refused"
        if version in self.retired:
            return "retired"
        if version in self.paused:
            return "paused"
        return "published"
