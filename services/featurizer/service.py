"""The featurizer process: replica reader -> engine -> transactional outputs for owned partitions.

Every worker reads every fact and runs the same deterministic engine, so any worker can take
over any partition at any moment with the exact values the previous owner would have written.
Per owned partition it emits what the committed progress says is still missing, and commits
the new progress with the outputs in one transaction: after a crash, the restarted worker
rebuilds its state by replaying the facts and emits only what was not committed.
"""

from __future__ import annotations

import collections
import logging
import time
from collections import defaultdict
from typing import Any

import redis

from libs.common.deadletters import DeadLetters
from libs.common.features.extractors import extractor
from libs.common.features.online_view import OnlineView
from libs.common.http_server import serve_probes
from libs.common.kafka.producer import Producer
from libs.common.kafka.replay import ReplayReader
from libs.common.kafka.transactional import TransactionalProducer
from libs.common.lifecycle import Shutdown, close_all
from libs.common.metrics import LoopMetrics
from libs.common.process import start_process
from libs.common.retry import Restarting
from libs.common.serde import SerdeError, serde
from libs.common.topics import FEATURES, INSTANCES, LIKES, PUPDATES
from services.featurizer import metrics as m
from services.featurizer.engine import DUPLICATE, UNLABELLED, FeatureEngine, FeaturesOut, InstanceOut
from services.featurizer.outputs import encode_features, encode_instance
from services.featurizer.ownership import NEVER, Ownership, Progress
from services.featurizer.settings import FeaturizerSettings
from services.featurizer.view import ViewWriter
from services.featurizer.watermark import Watermark

log = logging.getLogger(__name__)
SERVICE = "featurizer"
LATE_PUPDATE = "late_pupdate"  # dead-letter reason: arrived after its label horizon had closed


