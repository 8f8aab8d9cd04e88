"""What the ``models`` topic says, as a pure state machine: versions, statuses, activations, weights.

The selection rule (the same one the trainer judges candidates against, so what the trainer
beats is what the scorer serves), per ``extractor_version``:

* **champion**: the newest version ACTIVATED on the champion arm, if it is still usable;
  otherwise the newest PUBLISHED version that is usable. A paused champion therefore hands
  over to the last good version at once, and before any activation a newly published version
  serves as soon as it arrives.
* **challenger**: the version ACTIVATED on the challenger arm, if usable and not the champion.
  Without one, the challenger's share of traffic is served by the champion (and recorded as
  the champion arm: an arm names what actually served).
* **usable** = published, not PAUSED (until RESUMED), not RETIRED, not refused (its artifact
  failed verification or loading).

When no version is usable, the reason a fallback gives is ``paused`` (versions exist but are
paused), ``no_model`` (none for this extractor version and none at all) or
``extractor_mismatch`` (models exist, but for other extractor versions).

Each event is applied once (by ``event_id``); applying the topic's events in order rebuilds
the same state in every process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from libs.common import serving
from libs.common.artifacts import ModelArtifact
from services.scorer.routing import CHALLENGER, CHAMPION, normalise

log = logging.getLogger(__name__)

NO_MODEL = "no_model"
PAUSED = "paused"
EXTRACTOR_MISMATCH = "extractor_mismatch"


@dataclass
class Catalog:
    artifacts: dict[str, ModelArtifact] = field(default_factory=dict)
    order: dict[str, list[str]] = field(default_factory=dict)  # extractor -> versions, publish order
    paused: set[str] = field(default_factory=set)
    retired: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)  # version -> why
    activated: dict[str, dict[str, str]] = field(default_factory=dict)  # extractor -> arm -> version
    weights: dict[str, float] | None = None  # last weights an ACTIVATED record set
    source: dict[str, str] = field(default_factory=dict)  # version -> "topic" | "redis"
    applied: set[str] = field(default_factory=set)  # event ids

    # -- applying events ---------------------------------------------------------------------

    def apply(self, event: Mapping[str, Any]) -> bool:
        """Apply one ``model_event``; True when it changed anything."""
        event_id = event.get("event_id") or ""
        if event_id and event_id in self.applied:
            return False
        kind, version = event.get("kind"), event.get("model_version") or ""
        if not version:
            return False
        if event_id:
            self.applied.add(event_id)
        if kind == "PUBLISHED":
            return self.publish(ModelArtifact.from_event(event), source="topic")
        if kind == "PAUSED":
            if version in self.paused:
                return False
            self.paused.add(version)
            return True
        if kind == "RESUMED":
            if version not in self.paused:
                return False
            self.paused.discard(version)
            return True
        if kind == "RETIRED":
            if version in self.retired:
                return False
            self.retired.add(version)
            return True
        if kind == "ACTIVATED":
            return self._activate(event, version)
        log.warning("unknown model event kind ignored", extra={"kind": kind, "model_version": version})
        return False

    def _activate(self, event: Mapping[str, Any], version: str) -> bool:
        changed = False
        arm = event.get("arm") or CHAMPION
        ev = event.get("extractor_version") or self.extractor_of(version)
        if ev and arm in (CHAMPION, CHALLENGER):
            slots = self.activated.setdefault(ev, {})
            if slots.get(arm) != version:
                slots[arm] = version
                changed = True
            if arm == CHAMPION and slots.get(CHALLENGER) == version:  # a challenger promoted
                del slots[CHALLENGER]
                changed = True
        weights = event.get("arm_weights") or {}
        if weights:
            w = normalise(weights)
            if w is None:
                log.warning(
                    "ACTIVATED with invalid arm weights ignored", extra={"arm_weights": dict(weights)}
                )
            elif w != self.weights:
                self.weights = w
                changed = True
        return changed

    def publish(self, art: ModelArtifact, *, source: str) -> bool:
        """A published version (from the topic, or seeded from the Redis cache)."""
        version = art.model_version
        if version in self.artifacts:
            if source == "topic" and self.source.get(version) != "topic":
                # Confirmed by the record, which also says where it stands in publish order.
                self.source[version] = "topic"
                versions = self.order[art.extractor_version]
                versions.remove(version)
                versions.append(version)
                return True
            return False
        self.artifacts[version] = art
        self.source[version] = source
        versions = self.order.setdefault(art.extractor_version, [])
        versions.append(version)
        if source == "redis":  # the cache has no publish order: use creation time
            versions.sort(key=lambda v: self.artifacts[v].created_at)
        return True

    def refuse(self, version: str, why: str) -> None:
        self.refused[version] = why

    def forget_unconfirmed(self) -> list[str]:
        """Drop versions only the Redis cache knew: the topic is the record, read to its end."""
        gone = [v for v, s in self.source.items() if s != "topic"]
        for v in gone:
            art = self.artifacts.pop(v)
            self.source.pop(v)
            self.order[art.extractor_version].remove(v)
        return gone

    # -- selection ---------------------------------------------------------------------------

    def extractor_of(self, version: str) -> str | None:
        art = self.artifacts.get(version)
        return art.extractor_version if art else None

    def usable(self, version: str) -> bool:
        return (
            version in self.artifacts
            and version not in self.paused
            and version not in self.retired
            and version not in self.refused
        )

    def champion(self, ev: str) -> str | None:
        return serving.champion(self.order.get(ev, []), self.activated.get(ev, {}).get(CHAMPION), self.usable)

    def challenger(self, ev: str) -> str | None:
        activated = self.activated.get(ev, {}).get(CHALLENGER)
        return serving.challenger(activated, self.champion(ev), self.usable)

    def extractors(self) -> list[str]:
        return [ev for ev, versions in self.order.items() if versions]

    def reason_without_model(self, ev: str) -> str:
        """Why records of ``ev`` cannot be served by a model."""
        versions = self.order.get(ev, [])
        if versions:
            return PAUSED if any(v in self.paused for v in versions) else NO_MODEL
        return EXTRACTOR_MISMATCH if self.extractors() else NO_MODEL

    def status(self, version: str) -> str:
        if version in self.refused:
            return "refused"
        if version in self.retired:
            return "retired"
        if version in self.paused:
            return "paused"
        return "published"
