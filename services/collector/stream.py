"""The stream: raw topics in, facts and dead letters out, in one Kafka transaction per batch.

Each batch's facts, dead letters and consumed offsets commit together, so a read_committed
reader sees every accepted event exactly once, through crashes. Offsets are not the usual
"next offset": per partition the stream commits ``min(oldest waiting event, next offset)``
(see :mod:`services.collector.waiting`), so a crash never loses an event that was waiting.
After a restart the range between that offset and where processing had got to is read again;
the state rebuilt from the facts topics (:mod:`services.collector.facts`) recognises what was
already accepted (by event_id) or dead-lettered (by raw position), so nothing is written twice.

``transactional.id`` is ``collector-<instance_id>`` (with the topic prefix): a restarted
instance's ``init_transactions`` aborts whatever its predecessor left open, before the rebuild
reads the facts. Any error that leaves a transaction unusable is handled like a restart inside
the process: abort, forget the state, rebuild it, rewind the consumer to the committed offsets.
Any other failure (a fenced producer, Kafka away for longer than a call's deadline) rebuilds the
whole stream, with a back-off (:class:`libs.common.retry.Restarting`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaException, TopicPartition

from libs.common.deadletters import DEADLETTERS_TOTAL
from libs.common.kafka.consumer import Consumer
from libs.common.kafka.errors import KafkaUnavailableError
from libs.common.kafka.transactional import TransactionAborted, TransactionalProducer
from libs.common.lifecycle import Shutdown
from libs.common.metrics import LoopMetrics
from libs.common.retry import Restarting
from libs.common.settings import CommonSettings
from libs.common.topics import LIKES_RAW, PUPDATES_RAW
from services.collector import metrics as m
from services.collector.facts import FactsReader
from services.collector.kafkalog import rdkafka_logger
from services.collector.processor import SERVICE, Processor, Tallies
from services.collector.settings import CollectorSettings

log = logging.getLogger(__name__)
_rdkafka_log = rdkafka_logger()

TP = tuple[str, int]


class _Consumer(Consumer):
    """The common consumer, with lost partitions handled like revoked ones (forget their waiters)."""

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        super()._on_lost(consumer, partitions)
        if self._user_revoke:
            self._user_revoke(partitions)


class CollectorStream:
    """One incarnation: a transactional producer, the raw consumer and the facts reader."""

    def __init__(self, common: CommonSettings, settings: CollectorSettings) -> None:
        self.common = common
        self.settings = settings
        self.raw_topics = [common.topic(PUPDATES_RAW), common.topic(LIKES_RAW)]
        self._txn_timeout = max(5.0, settings.transaction_timeout_ms / 1000)
        self.txn = TransactionalProducer(
            common,
            name=f"collector-{settings.instance_id}",
            transactional_id=common.topic(settings.transactional_id),
            timeout_s=self._txn_timeout,
            **{
                "transaction.timeout.ms": settings.transaction_timeout_ms,
                "delivery.timeout.ms": settings.transaction_timeout_ms,
                "linger.ms": 5,
                "logger": _rdkafka_log,
            },
        )
        self.processor = Processor(common, settings, self._produce)
        self.facts = FactsReader(common, settings, self.processor)
        self.consumer: _Consumer | None = None
        self.loop_metrics = LoopMetrics(SERVICE)
        self.positions: dict[TP, int] = {}  # next offset to process, per raw partition
        self.committed: dict[TP, int] = {}  # last offset committed by this member
        self.producer_ready = False
        self.rebuilt = False
        self.joined = False
        self.last_progress = time.monotonic()
        self.totals = Tallies()  # everything committed, for tests and the benchmark
        self._last_evict = 0.0
        self._gauges = {
            name: m.STATE_ENTRIES.labels(name) for name in ("seen", "pupdates", "dogs", "dead_positions")
        }

    # --- start -------------------------------------------------------------------------------------

    def start(self, shutdown: Shutdown) -> None:
        deadline = time.monotonic() + self.settings.rebuild_timeout_s
        # Fences a predecessor with the same transactional.id and aborts what it left open.
        self.txn.init(deadline_s=self.settings.rebuild_timeout_s, shutdown=shutdown)
        self.producer_ready = True
        self._rebuild(deadline - time.monotonic())
        self.consumer = _Consumer(
            self.common,
            name=f"collector-{self.settings.instance_id}",
            group_id=self.common.topic(self.settings.group_id),
            topics=self.raw_topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            **{"enable.auto.commit": False, "fetch.wait.max.ms": 50, "logger": _rdkafka_log},
        )

    def _rebuild(self, timeout: float) -> None:
        started = time.monotonic()
        self.rebuilt = False
        n = self.facts.rebuild(max(timeout, 1.0))
        m.REBUILD_SECONDS.set(time.monotonic() - started)
        m.REBUILD_RECORDS.set(n)
        self.rebuilt = True

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        # Partitions taken over from another instance: know its facts before reading its input.
        try:
            self.facts.catch_up(30.0)
        except KafkaUnavailableError:
            log.warning("facts not caught up on assignment; continuing", exc_info=True)
        self.joined = True

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        self.processor.drop_partitions(tps)
        for tp in tps:
            self.positions.pop(tp, None)
            self.committed.pop(tp, None)

    # --- the loop ----------------------------------------------------------------------------------

    def _produce(self, topic: str, value: bytes, key: Any, headers: list) -> None:
        self.txn.produce(topic, value, key, headers=headers)

    def run(self, shutdown: Shutdown) -> None:
        while not shutdown.is_set():
            self.run_once()

    def run_once(self) -> int:
        """One batch in one transaction; returns raw records processed."""
        assert self.consumer is not None
        self.consumer.check_membership()
        batch = self._poll()
        self.facts.poll()
        proc = self.processor
        now = time.monotonic()
        self.last_progress = now
        deadline = proc.waiting.next_deadline()
        if not batch and not proc.ready and (deadline is None or deadline > now):
            self._housekeeping(now)
            return 0
        started = time.perf_counter()
        now_ms = int(time.time() * 1000)
        assigned = self.consumer.assigned
        positions = self.positions
        try:
            with self.txn.transaction() as out:
                for msg in batch:
                    tp = (msg.topic(), msg.partition())
                    if tp not in assigned:  # revoked while this batch was being fetched
                        continue
                    proc.process(msg, now_ms, now)
                    positions[tp] = msg.offset() + 1
                proc.run_ready(now_ms, now)
                proc.expire(now_ms, now)
                offsets = self._offsets()
                out.send_offsets(offsets, self.consumer.raw.consumer_group_metadata())
        except (TransactionAborted, KafkaException) as exc:  # aborted; a fatal one is Fenced
            self._recover(str(exc))
            return 0
        for tp in offsets:
            self.committed[(tp.topic, tp.partition)] = tp.offset
        self._publish(proc.take_tally())
        m.TRANSACTIONS.labels("committed").inc()
        m.BATCH_RECORDS.observe(len(batch))
        m.BATCH_SECONDS.observe(time.perf_counter() - started)
        self.loop_metrics.batch_done(started)
        self._housekeeping(now)
        return len(batch)

    def _poll(self) -> list:
        """Up to ``batch_size`` records: waits for the first, then lingers briefly for more."""
        assert self.consumer is not None
        size = self.settings.batch_size
        batch = self.consumer.poll_batch(size, self.settings.poll_timeout_s)
        if not batch or len(batch) >= size or self.settings.batch_linger_s <= 0:
            return batch
        until = time.monotonic() + self.settings.batch_linger_s
        while len(batch) < size:
            left = until - time.monotonic()
            if left <= 0:
                break
            batch += self.consumer.poll_batch(size - len(batch), left)
        return batch

    def _offsets(self) -> list[TopicPartition]:
        """Per partition: min(oldest waiting event, next offset), when it moved."""
        oldest = self.processor.waiting.oldest_offset
        out = []
        for tp, position in self.positions.items():
            waiting = oldest(tp)
            offset = position if waiting is None or waiting > position else waiting
            if self.committed.get(tp) != offset:
                out.append(TopicPartition(tp[0], tp[1], offset))
        return out

    def _recover(self, why: str) -> None:
        """After an aborted transaction: forget, rebuild and rewind, a restart inside the process."""
        log.warning("transaction aborted; rebuilding the state", extra={"error": why})
        m.TRANSACTIONS.labels("aborted").inc()
        self.processor.reset()
        self.positions.clear()
        self.committed.clear()
        self.facts.close()
        self.facts = FactsReader(self.common, self.settings, self.processor)
        self._rebuild(self.settings.rebuild_timeout_s)
        self._rewind()

    def _rewind(self) -> None:
        assert self.consumer is not None
        raw = self.consumer.raw
        assignment = raw.assignment()
        if not assignment:
            return
        for tp in raw.committed(assignment, timeout=30):
            offset = tp.offset if tp.offset >= 0 else confluent_kafka.OFFSET_BEGINNING
            raw.seek(TopicPartition(tp.topic, tp.partition, offset))

    def _publish(self, tally: Tallies) -> None:
        for (kind, version), n in tally.accepted.items():
            m.ACCEPTED.labels(kind, f"v{version}").inc(n)
        for reason, n in tally.rejected.items():
            m.REJECTED.labels(reason, "stream").inc(n)
            DEADLETTERS_TOTAL.labels(SERVICE, reason).inc(n)
        if tally.duplicates:
            m.DUPLICATES.inc(tally.duplicates)
        if tally.replayed:
            m.REPLAYED.inc(tally.replayed)
        for outcome, seconds in tally.waits:
            m.WAIT_SECONDS.labels(outcome).observe(seconds)
        self.totals.merge(tally)

    def _housekeeping(self, now: float) -> None:
        m.WAITING.set(len(self.processor.waiting))
        if now - self._last_evict >= 1.0:
            self._last_evict = now
            state = self.processor.state
            state.evict(int(time.time() * 1000))
            for name, size in state.sizes().items():
                self._gauges[name].set(size)
            if self.consumer is not None:
                with contextlib.suppress(KafkaException):
                    self.loop_metrics.set_lag(self.consumer.lag())

    # --- stop --------------------------------------------------------------------------------------

    def close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close()
            except Exception:
                log.exception("closing the raw consumer failed")
        self.facts.close()
        self.txn.close(10)


class StreamRunner:
    """Runs the stream on a thread under :class:`libs.common.retry.Restarting`: any failure
    (a fenced producer, Kafka away for longer than a call's deadline) builds it again."""

    def __init__(self, common: CommonSettings, settings: CollectorSettings, shutdown: Shutdown) -> None:
        self.common = common
        self.settings = settings
        self.shutdown = shutdown
        self.totals = Tallies()
        self.supervisor: Restarting[CollectorStream] = Restarting(SERVICE, "stream", self._build, shutdown)
        self._thread = threading.Thread(target=self.supervisor.run, name="collector-stream", daemon=True)

    def _build(self) -> CollectorStream:
        stream = CollectorStream(self.common, self.settings)
        stream.totals = self.totals
        return stream

    @property
    def stream(self) -> CollectorStream | None:
        return self.supervisor.current

    def start(self) -> StreamRunner:
        self._thread.start()
        return self

    def ready(self) -> bool:
        s = self.stream
        return s is not None and s.producer_ready and s.rebuilt and s.joined

    def live(self) -> bool:
        s = self.stream
        # A loop iteration is bounded by the transaction timeout and a rebuild by its own.
        limit = self.settings.rebuild_timeout_s + 60 if s is None or not s.rebuilt else 120
        return self._thread.is_alive() and (s is None or time.monotonic() - s.last_progress < limit)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
