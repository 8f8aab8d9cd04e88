"""What the ``models`` topic says, as the scorer serves it.

The fold itself (statuses, activations, weights, the champion and challenger rule, each event
once by ``event_id``) is :class:`libs.common.models_ledger.ModelsLedger`, shared with the trainer
and the supervisor. The scorer adds the artifacts it serves, where each came from (the topic,
or seeded from the Redis cache before the topic is read), and the versions it refused because
their artifact failed verification or loading.

Compressed artifacts are kept only for the versions :meth:`ModelsLedger.worth_keeping` names
(``artifacts_kept`` newest non-retired per extractor version, plus champion, challenger and
activated ones); the others keep their metadata and are in ``evicted``: if one is selected
again, the registry fetches its artifact back from the Redis model cache, else the topic.

When no version is usable, the reason a fallback gives is ``paused`` (versions exist but are
paused), ``no_model`` (none for this extractor version and none at all) or
``extractor_mismatch`` (models exist, but for other extractor versions).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from libs.common.artifacts import ModelArtifact
from libs.common.models_ledger import ModelsLedger

log = logging.getLogger(__name__)

NO_MODEL = "no_model"
PAUSED = "paused"
EXTRACTOR_MISMATCH = "extractor_mismatch"


@dataclass
class Catalog(ModelsLedger):
    artifacts: dict[str, ModelArtifact] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)  # version -> "topic" | "redis"
    artifacts_kept: int = 8
    evicted: set[str] = field(default_factory=set)  # versions whose artifact bytes were dropped

    def on_published(self, event: Mapping[str, Any]) -> bool:
        changed = self.publish(ModelArtifact.from_event(event), source="topic")
        self.evict_artifacts()
        return changed

    def apply(self, event: Mapping[str, Any]) -> bool | None:
        changed = super().apply(event)
        if changed and event.get("kind") == "RETIRED":
            self.evict_artifacts()
        return changed

    def evict_artifacts(self) -> list[str]:
        """Drop the artifact bytes of versions not worth keeping (their metadata stays)."""
        keep = self.worth_keeping(self.artifacts_kept)
        gone = [v for v in self.artifacts if v not in keep and v not in self.evicted]
        for v in gone:
            self.artifacts[v] = dataclasses.replace(self.artifacts[v], artifact=b"")
            self.evicted.add(v)
        return gone

    def restore(self, art: ModelArtifact) -> None:
        """An evicted version's artifact, fetched back (verified by whoever loads it)."""
        self.artifacts[art.model_version] = art
        self.evicted.discard(art.model_version)

    def publish(self, art: ModelArtifact, *, source: str) -> bool:
        """A published version (from the topic, or seeded from the Redis cache)."""
        version = art.model_version
        if version in self.artifacts:
            if source == "topic" and self.source.get(version) != "topic":
                # Confirmed by the record, which also says where it stands in publish order.
                # The record's artifact replaces the cached copy, and a refusal of that copy
                # (poisoned Redis) is lifted: the record's own artifact is judged when loaded.
                self.source[version] = "topic"
                self.artifacts[version] = art
                self.evicted.discard(version)
                self.refused.pop(version, None)
                versions = self.order[art.extractor_version]
                versions.remove(version)
                versions.append(version)
                return True
            return False
        self.artifacts[version] = art
        self.source[version] = source
        self.add_published(version, art.extractor_version)
        if source == "redis":  # the cache has no publish order: use creation time
            self.order[art.extractor_version].sort(key=lambda v: self.artifacts[v].created_at)
        return True

    def forget_unconfirmed(self) -> list[str]:
        """Drop versions only the Redis cache knew: the topic is the record, read to its end."""
        gone = [v for v, s in self.source.items() if s != "topic"]
        for v in gone:
            art = self.artifacts.pop(v)
            self.source.pop(v)
            self.evicted.discard(v)
            self.extractor.pop(v, None)
            self.order[art.extractor_version].remove(v)
        return gone

    def reason_without_model(self, ev: str) -> str:
        """Why records of ``ev`` cannot be served by a model."""
        versions = self.order.get(ev, [])
        if versions:
            return PAUSED if any(v in self.paused for v in versions) else NO_MODEL
        return EXTRACTOR_MISMATCH if self.extractors() else NO_MODEL
