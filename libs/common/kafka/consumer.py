"""A batch consumer that stores an offset only after the caller says its outputs are durable.

Auto-commit stays on, but with ``enable.auto.offset.store=false`` it only ever commits offsets
the caller stored through :meth:`Consumer.store`, i.e. after processing: at-least-once, and no
work lost when the process dies between batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from libs.common.kafka.clients import consume_batch, new_consumer, position
from libs.common.kafka.errors import KafkaUnavailableError
from libs.common.settings import CommonSettings

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "auto.offset.reset": "earliest",
    "enable.auto.commit": True,
    "enable.auto.offset.store": False,
    "auto.commit.interval.ms": 1000,
    "isolation.level": "read_committed",
    "partition.assignment.strategy": "cooperative-sticky",
    "session.timeout.ms": 10000,
    "heartbeat.interval.ms": 1000,
    "max.poll.interval.ms": 300000,
    "fetch.wait.max.ms": 100,
    "enable.partition.eof": False,
}

# Longest a member may stay without rejoining after its partitions were lost. A cooperative
# librdkafka consumer that lost its session while the broker was away was seen never to rejoin
# (no JoinGroup, not even a connection attempt, minutes after the broker was back); a new
# consumer does, so the loop owning this one is made to fail and is built again.
REJOIN_DEADLINE_S = 60.0


class Consumer:
    def __init__(
        self,
        settings: CommonSettings,
        *,
        name: str,
        group_id: str,
        topics: Iterable[str],
        on_assign: Callable[[list[TopicPartition]], None] | None = None,
        on_revoke: Callable[[list[TopicPartition]], None] | None = None,
        **overrides: Any,
    ) -> None:
        conf = DEFAULTS | overrides
        self.name = name
        self.topics = list(topics)
        self.auto_commit = bool(conf["enable.auto.commit"])
        self._consumer = new_consumer(settings, name=name, group_id=group_id, **conf)
        self._user_assign = on_assign
        self._user_revoke = on_revoke
        self.assigned: set[tuple[str, int]] = set()
        self.rebalances = 0
        self.lost_since: float | None = None
        self._consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    @property
    def raw(self) -> confluent_kafka.Consumer:
        return self._consumer

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        self.lost_since = None
        self.assigned |= {(p.topic, p.partition) for p in partitions}
        log.info("partitions assigned", extra={"partitions": _names(partitions)})
        if self._user_assign:
            self._user_assign(partitions)

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        if self._user_revoke:
            self._user_revoke(partitions)
        # Hand over what this member finished before another member takes the partitions.
        if self.auto_commit:
            self.commit()
        self.assigned -= {(p.topic, p.partition) for p in partitions}
        log.info("partitions revoked", extra={"partitions": _names(partitions)})

    def _on_lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # Lost, not revoked: another member may already own them, so commit nothing.
        self.assigned -= {(p.topic, p.partition) for p in partitions}
        if self.lost_since is None:
            self.lost_since = time.monotonic()
        log.warning("partitions lost", extra={"partitions": _names(partitions)})

    def check_membership(self, deadline_s: float = REJOIN_DEADLINE_S) -> None:
        """Raise :class:`KafkaUnavailableError` when partitions were lost ``deadline_s`` ago and
        no assignment (even an empty one) has come since."""
        if self.lost_since is not None and time.monotonic() - self.lost_since > deadline_s:
            raise KafkaUnavailableError(
                f"{self.name}: partitions lost {time.monotonic() - self.lost_since:.0f} s ago and the "
                "group not rejoined; a new consumer will join"
            )

    def poll_batch(self, max_messages: int = 500, timeout: float = 0.5) -> list[confluent_kafka.Message]:
        """Up to ``max_messages`` data messages (see :func:`.clients.consume_batch`)."""
        return consume_batch(self._consumer, max_messages, timeout)

    def store(self, messages: Iterable[confluent_kafka.Message]) -> None:
        """Mark messages processed: their offsets become eligible for commit."""
        offsets = next_offsets(messages)
        if offsets:
            self._consumer.store_offsets(offsets=offsets)

    def commit(self) -> None:
        """Commit stored offsets now (synchronously); nothing stored is not an error."""
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("offset commit failed", extra={"error": str(exc)})

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages between this member's position and the end of each assigned partition."""
        out: dict[tuple[str, int], int] = {}
        assignment = self._consumer.assignment()
        if not assignment:
            return out
        for tp in self._consumer.position(assignment):
            _low, high = self._consumer.get_watermark_offsets(tp, timeout=1.0, cached=True) or (0, 0)
            pos = tp.offset if tp.offset >= 0 else 0
            out[(tp.topic, tp.partition)] = max(high - pos, 0)
        return out

    def close(self) -> None:
        """Commit what was stored and leave the group cleanly (prompt rebalance for the others)."""
        try:
            if self.auto_commit:
                self.commit()
        finally:
            self._consumer.close()


def next_offsets(messages: Iterable[confluent_kafka.Message]) -> list[TopicPartition]:
    """Per partition, the offset after the last message: what to commit once they are done."""
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        topic, partition, offset = position(m)
        last[(topic, partition)] = max(last.get((topic, partition), -1), offset)
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{p.topic}[{p.partition}]" for p in partitions]
