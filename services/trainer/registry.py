"""What the ``models`` topic says: every published version (verified) and who is the champion.

The champion of an extractor_version, which a candidate must beat, is the newest version
ACTIVATED on the ``champion`` arm by the supervisor that is not paused or retired since; before
any activation, the newest PUBLISHED version that is not paused or retired (what the scorer
serves by default). A PUBLISHED record whose artifact fails its sha256 check is refused here:
never a champion, never cached.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from libs.common import serving
from libs.common.artifacts import ArtifactIntegrityError, ModelArtifact

log = logging.getLogger(__name__)


@dataclass
class Registry:
    service: str = "trainer"
    keep_artifacts: int = 5  # newest artifacts kept in memory per extractor (plus the champion)
    published: dict[str, ModelArtifact] = field(default_factory=dict)  # version -> meta (+artifact)
    order: dict[str, list[str]] = field(default_factory=dict)  # extractor -> versions, oldest first
    activated: dict[str, str] = field(default_factory=dict)  # extractor -> champion arm version
    paused: set[str] = field(default_factory=set)
    retired: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    texts: dict[str, str] = field(default_factory=dict)  # verified model texts kept in memory

    def apply(self, event: Mapping[str, Any]) -> str | None:
        """Apply one model event; returns the version it is about (None when ignored)."""
        kind, version = event.get("kind"), event.get("model_version")
        if not version:
            return None
        if kind == "PUBLISHED":
            return self.add(ModelArtifact.from_event(event), source="topic")
        if kind == "ACTIVATED" and (event.get("arm") or "champion") == "champion":
            ev = event.get("extractor_version") or self._extractor_of(version)
            if ev:
                self.activated[ev] = version
        elif kind == "PAUSED":
            self.paused.add(version)
        elif kind == "RESUMED":
            self.paused.discard(version)
        elif kind == "RETIRED":
            self.retired.add(version)
        return version

    def add(self, art: ModelArtifact, *, source: str, text: str | None = None) -> str | None:
        """Record a published version; verifies its artifact unless ``text`` is already verified."""
        if art.model_version in self.published:
            return art.model_version
        if text is None:
            try:
                text = art.model_text(service=self.service, source=source)
            except ArtifactIntegrityError:
                self.refused.add(art.model_version)
                return None
        self.published[art.model_version] = art
        self.order.setdefault(art.extractor_version, []).append(art.model_version)
        self.texts[art.model_version] = text
        self._forget_old_texts(art.extractor_version)
        return art.model_version

    def _forget_old_texts(self, ev: str) -> None:
        keep = set(self.order.get(ev, [])[-self.keep_artifacts :])
        champ = self.champion_version(ev)
        if champ:
            keep.add(champ)
        for v in self.order.get(ev, []):
            if v not in keep:
                self.texts.pop(v, None)

    def _extractor_of(self, version: str) -> str | None:
        art = self.published.get(version)
        return art.extractor_version if art else None

    def usable(self, version: str) -> bool:
        return version in self.published and version not in self.paused and version not in self.retired

    def champion_version(self, extractor_version: str) -> str | None:
        return serving.champion(
            self.order.get(extractor_version, []), self.activated.get(extractor_version), self.usable
        )

    def champion_text(self, extractor_version: str) -> tuple[ModelArtifact, str] | None:
        """The champion's artifact and verified text (None when there is no usable champion)."""
        v = self.champion_version(extractor_version)
        if v is None:
            return None
        text = self.texts.get(v)
        if text is None:  # evicted from memory: verify again from the artifact kept in metadata
            try:
                text = self.texts[v] = self.published[v].model_text(service=self.service, source="memory")
            except ArtifactIntegrityError:
                return None
        return self.published[v], text

    def versions(self) -> list[str]:
        return list(self.published)
