"""Reading topics whole, without a consumer group: the one reader of state rebuilt from topics.

For state a process needs whole, rebuilt by replaying topics at every start: the featurizer's
engine (a hashtag's likes span all partitions), the trainer's window, the collector's facts,
the scorer's and the supervisor's view of ``models``, reports and tests. Every partition is
assigned (never shared), nothing is committed, reads are read_committed.

Each topic starts at a :class:`Start`: the beginning, given offsets, or the first record at or
after a timestamp (the end, when there is none). "Rebuilt" means read up to the end offsets the
topics had when the reader started (or when :meth:`ReplayReader.mark_ends` was last called).
The position, not the last offset read, is compared with the ends: it moves past transaction
markers and aborted records, which take offsets but are never returned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import confluent_kafka
from confluent_kafka import TopicPartition

from libs.common.kafka.clients import consume_batch, new_consumer, position
from libs.common.kafka.errors import KafkaUnavailableError
from libs.common.settings import CommonSettings

log = logging.getLogger(__name__)

TP = tuple[str, int]


@dataclass(frozen=True)
class Start:
    """Where a topic is read from: ``Start()`` the beginning, ``Start(timestamp_ms=t)`` or
    ``Start(offsets={partition: offset})`` (partitions not named start at the beginning)."""

    timestamp_ms: int | None = None
    offsets: Mapping[int, int] = field(default_factory=dict)


BEGINNING = Start()


class ReplayReader:
    def __init__(
        self,
        settings: CommonSettings,
        topics: list[str],
        *,
        name: str,
        start: Start | Mapping[str, Start] = BEGINNING,
        **overrides: Any,
    ) -> None:
        self.topics = topics
        self._starts = start
        conf: dict[str, Any] = {"queued.max.messages.kbytes": 65536} | overrides
        self._consumer = new_consumer(settings, name=name, **conf)
        self.partitions: list[TopicPartition] = []
        self.rebuild_to: dict[TP, int] = {}
        self._started_at: dict[TP, int] = {}  # the offset each partition was assigned from
        self._last_discovery = time.monotonic()
        self.rebuilt_at: float | None = None
        try:
            for topic in topics:
                self._add_partitions(topic, self._partitions_of(topic))
        except BaseException:
            self._consumer.close()
            raise

    @property
    def raw(self) -> confluent_kafka.Consumer:
        return self._consumer

    def _start_of(self, topic: str) -> Start:
        starts = self._starts
        return starts if isinstance(starts, Start) else starts.get(topic, BEGINNING)

    def _partitions_of(self, topic: str) -> list[int]:
        meta = self._consumer.list_topics(topic, timeout=15)
        info = meta.topics.get(topic)
        if info is None or info.error is not None:
            raise KafkaUnavailableError(f"topic {topic}: {info.error if info else 'missing'}")
        return sorted(info.partitions)

    def _high(self, topic: str, partition: int) -> int:
        # A read_committed consumer is told the last stable offset: the end it can reach.
        return self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=15)[1]

    def _add_partitions(self, topic: str, partitions: list[int]) -> None:
        known = {(tp.topic, tp.partition) for tp in self.partitions}
        fresh = [p for p in partitions if (topic, p) not in known]
        if not fresh:
            return
        # A topic's first partitions start where asked; partitions added later, at their beginning.
        start = BEGINNING if topic in self._assigned_topics() else self._start_of(topic)
        if start.timestamp_ms is not None:
            wanted = [TopicPartition(topic, p, start.timestamp_ms) for p in fresh]
            found = self._consumer.offsets_for_times(wanted, timeout=15)
            # Nothing at or after the timestamp: start at the end as of now.
            new = [TopicPartition(topic, tp.partition, tp.offset) for tp in found]
            new = [
                tp if tp.offset >= 0 else TopicPartition(topic, tp.partition, self._high(topic, tp.partition))
                for tp in new
            ]
        else:
            new = [TopicPartition(topic, p, start.offsets.get(p, 0)) for p in fresh]
        for tp in new:
            self.rebuild_to[(topic, tp.partition)] = self._high(topic, tp.partition)
            self._started_at[(topic, tp.partition)] = tp.offset
        if self.partitions:
            self._consumer.incremental_assign(new)
            log.info(
                "new partitions assigned", extra={"partitions": [f"{t.topic}[{t.partition}]" for t in new]}
            )
        else:
            self._consumer.assign(new)
        self.partitions += new

    def _assigned_topics(self) -> set[str]:
        return {tp.topic for tp in self.partitions}

    def discover(self, every_s: float = 30.0) -> None:
        """Pick up partitions added to the topics since the start (read from their beginning)."""
        if time.monotonic() - self._last_discovery < every_s:
            return
        self._last_discovery = time.monotonic()
        for topic in self.topics:
            try:
                self._add_partitions(topic, self._partitions_of(topic))
            except Exception as exc:  # metadata hiccups must not stop the loop
                log.warning("partition discovery failed", extra={"topic": topic, "error": str(exc)})

    @property
    def assigned(self) -> bool:
        return all(any(tp.topic == t for tp in self.partitions) for t in self.topics)

    def poll(self, max_messages: int, timeout: float) -> list[confluent_kafka.Message]:
        """Up to ``max_messages`` (see :func:`.clients.consume_batch`)."""
        return consume_batch(self._consumer, max_messages, timeout)

    def positions(self) -> dict[TP, int]:
        """Next offset to read per partition; where nothing was read yet, where it started."""
        tps = [TopicPartition(tp.topic, tp.partition) for tp in self.partitions]
        out = {}
        for tp in self._consumer.position(tps):
            key = (tp.topic, tp.partition)
            out[key] = tp.offset if tp.offset >= 0 else self._started_at.get(key, 0)
        return out

    def rebuilt(self) -> bool:
        """Has every partition been read up to the ends marked at the start?"""
        if self.rebuilt_at is not None:
            return True
        for key, offset in self.positions().items():
            if offset < self.rebuild_to[key]:
                return False
        self.rebuilt_at = time.monotonic()
        return True

    def mark_ends(self) -> None:
        """Take the ends as of now as the next ends to reach (:meth:`rebuilt` asks again)."""
        self.rebuild_to = {
            (tp.topic, tp.partition): self._high(tp.topic, tp.partition) for tp in self.partitions
        }
        self.rebuilt_at = None

    def lag(self) -> dict[TP, int]:
        """Per partition: committed messages not read yet (0 = caught up).

        Watermarks come from the fetch responses librdkafka already has, asked for only while
        still unknown."""
        out = {}
        for (topic, partition), offset in self.positions().items():
            tp = TopicPartition(topic, partition)
            got = self._consumer.get_watermark_offsets(tp, cached=True)
            high = got[1] if got else -1
            if high < 0:
                high = self._consumer.get_watermark_offsets(tp, timeout=5, cached=False)[1]
            out[(topic, partition)] = max(high - offset, 0)
        return out

    def close(self) -> None:
        self._consumer.close()


def read_to_end(
    settings: CommonSettings,
    topics: list[str],
    *,
    name: str = "reader",
    timeout: float = 30.0,
    start: Start | Mapping[str, Start] = BEGINNING,
    **overrides: Any,
) -> Iterator[confluent_kafka.Message]:
    """Every committed message of ``topics`` (already prefixed) up to their ends as of the call."""
    reader = ReplayReader(settings, topics, name=name, start=start, **overrides)
    try:
        ends = dict(reader.rebuild_to)
        deadline = time.monotonic() + timeout
        while not reader.rebuilt():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{topics}: not read to their end within {timeout}s ({reader.positions()} of {ends})"
                )
            for msg in reader.poll(1000, 0.5):
                topic, partition, offset = position(msg)
                if offset < ends[(topic, partition)]:  # written after the call: not ours
                    yield msg
    finally:
        reader.close()


# Big enough for one models record (an artifact of up to 64 MiB) in a fetch.
LARGE_FETCH: dict[str, Any] = {
    "fetch.max.bytes": 128 * 1024 * 1024,
    "max.partition.fetch.bytes": 72 * 1024 * 1024,
}


def read_topic(
    settings: CommonSettings, topic: str, *, timeout: float = 30.0
) -> list[confluent_kafka.Message]:
    """Every committed message on ``topic`` (already prefixed), up to its end as of the call."""
    return list(read_to_end(settings, [topic], timeout=timeout, **LARGE_FETCH))
