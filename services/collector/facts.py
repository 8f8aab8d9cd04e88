"""The facts topics as the collector's changelog: rebuild the state on start, then tail them.

One read_committed consumer, manually assigned every partition of ``pupdates``, ``likes`` and
``deadletters`` from the start of the state window (``offsets_for_times``). On start it reads to
the end as of then (the last stable offset: after ``init_transactions`` fenced this instance's
predecessor, nothing of ours is left open), which rebuilds the state; afterwards the stream
polls it between batches without blocking, so facts written by other collector instances
(dogs registered through another partition, pupdates another instance accepted) become visible
here. Records this process wrote itself are skipped while tailing: they were filed when made.
On every partition assignment the stream calls :meth:`FactsReader.catch_up` first, so a partition
taken over from another instance is only processed once that instance's facts are known.
"""

from __future__ import annotations

import logging
import time

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from libs.common.kafka.errors import KafkaUnavailableError
from libs.common.settings import CommonSettings
from libs.common.topics import DEADLETTERS, LIKES, PUPDATES
from services.collector.kafkalog import rdkafka_logger
from services.collector.processor import Processor
from services.collector.settings import CollectorSettings

log = logging.getLogger(__name__)


class FactsReader:
    def __init__(self, common: CommonSettings, settings: CollectorSettings, processor: Processor) -> None:
        self.common = common
        self.settings = settings
        self.processor = processor
        self.topics = [common.topic(PUPDATES), common.topic(LIKES), common.topic(DEADLETTERS)]
        self.consumer = confluent_kafka.Consumer(
            common.kafka_config()
            | {
                "group.id": common.topic(f"collector-facts-{settings.instance_id}"),
                "client.id": f"collector-facts-{settings.instance_id}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                "fetch.wait.max.ms": 50,
                "queued.max.messages.kbytes": 65536,
                "logger": rdkafka_logger(),
            }
        )
        self.partitions: list[TopicPartition] = []
        self._position: dict[tuple[str, int], int] = {}
        self.records = 0
        self.rebuilt = False

    def rebuild(self, timeout: float) -> int:
        """Assign from the window start and read to the end; returns records read."""
        started = time.monotonic()
        deadline = started + timeout
        window_start = int(time.time() * 1000 - self.settings.state_window_s * 1000)
        wanted = []
        for topic in self.topics:
            meta = self._call(lambda t=topic: self.consumer.list_topics(t, timeout=10), deadline)
            info = meta.topics.get(topic)
            if info is None or info.error is not None:
                raise KafkaUnavailableError(f"topic {topic} is missing: create the contract topics first")
            wanted += [TopicPartition(topic, p, window_start) for p in sorted(info.partitions)]
        starts = self._call(lambda: self.consumer.offsets_for_times(wanted, timeout=10), deadline)
        self.partitions = []
        for tp in starts:
            offset = tp.offset
            if offset < 0:  # nothing at or after the window start: start at the end as of now
                offset = self._watermark(tp.topic, tp.partition, deadline)
            self.partitions.append(TopicPartition(tp.topic, tp.partition, offset))
        self._position = {(tp.topic, tp.partition): tp.offset for tp in self.partitions}
        self.consumer.assign(self.partitions)
        self.records = 0
        n = self.catch_up(deadline - time.monotonic(), skip_own=False)
        self.rebuilt = True
        log.info(
            "state rebuilt",
            extra={
                "records": n,
                "seconds": round(time.monotonic() - started, 3),
                **self.processor.state.sizes(),
            },
        )
        return n

    def _call(self, fn, deadline: float):
        while True:
            try:
                return fn()
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise KafkaUnavailableError(f"reading the facts topics: {exc}") from exc
                log.warning("facts topics not readable yet", extra={"error": str(exc)})
                time.sleep(0.5)

    def _watermark(self, topic: str, partition: int, deadline: float) -> int:
        # A read_committed consumer is told the last stable offset: the end it can reach.
        _low, high = self._call(
            lambda: self.consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10, cached=False
            ),
            deadline,
        )
        return high

    def catch_up(self, timeout: float, *, skip_own: bool = True) -> int:
        """Read until every partition reaches its end as of now (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        ends = {key: self._watermark(*key, deadline) for key in self._position}
        n = 0
        while True:
            behind = [key for key, end in ends.items() if self._position[key] < end]
            if behind:
                # Transaction markers and aborted records take offsets but are never returned:
                # the consumer's own position moves past them.
                for tp in self.consumer.position([TopicPartition(t, p) for t, p in behind]):
                    key = (tp.topic, tp.partition)
                    if tp.offset > self._position[key]:
                        self._position[key] = tp.offset
                behind = [key for key in behind if self._position[key] < ends[key]]
            if not behind:
                return n
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"facts not read to their end within {timeout:.0f} s: {behind[:5]}"
                )
            n += self.poll(max_messages=5000, timeout=0.2, skip_own=skip_own)

    def poll(self, *, max_messages: int = 2000, timeout: float = 0.0, skip_own: bool = True) -> int:
        """Apply what has arrived; never blocks longer than ``timeout``."""
        msgs = self.consumer.consume(max_messages, timeout)
        if not msgs:
            return 0
        now_ms = int(time.time() * 1000)
        now = time.monotonic()
        apply = self.processor.apply_fact
        position = self._position
        n = 0
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("facts consumer error", extra={"error": err.str()})
                continue
            apply(msg, skip_own, now_ms, now)
            position[(msg.topic(), msg.partition())] = msg.offset() + 1
            n += 1
        self.records += n
        return n

    def close(self) -> None:
        try:
            self.consumer.close()
        except Exception:
            log.exception("closing the facts consumer failed")
