"""What the ``models`` topic says, as the trainer needs it: the fold of
:class:`libs.common.models_ledger.ModelsLedger` plus every published version's verified text.

The champion of an extractor_version, which a candidate must beat, is the newest version
ACTIVATED on the ``champion`` arm by the supervisor that is not paused or retired since; before
any activation, the newest PUBLISHED version that is not paused or retired (what the scorer
serves by default). A PUBLISHED record the scorer could not serve (its artifact fails its sha256
check, or LightGBM cannot use it: :mod:`libs.common.model_loading`) is refused here: never a
champion, never cached.

Memory stays bounded on a long run: verified texts are kept for the ``keep_artifacts`` newest
versions per extractor (plus the champion), and the compressed artifacts only for the versions
:meth:`ModelsLedger.worth_keeping` names; an evicted version keeps its metadata, and if it
becomes champion again its artifact is fetched back (``fetch``: the Redis model cache, else the topic).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from libs.common.artifacts import ArtifactIntegrityError, ModelArtifact
from libs.common.model_loading import ModelLoadError, load_usable
from libs.common.models_ledger import EventKind, ModelsLedger

log = logging.getLogger(__name__)


@dataclass
class Registry(ModelsLedger):
    """The ledger, plus the verified model texts the trainer compares candidates against."""

    service: str = "trainer"
    keep_artifacts: int = 5  # newest artifacts kept in memory per extractor (plus the champion)
    published: dict[str, ModelArtifact] = field(default_factory=dict)  # version -> meta (+artifact)
    texts: dict[str, str] = field(default_factory=dict)  # verified model texts kept in memory
    evicted: set[str] = field(default_factory=set)  # versions whose artifact bytes were dropped
    fetch: Callable[[str], ModelArtifact | None] = lambda _version: None  # the Redis model cache

    def apply(self, event: Mapping[str, Any]) -> str | None:  # type: ignore[override]
        """Apply one model event (once per event_id); returns the version it is about, None when
        it has none or its publication was refused: the training loop follows versions."""
        super().apply(event)
        version = event.get("model_version") or None
        if version is None or (event.get("kind") == EventKind.PUBLISHED and version not in self.published):
            return None
        return version

    def on_published(self, event: Mapping[str, Any]) -> bool:
        return self.add(ModelArtifact.from_event(event), source="topic") is not None

    def add(self, art: ModelArtifact, *, source: str, text: str | None = None) -> str | None:
        """Record a published version; verifies its artifact unless ``text`` is already verified."""
        if art.model_version in self.published:
            return art.model_version
        if text is None:
            # The scorer's rule: a version it would refuse is never this trainer's champion.
            try:
                text = load_usable(art, service=self.service, source=source).text
            except (ArtifactIntegrityError, ModelLoadError) as exc:
                self.refuse(art.model_version, str(exc))
                return None
        self.published[art.model_version] = art
        self.add_published(art.model_version, art.extractor_version)
        self.texts[art.model_version] = text
        self._forget_old_texts(art.extractor_version)
        return art.model_version

    def _forget_old_texts(self, ev: str) -> None:
        keep = set(self.order.get(ev, [])[-self.keep_artifacts :])
        champ = self.champion(ev)
        if champ:
            keep.add(champ)
        for v in self.order.get(ev, []):
            if v not in keep:
                self.texts.pop(v, None)
        worth = self.worth_keeping(self.keep_artifacts)
        for v in self.order.get(ev, []):
            if v not in worth and v not in self.evicted and v in self.published:
                self.published[v] = dataclasses.replace(self.published[v], artifact=b"")
                self.evicted.add(v)

    def champion_version(self, extractor_version: str) -> str | None:
        return self.champion(extractor_version)

    def champion_text(self, extractor_version: str) -> tuple[ModelArtifact, str] | None:
        """The champion's artifact and verified text (None when there is no usable champion)."""
        v = self.champion(extractor_version)
        if v is None:
            return None
        text = self.texts.get(v)
        if text is None:  # evicted from memory: verify again from the artifact
            art, source = self.published[v], "memory"
            if v in self.evicted:
                try:
                    fetched = self.fetch(v)
                except Exception as exc:  # Redis down or a malformed entry: a cache, never fatal
                    log.warning("evicted champion not fetched", extra={"model_version": v, "error": str(exc)})
                    fetched = None
                if fetched is None:
                    log.warning(
                        "champion's artifact evicted and not in the Redis model cache; candidates are "
                        "compared with the baseline only",
                        extra={"model_version": v},
                    )
                    return None
                art, source = fetched, "redis"
            try:
                text = self.texts[v] = art.model_text(service=self.service, source=source)
            except ArtifactIntegrityError:
                return None
            self.published[v] = art
            self.evicted.discard(v)
        return self.published[v], text

    def versions(self) -> list[str]:
        return list(self.published)
