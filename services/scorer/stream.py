"""The stream path: ``features`` -> ``predictions`` in Kafka transactions with the consumed offsets.

Each micro-batch (what is already fetched, up to ``batch_size``) is decoded, scored against one
registry snapshot and written keyed by pupdate_id inside the transaction that also commits the
batch's offsets (:class:`libs.common.kafka.transactional.TransactionalLoop`). A read_committed
reader therefore sees exactly one prediction per features record, through crashes and through
partitions moving between scorer processes (the consumer group's generation fences a zombie's
offsets; the stable transactional.id fences its transactions at restart).

A record that is not a feature vector at all is dead-lettered in the same transaction; every
other record gets a prediction, whatever the model does (:mod:`services.scorer.predict`).
"""

from __future__ import annotations

import logging
import threading
import time

import confluent_kafka

from libs.common.deadletters import DeadLetters
from libs.common.kafka.consumer import Consumer
from libs.common.kafka.transactional import TransactionalLoop, TransactionalProducer
from libs.common.lifecycle import Shutdown, close_all
from libs.common.metrics import LoopMetrics
from libs.common.serde import SerdeError
from libs.common.topics import FEATURES, PREDICTIONS
from services.scorer import metrics as m
from services.scorer.codec import FeatureBatch, FeatureDecoder, PredictionEncoder, zigzag
from services.scorer.predict import EXCEPTION, Scored, record_metrics, safe_baseline, score
from services.scorer.registry import Registry
from services.scorer.routing import Router
from services.scorer.settings import ScorerSettings

log = logging.getLogger(__name__)
SERVICE = "scorer"


class StreamScorer:
    def __init__(self, settings: ScorerSettings, registry: Registry, router: Router) -> None:
        self.s = settings
        self.registry = registry
        self.router = router
        self.features_topic = settings.topic(FEATURES)
        self.predictions_topic = settings.topic(PREDICTIONS)
        self.decoder = FeatureDecoder()
        self.encoder = PredictionEncoder()
        self.metrics = LoopMetrics(SERVICE)
        self.dead = DeadLetters(settings, SERVICE)
        self.assigned_once = threading.Event()
        self.scored = 0
        self.consumer: Consumer | None = None
        self.loop: TransactionalLoop | None = None

    def _on_assign(self, _partitions: list) -> None:
        self.assigned_once.set()

    def start(self, shutdown: Shutdown) -> None:
        """Join the group and fence an earlier incarnation's transactional.id (waits while
        Kafka is away, until shutdown)."""
        self.consumer = Consumer(
            self.s,
            name=f"{SERVICE}-{self.s.instance_id}",
            group_id=self.s.topic(self.s.group_id),
            topics=[self.features_topic],
            on_assign=self._on_assign,
            **{"enable.auto.commit": False},
        )
        producer = TransactionalProducer(
            self.s,
            name=f"{SERVICE}-{self.s.instance_id}",
            transactional_id=self.s.transactional_id,
            timeout_s=self.s.transaction_timeout_s,
            **{"transaction.timeout.ms": int(self.s.transaction_timeout_s * 1000)},
        )
        producer.init(shutdown=shutdown)
        self.loop = TransactionalLoop(
            self.consumer, producer, batch_size=self.s.batch_size, poll_timeout=self.s.poll_timeout_s
        )

    # -- one batch ---------------------------------------------------------------------------

    def handle(self, messages: list[confluent_kafka.Message], producer: TransactionalProducer) -> None:
        started = time.perf_counter()
        batch = FeatureBatch()
        timestamps: list[int] = []
        add = self.decoder.add
        for msg in messages:
            try:
                add(batch, msg.value())
            except Exception as exc:  # SerdeError, or a surprise: never a poison pill
                m.UNDECODABLE.inc()
                reason = exc.reason if isinstance(exc, SerdeError) else "undecodable"
                self.dead.send(producer, reason, f"{type(exc).__name__}: {exc}", message=msg)
                continue
            timestamps.append(msg.timestamp()[1])
        self.metrics.consumed(self.features_topic, len(messages))
        if len(batch):
            self.write(batch, timestamps, producer)
        m.BATCH_SIZE.observe(len(messages))
        self.metrics.batch_done(started)

    def write(self, batch: FeatureBatch, timestamps: list[int], producer: TransactionalProducer) -> None:
        snapshot = self.registry.snapshot  # one consistent state for the whole batch
        try:
            scored = score(
                snapshot,
                self.router,
                extractors=batch.extractors,
                dogs=batch.dogs,
                names=batch.names,
                values=batch.values,
                baselines=batch.baselines,
                path="stream",
            )
        except Exception:  # a bug of ours must not cost predictions: serve the baselines
            log.exception("scoring failed; the whole batch falls back", extra={"rows": len(batch)})
            scored = _all_fallback(batch, EXCEPTION)
        now_ms = int(time.time() * 1000)
        predicted_at = zigzag(now_ms)
        middle = self.encoder.middle
        encode = self.encoder.encode
        produce = producer.produce
        topic = self.predictions_topic
        evs, arms, versions, reasons = batch.extractors, scored.arm, scored.model_version, scored.reason
        for i in range(len(batch)):
            value = encode(
                batch.heads[i],
                scored.predicted[i],
                scored.raw[i],
                middle(versions[i], evs[i], arms[i], reasons[i]),
                batch.posted[i],
                predicted_at,
                float(max(now_ms - timestamps[i], 0)),
            )
            produce(topic, value, batch.keys[i])
        self.metrics.produced(topic, len(batch))
        m.observe_end_to_end(batch.posted, now_ms)
        record_metrics(scored, "stream")
        self.scored += len(batch)

    # -- the loop ----------------------------------------------------------------------------

    def run(self, shutdown: Shutdown) -> None:
        """Until shutdown; raises when Kafka fails a transaction for good (not just aborts it),
        and :class:`libs.common.retry.Restarting` starts a new incarnation from the committed
        offsets."""
        if self.loop is None:
            self.start(shutdown)
        assert self.loop is not None and self.consumer is not None
        last_lag = 0.0
        while not shutdown.is_set():
            self.loop.run_once(self.handle)
            if time.monotonic() - last_lag > 2.0:
                last_lag = time.monotonic()
                self.metrics.set_lag(self.consumer.lag())

    def close(self) -> None:
        close_all(
            self.consumer.close if self.consumer else None,
            self.loop.producer.close if self.loop else None,
        )


def _all_fallback(batch: FeatureBatch, reason: str) -> Scored:
    n = len(batch)
    out = Scored(
        predicted=[safe_baseline(b) for b in batch.baselines],
        raw=[None] * n,
        model_version=[None] * n,
        arm=["champion"] * n,
        reason=[reason] * n,
    )
    out.counts[("champion", None)] = n
    out.fallbacks[reason] = n
    return out