class Featurizer:
    def __init__(self, settings: FeaturizerSettings) -> None:
        self.s = settings
        self.extractors = [extractor(v) for v in settings.versions]
        self.names = {e.version: e.names for e in self.extractors}
        self.extractor_of = {e.version: e for e in self.extractors}
        self.likes_reported: dict[str, int] = defaultdict(int)
        self.topics = {name: settings.topic(name) for name in (PUPDATES, LIKES, FEATURES, INSTANCES)}
        self.engine = FeatureEngine(self.extractors, horizon_ms=settings.horizon_ms)
        self.watermark = Watermark(settings.lateness_ms, settings.idle_flush_ms)
        self.metrics = LoopMetrics(SERVICE)
        self.dead = DeadLetters(settings, SERVICE)
        self.pupdate_serde, self.like_serde = serde("pupdate"), serde("like")
        # Outputs released but not yet known to be committed, per pupdates partition.
        self.pending_features: dict[int, list[tuple[int, FeaturesOut]]] = defaultdict(list)
        self.pending_instances: dict[int, list[InstanceOut]] = defaultdict(list)
        # Offsets of pupdates read but not released yet: progress may not pass the lowest.
        self.unreleased: dict[int, set[int]] = defaultdict(set)
        self.read_through: dict[int, int] = defaultdict(int)
        self.rebuilt = False
        self.last_prune = 0.0

        # The reader first: it is the one part that asks Kafka while being built, so a broker that
        # is away fails the build before anything needs closing.
        self.replica = ReplayReader(settings, [self.topics[PUPDATES], self.topics[LIKES]], name=SERVICE)
        self.txn = TransactionalProducer(settings, name=SERVICE, transactional_id=settings.transactional_id)
        self.dlq_producer = Producer(settings, name=f"{SERVICE}-deadletters")
        self.ownership = Ownership(
            settings, topic=self.topics[PUPDATES], group_id=settings.topic(settings.group_id), name=SERVICE
        )
        self.partitions = sorted(
            tp.partition for tp in self.replica.partitions if tp.topic == self.topics[PUPDATES]
        )
        self.view = ViewWriter(
            OnlineView(redis.Redis.from_url(settings.redis_url, socket_timeout=1), settings.topic_prefix),
            self.engine,
            instance_id=settings.instance_id,
            ttl_s=settings.view_ttl_s,
            check_s=settings.view_check_s,
            batch=settings.view_rewrite_batch,
        )

    # -- reading -----------------------------------------------------------------------------

    def ingest(self, messages: list) -> None:
        pupdates_topic = self.topics[PUPDATES]
        consumed: dict[str, int] = defaultdict(int)
        for msg in messages:
            topic = msg.topic()
            try:
                if topic == pupdates_topic:
                    rec = self.pupdate_serde.decode(msg.value())
                    outcome = self.engine.add_pupdate(rec, (msg.partition(), msg.offset()))
                    if outcome == UNLABELLED:
                        self._too_late_to_label(rec, msg)
                    # A second fact of a pupdate_id (another event_id, same pupdate) is ignored by
                    # the engine and never released: waiting for it would hold the progress forever.
                    if outcome != DUPLICATE:
                        self.unreleased[msg.partition()].add(msg.offset())
                    self.read_through[msg.partition()] = msg.offset() + 1
                    self.watermark.observe((topic, msg.partition()), rec["posted_at"])
                else:
                    rec = self.like_serde.decode(msg.value())
                    self.engine.add_like(rec)
                    self.watermark.observe((topic, msg.partition()), rec["liked_at"])
            except (SerdeError, KeyError, TypeError, ValueError) as exc:
                reason = getattr(exc, "reason", "invalid_fact")
                m.EXTRACTION_ERRORS.labels(reason).inc()
                self._dead_letter(reason, f"{type(exc).__name__}: {exc}", msg)
            consumed[topic] += 1
        for topic, n in consumed.items():
            self.metrics.consumed(topic, n)

    def _too_late_to_label(self, rec: dict, msg: Any) -> None:
        m.LATE_PUPDATES.inc()
        self._dead_letter(
            LATE_PUPDATE,
            f"posted_at {rec['posted_at']} is more than the label horizon ({self.s.horizon_ms} ms) "
            f"behind the watermark {self.engine.watermark}: features written, no training instance",
            msg,
        )

    def _dead_letter(self, reason: str, detail: str, msg: Any) -> None:
        # Outside the output transaction: a fact the collector accepted but we cannot read is
        # rare, and people must see it even if this process dies right after.
        self.dead.send(self.dlq_producer, reason, detail, message=msg)
        self.dlq_producer.flush(10)

    # -- releasing ---------------------------------------------------------------------------

    def release(self) -> int:
        backlog = self.replica.lag()
        for key, behind in backlog.items():
            self.watermark.set_caught_up(key, behind == 0)
        self.metrics.set_lag(backlog)
        wm = self.watermark.current()
        features, instances = self.engine.advance(wm)
        for f in features:
            partition, offset = f.source
            self.pending_features[partition].append((offset, f))
            self.unreleased[partition].discard(offset)
            self.view.changed_dog(f.pupdate["dog_id"])
        for i in instances:
            self.pending_instances[i.source[0]].append(i)
            self.view.changed_dog(i.pupdate["dog_id"])
            self.view.changed_tags(i.version, self.extractor_of[i.version].tags(i.pupdate))
        return wm

    def progress_of(self, partition: int, wm: int) -> Progress:
        unreleased = self.unreleased[partition]
        offset = min(unreleased) if unreleased else self.read_through[partition]
        return Progress(offset, wm)

    # -- emitting ----------------------------------------------------------------------------

    def emit(self, wm: int) -> int:
        self.ownership.heartbeat()
        owned = self.ownership.owned
        if not owned:
            return 0
        batch: list[tuple[str, str, str, bytes]] = []  # (topic, version, key, value)
        new_progress: dict[int, Progress] = {}
        for partition, committed in owned.items():
            proposed = self.progress_of(partition, wm)
            # Features leave in offset order, only below the lowest unreleased offset: the
            # progress then says exactly what was written (all below it, nothing above). Features
            # are released in event-time order, so a pupdate that arrived late (older posted_at,
            # higher offset) was written ahead of the progress and written again by whoever
            # emitted the partition after a restart (a doubled vector, found by the incident suite).
            held = []
            for offset, f in self.pending_features.pop(partition, []):
                if offset >= proposed.features_offset:
                    held.append((offset, f))
                elif offset >= committed.features_offset:
                    value = encode_features(f, self.names[f.version])
                    batch.append((FEATURES, f.version, f.pupdate["pupdate_id"], value))
            if held:
                self.pending_features[partition] = held
            for i in self.pending_instances.pop(partition, []):
                if i.close_at >= committed.instances_through:
                    value = encode_instance(i, self.names[i.version], self.s.horizon_ms)
                    batch.append((INSTANCES, i.version, i.pupdate["pupdate_id"], value))
            progress = Progress(
                max(proposed.features_offset, committed.features_offset),
                max(proposed.instances_through, committed.instances_through),
            )
            if progress != committed:
                new_progress[partition] = progress
        if not batch and not new_progress:
            return 0
        # On failure the transaction is aborted and the error raised: what was popped for
        # emission is re-derived from the committed progress after the restart it leads to.
        with self.txn.transaction() as out:
            for base, _version, key, value in batch:
                out.produce(self.topics[base], value, key=key)
            offsets = [p.to_partition(self.topics[PUPDATES], part) for part, p in new_progress.items()]
            out.send_offsets(offsets, self.ownership.group_metadata)
        for partition, progress in new_progress.items():
            if partition in owned:
                owned[partition] = progress
        # Counted per batch, not per record: per-record counter calls cost ~5% of throughput.
        for (base, version), n in collections.Counter((b, v) for b, v, _k, _v in batch).items():
            (m.FEATURES_OUT if base == FEATURES else m.INSTANCES_OUT).labels(version).inc(n)
            self.metrics.produced(self.topics[base], n)
        return len(batch)

    def prune_others(self) -> None:
        """Drop what other workers have already committed for their partitions."""
        if time.monotonic() - self.last_prune < 2.0:
            return
        self.last_prune = time.monotonic()
        others = [p for p in self.partitions if p not in self.ownership.owned]
        if not others:
            return
        for partition, progress in self.ownership.committed_everywhere(others).items():
            self.pending_features[partition] = [
                (o, f) for o, f in self.pending_features.get(partition, []) if o >= progress.features_offset
            ]
            self.pending_instances[partition] = [
                i
                for i in self.pending_instances.get(partition, [])
                if i.close_at >= progress.instances_through
            ]

    def write_view(self, wm: int) -> None:
        if self.s.redis_view:
            self.view.write(wm, rebuilt=self.rebuilt)

    def update_gauges(self, wm: int) -> None:
        c = self.engine.counters
        for outcome, value in (
            ("counted", c.likes_counted),
            ("after_horizon", c.likes_after_horizon),
            ("late", c.likes_late),
            ("orphaned", c.likes_orphaned),
            ("duplicate", c.likes_duplicate),
        ):
            m.LIKES.labels(outcome).inc(value - self.likes_reported[outcome])
            self.likes_reported[outcome] = value
        m.OPEN_HORIZONS.set(self.engine.open_horizons)
        m.BUFFERED.set(self.engine.buffered)
        m.LIKE_IDS.set(self.engine.like_ids_kept)
        if wm > NEVER:
            m.WATERMARK.set(wm / 1000)
        m.OWNED.set(len(self.ownership.owned))
        caught = self.watermark.caught_up
        m.REPLICA_LAG.set(sum(caught.values()) / len(caught) if caught else 0)

    # -- lifecycle ---------------------------------------------------------------------------

    def ready(self) -> bool:
        return self.rebuilt and self.ownership.joined

    def start(self, shutdown: Shutdown) -> None:
        """Fence an earlier incarnation with this transactional.id (waits while Kafka is away)."""
        self.txn.init(shutdown=shutdown)

    def run(self, shutdown: Shutdown) -> None:
        """Until shutdown; raises when Kafka fails a call for longer than its deadline, and
        :class:`libs.common.retry.Restarting` builds a new incarnation from the facts."""
        while not shutdown.is_set():
            started = time.perf_counter()
            messages = self.replica.poll(self.s.batch_size, 0.2)
            self.ingest(messages)
            wm = self.release()
            if not self.rebuilt and all(self.watermark.caught_up.values()):
                self.rebuilt = True
                log.info("state rebuilt from the facts", extra={"pupdates": self.engine.counters.pupdates})
            emitted = self.emit(wm)
            self.prune_others()
            self.write_view(wm)
            self.update_gauges(wm)
            if messages or emitted:
                self.metrics.batch_done(started)

    def close(self) -> None:
        close_all(self.ownership.close, self.replica.close, self.txn.close, self.dlq_producer.close)


def main(settings: FeaturizerSettings | None = None) -> None:
    settings = settings or FeaturizerSettings()
    shutdown, probes = start_process(SERVICE, settings)
    # A failed incarnation is replaced by a new one that replays the facts and emits only what
    # the committed progress lacks: what a process restart would do, without losing the process.
    loop = Restarting(SERVICE, "engine", lambda: Featurizer(settings), shutdown)

    def ready() -> bool:
        current = loop.current
        return loop.started and current is not None and current.ready()

    probes.live("loop", lambda: not shutdown.is_set())
    probes.ready("state_rebuilt_and_partitions_assigned", ready)
    server = serve_probes(probes, host=settings.host, port=settings.port)
    log.info(
        "featurizer started",
        extra={
            "versions": settings.versions,
            "horizon_ms": settings.horizon_ms,
            "transactional_id": settings.transactional_id,
        },
    )
    try:
        loop.run()
    finally:
        server.stop()
