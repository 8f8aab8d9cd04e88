"""Models by version and status, served as immutable snapshots swapped atomically.

One background thread (:class:`ModelsFeed`) owns the :class:`Catalog`: it seeds it from the
Redis model cache (fast start; Redis empty or down is fine), then tails the ``models`` topic
from the beginning (the record: statuses, activations, weights). Whenever what serves changes,
it loads the needed models *first* and then replaces the registry's :class:`Snapshot` with one
reference assignment. Scorers read ``registry.snapshot`` once per batch or request, so every
batch is scored against one consistent state, a swap never waits for scoring and scoring never
waits for a swap.

Until the topic has been read to its end, the snapshot is *provisional* (what the Redis cache
holds, statuses unknown); the stream waits for the synced snapshot before scoring, the what-if
API answers from whatever is there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import confluent_kafka
import redis

from libs.common.artifacts import (
    ArtifactIntegrityError,
    ArtifactStore,
    CacheEntryError,
    ModelArtifact,
    ModelCache,
)
from libs.common.kafka.replay import LARGE_FETCH, ReplayReader
from libs.common.model_loading import ModelLoadError
from libs.common.models_ledger import EventKind
from libs.common.retry import kafka_call
from libs.common.serde import SerdeError, serde
from libs.common.signing import verifier_from
from libs.common.topics import MODELS
from services.scorer import metrics as m
from services.scorer.catalog import Catalog
from services.scorer.compiled import Compiler
from services.scorer.model import LoadedModel, load
from services.scorer.routing import BASELINE, CHALLENGER, CHAMPION, Weights
from services.scorer.settings import ScorerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """Everything scoring needs, immutable: build a new one to change anything."""

    generation: int
    weights: Weights
    # extractor_version -> arm -> model (champion always present when the extractor is served)
    serving: Mapping[str, Mapping[str, LoadedModel]] = field(default_factory=dict)
    # extractor_version -> why it has no model; other versions get ``default_reason``
    reasons: Mapping[str, str] = field(default_factory=dict)
    default_reason: str = "no_model"
    statuses: Mapping[str, str] = field(default_factory=dict)
    synced: bool = False
    source: str = "empty"  # empty | redis | topic

    def resolve(self, extractor_version: str, arm: str) -> tuple[str, LoadedModel | None, str | None]:
        """(arm that serves, model or None, fallback reason or None) for a routed record."""
        if arm == BASELINE:
            return BASELINE, None, None
        models = self.serving.get(extractor_version)
        if models is not None:
            if arm == CHALLENGER:
                challenger = models.get(CHALLENGER)
                if challenger is not None:
                    return CHALLENGER, challenger, None
            return CHAMPION, models[CHAMPION], None
        return CHAMPION, None, self.reasons.get(extractor_version, self.default_reason)

    def describe(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "synced": self.synced,
            "source": self.source,
            "weights": self.weights.as_dict(),
            "serving": {
                ev: {arm: mdl.version for arm, mdl in arms.items()} for ev, arms in self.serving.items()
            },
            "reasons": dict(self.reasons),
            "statuses": dict(self.statuses),
            # which code predicts each serving version: native (compiled trees) or lightgbm
            "predictors": {
                mdl.version: "native" if mdl.compiled is not None else "lightgbm"
                for arms in self.serving.values()
                for mdl in arms.values()
            },
        }


class Registry:
    """Holds the current snapshot; only the feed thread (or a test) calls the mutating methods."""

    def __init__(self, settings: ScorerSettings) -> None:
        self.s = settings
        self.catalog = Catalog(
            artifacts_kept=settings.artifacts_kept, verifier=verifier_from(settings, service="scorer")
        )
        self.loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        # Native code for each loaded version, compiled in the background (services/scorer/compiled.py).
        self.compiler: Compiler | None = None
        if settings.compile_models:
            self.compiler = Compiler(settings.compile_cache_dir, timeout_s=settings.compile_timeout_s)
            self.compiler.start()
        # Fetches an evicted version's artifact back (the feed sets it: the Redis model cache).
        self.fetch: Callable[[str], ModelArtifact | None] = lambda _version: None
        self.default_weights = Weights.of(settings.arm_weights)
        self._snapshot = Snapshot(generation=0, weights=self.default_weights)
        self._lock = threading.Lock()  # serialises writers; readers never take it
        self.synced_event = threading.Event()
        self.ready_event = threading.Event()  # a first snapshot from Redis or the topic exists
        for arm, w in self.default_weights.as_dict().items():
            m.ARM_WEIGHT.labels(arm).set(w)

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def reset(self) -> None:
        """Forget what was seeded (the feed thread, before it reads the topic)."""
        with self._lock:
            self.catalog = Catalog(artifacts_kept=self.s.artifacts_kept)
            self.loaded.clear()

    # -- mutations (feed thread) -------------------------------------------------------------

    def apply(self, event: Mapping[str, Any]) -> bool:
        return bool(self.catalog.apply(event))

    def _load_selected(self, select: Callable[[], str | None]) -> LoadedModel | None:
        """The loaded model of the version ``select`` picks. Loading may refuse a version, which
        changes the selection: repeat until it is stable."""
        while True:
            version = select()
            model = self._model(version) if version else None
            if version is None or model is not None:
                return model

    def _model(self, version: str) -> LoadedModel | None:
        """The loaded model of a usable version, loading it now if needed; None if refused."""
        model = self.loaded.get(version)
        if model is not None:
            self.loaded.move_to_end(version)
            return model
        if version in self.catalog.evicted:
            fetched = self._fetch(version)
            if fetched is None:
                self.catalog.refuse(version, "artifact_evicted")
                m.MODEL_REFUSED.labels("artifact_evicted").inc()
                log.error(
                    "model version selected again but its artifact was evicted and is neither in the "
                    "Redis model cache nor on the models topic; refused",
                    extra={"model_version": version},
                )
                return None
            self.catalog.restore(fetched)
        art = self.catalog.artifacts[version]
        try:
            model = load(
                art,
                source=self.catalog.source.get(version, "topic"),
                predict_threads=self.s.predict_threads,
                probe=self.s.probe_on_load,
            )
        except (ArtifactIntegrityError, ModelLoadError) as exc:
            reason = getattr(exc, "reason", "unloadable")
            self.catalog.refuse(version, reason)
            m.MODEL_REFUSED.labels(reason).inc()
            log.error(
                "model version refused; the last good version serves instead",
                extra={"model_version": version, "reason": reason, "error": str(exc)[:500]},
            )
            return None
        m.MODEL_LOAD_SECONDS.observe(model.load_seconds)
        log.info(
            "model loaded",
            extra={
                "model_version": version,
                "extractor_version": model.extractor_version,
                "seconds": round(model.load_seconds, 4),
            },
        )
        if self.compiler is not None:
            self.compiler.submit(model, model.text, model.sha256)
        model.text = ""  # the compile job holds it until it is done; nothing else needs it
        self.loaded[version] = model
        return model

    def _fetch(self, version: str) -> ModelArtifact | None:
        try:
            art = self.fetch(version)
        except (redis.RedisError, CacheEntryError) as exc:
            log.warning("evicted artifact not fetched", extra={"model_version": version, "error": str(exc)})
            return None
        if art is None or art.extractor_version != self.catalog.extractor_of(version):
            return None
        m.ARTIFACTS_FETCHED.inc()
        return art

    def rebuild(self, *, synced: bool | None = None, source: str | None = None) -> Snapshot:
        """Select, load what is selected, and swap in the new snapshot."""
        with self._lock:
            cat = self.catalog
            serving: dict[str, dict[str, LoadedModel]] = {}
            reasons: dict[str, str] = {}
            for ev in cat.extractors():
                arms: dict[str, LoadedModel] = {}
                model = self._load_selected(partial(cat.champion, ev))
                if model is not None:
                    arms[CHAMPION] = model
                    cmodel = self._load_selected(partial(cat.challenger, ev))
                    if cmodel is not None:
                        arms[CHALLENGER] = cmodel
                    serving[ev] = arms
                else:
                    reasons[ev] = cat.reason_without_model(ev)
            old = self._snapshot
            snap = Snapshot(
                generation=old.generation + 1,
                weights=Weights.of(cat.weights) if cat.weights else self.default_weights,
                serving=serving,
                reasons=reasons,
                default_reason=cat.reason_without_model("\x00none"),
                statuses={v: cat.status(v) for v in cat.artifacts},
                synced=old.synced if synced is None else synced,
                source=source or old.source,
            )
            self._evict(serving)
            self._snapshot = snap  # the swap: one reference assignment
            self._report(old, snap)
            return snap

    def _evict(self, serving: Mapping[str, Mapping[str, LoadedModel]]) -> None:
        keep = {mdl.version for arms in serving.values() for mdl in arms.values()}
        for v in [v for v in self.loaded if v not in keep and v in self.catalog.retired]:
            del self.loaded[v]  # retired never serves again
        spare = [v for v in self.loaded if v not in keep]
        for v in spare[: max(len(spare) - self.s.loaded_models_kept, 0)]:
            del self.loaded[v]

    def _report(self, old: Snapshot, new: Snapshot) -> None:
        for ev in set(old.serving) | set(new.serving):
            for arm in (CHAMPION, CHALLENGER):
                before = old.serving.get(ev, {}).get(arm)
                after = new.serving.get(ev, {}).get(arm)
                if (before.version if before else None) == (after.version if after else None):
                    continue
                if before is not None:
                    m.SERVING.labels(ev, arm, before.version).set(0)
                if after is not None:
                    m.SERVING.labels(ev, arm, after.version).set(1)
                if old.generation > 0:
                    m.MODEL_SWAPS.labels(ev, arm).inc()
                log.info(
                    "model swap",
                    extra={
                        "extractor_version": ev,
                        "arm": arm,
                        "from": before.version if before else None,
                        "to": after.version if after else None,
                        "generation": new.generation,
                    },
                )
        # Bounded labels: only the versions serving before or after this swap keep their series.
        m.forget_versions(
            {mdl.version for snap in (old, new) for arms in snap.serving.values() for mdl in arms.values()}
        )
        counts: dict[str, int] = dict.fromkeys(("published", "paused", "retired", "refused"), 0)
        for status in new.statuses.values():
            counts[status] = counts.get(status, 0) + 1
        for status, n in counts.items():
            m.MODELS.labels(status).set(n)
        for arm, w in new.weights.as_dict().items():
            m.ARM_WEIGHT.labels(arm).set(w)
        m.REGISTRY_GENERATION.set(new.generation)
        if new.weights != old.weights:
            log.info("arm weights changed", extra={"weights": new.weights.as_dict()})


class ModelsFeed(threading.Thread):
    """Seeds the registry from Redis, then keeps it current from the ``models`` topic."""

    def __init__(self, settings: ScorerSettings, registry: Registry, *, redis_client: Any = None) -> None:
        super().__init__(name="models-feed", daemon=True)
        self.s = settings
        self.registry = registry
        self.topic = settings.topic(MODELS)
        self._halt = threading.Event()
        self._serde = serde("model_event")
        client = redis_client or redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
        )
        self.cache = ModelCache(client, settings.topic_prefix, service="scorer")
        registry.fetch = ArtifactStore(self.cache, settings).get  # Redis, else the topic
        self.error: BaseException | None = None
        self.events_read = 0
        self._redis_warned = False

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            if self.s.seed_from_redis:
                try:
                    self.seed()
                except Exception:
                    # The seed only saves time; whatever Redis held, the topic is the record.
                    log.exception("seeding from the Redis model cache failed; starting from the models topic")
                    self.registry.reset()
            self.tail()
        except BaseException as exc:  # surfaced through liveness; the process restarts
            self.error = exc
            log.exception("models feed died")

    # -- Redis seed --------------------------------------------------------------------------

    def seed(self) -> int:
        """Every model the Redis cache holds, as provisionally published (statuses unknown)."""
        started = time.perf_counter()
        arts: list[ModelArtifact] = []
        try:
            for version in self.cache.versions():
                try:
                    art = self.cache.get(version)
                except CacheEntryError as exc:
                    self._drop_malformed(version, exc)
                    continue
                if art is not None:
                    arts.append(art)
        except redis.RedisError as exc:
            log.warning(
                "Redis model cache unavailable; starting from the models topic", extra={"error": str(exc)}
            )
            return 0
        verifier = self.registry.catalog.verifier
        if verifier is not None:  # a cache entry is as trusted as the signed record it copies
            arts = [a for a in arts if verifier.accepts(a.to_event())]
        for art in arts:
            self.registry.catalog.publish(art, source="redis")
        if arts:
            self.registry.rebuild(source="redis")
            self.registry.ready_event.set()
        log.info(
            "registry seeded from the Redis model cache",
            extra={"models": len(arts), "seconds": round(time.perf_counter() - started, 4)},
        )
        return len(arts)

    def _drop_malformed(self, version: str, exc: CacheEntryError) -> None:
        """Skip a poisoned entry (counted by the cache) and delete it, so the write-back after
        the topic is read puts the record's artifact there instead."""
        log.error(
            "malformed Redis model cache entry skipped; the version comes from the models topic",
            extra={"model_version": version, "reason": exc.reason, "error": str(exc)[:500]},
        )
        try:
            self.cache.delete(version)
        except redis.RedisError as err:
            log.warning("malformed model cache entry not deleted", extra={"error": str(err)})

    # -- the topic ---------------------------------------------------------------------------

    def tail(self) -> None:
        try:
            reader = kafka_call(
                lambda: ReplayReader(
                    self.s, [self.topic], name="scorer-models", **(LARGE_FETCH | {"fetch.wait.max.ms": 50})
                ),
                what="reading the models topic",
                shutdown=self._halt,
            )
        except Exception:
            if self._halt.is_set():
                return
            raise
        try:
            synced = False
            new_versions: list[str] = []
            while not self._halt.is_set():
                changed = False
                for msg in reader.poll(200, 0.1):
                    changed |= self._apply(msg, new_versions)
                if not synced:
                    if reader.rebuilt():
                        synced = True
                        gone = self.registry.catalog.forget_unconfirmed()
                        if gone:
                            log.warning(
                                "cached models not on the models topic dropped", extra={"versions": gone}
                            )
                        self.registry.rebuild(synced=True, source="topic")
                        self.registry.synced_event.set()
                        self.registry.ready_event.set()
                        m.REGISTRY_SYNCED.set(1)
                        log.info(
                            "registry synced with the models topic",
                            extra={"events": self.events_read, **self.registry.snapshot.describe()},
                        )
                        self._write_back(list(self.registry.catalog.artifacts))
                        new_versions.clear()
                elif changed:
                    self.registry.rebuild()
                    if new_versions:
                        self._write_back(new_versions)
                        new_versions.clear()
        finally:
            reader.close()

    def _apply(self, msg: confluent_kafka.Message, new_versions: list[str]) -> bool:
        try:
            event = self._serde.decode(msg.value())
        except SerdeError as exc:
            log.error("undecodable model event skipped", extra={"offset": msg.offset(), "error": str(exc)})
            m.REGISTRY_EVENTS.labels("undecodable").inc()
            return False
        self.events_read += 1
        m.REGISTRY_EVENTS.labels(event.get("kind") or "unknown").inc()
        try:
            changed = self.registry.apply(event)
        except (KeyError, TypeError, ValueError) as exc:
            log.error("model event not applicable", extra={"offset": msg.offset(), "error": str(exc)})
            return False
        if changed and event.get("kind") == EventKind.PUBLISHED:
            new_versions.append(event["model_version"])
        return changed

    def _write_back(self, versions: list[str]) -> None:
        """Best effort: the cache gets what the topic has and it lacks (verified first)."""
        if not self.s.write_back_cache or not versions:
            return
        cat = self.registry.catalog
        try:
            missing = self.cache.missing(
                [v for v in versions if v in cat.artifacts and v not in cat.refused and v not in cat.evicted]
            )
            for v in missing:
                art: ModelArtifact = cat.artifacts[v]
                try:
                    art.model_text(service="scorer", source="topic")
                except ArtifactIntegrityError:
                    cat.refuse(v, "artifact_integrity")
                    continue
                self.cache.put(art)
            if missing:
                log.info("Redis model cache filled from the models topic", extra={"versions": missing})
            self._redis_warned = False
        except redis.RedisError as exc:
            if not self._redis_warned:
                log.warning("Redis model cache not written (down?)", extra={"error": str(exc)})
                self._redis_warned = True
