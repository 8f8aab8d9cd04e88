"""Consume-transform-produce in Kafka transactions: outputs and input offsets commit together.

A read_committed reader downstream then sees each input's outputs exactly once, through crashes:
a batch whose transaction did not commit is aborted (its outputs invisible) and re-read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import confluent_kafka
from confluent_kafka import KafkaException, TopicPartition

from libs.common.kafka.consumer import Consumer, next_offsets
from libs.common.kafka.producer import Producer
from libs.common.lifecycle import Shutdown

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[confluent_kafka.Message], Producer], None]


class TransactionalLoop:
    """Runs ``handler`` on each batch inside one transaction with the batch's offsets."""

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        *,
        batch_size: int = 500,
        poll_timeout: float = 0.2,
        txn_timeout: float = 30.0,
        renew: Callable[[], Producer] | None = None,
    ) -> None:
        if consumer.auto_commit:
            raise ValueError("a transactional loop needs a consumer with enable.auto.commit=false")
        self.consumer = consumer
        self.producer = producer
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.txn_timeout = txn_timeout
        self.committed_batches = 0
        self.aborted_batches = 0
        self.last_commit_monotonic = time.monotonic()
        # Builds a replacement producer (same transactional.id) when an abort fails fatally.
        self.renew = renew
        self.renewed_producers = 0
        producer.init_transactions(txn_timeout)

    def run(self, handler: BatchHandler, shutdown: Shutdown) -> None:
        while not shutdown.is_set():
            self.run_once(handler)

    def run_once(self, handler: BatchHandler) -> int:
        batch = self.consumer.poll_batch(self.batch_size, self.poll_timeout)
        if not batch:
            return 0
        self.producer.begin_transaction()
        try:
            handler(batch, self.producer)
            self.producer.send_offsets_to_transaction(
                next_offsets(batch), self.consumer.raw.consumer_group_metadata(), self.txn_timeout
            )
            self.producer.commit_transaction(self.txn_timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal() or not err.txn_requires_abort():
                raise
            log.warning("transaction aborted; batch will be re-read", extra={"error": err.str()})
            self._abort_and_rewind(batch)
            return 0
        except Exception:
            self._abort_and_rewind(batch)
            raise
        self.committed_batches += 1
        self.last_commit_monotonic = time.monotonic()
        return len(batch)

    def _abort_and_rewind(self, batch: list[confluent_kafka.Message]) -> None:
        self.aborted_batches += 1
        try:
            self.producer.abort_transaction(self.txn_timeout)
        except KafkaException as exc:
            # librdkafka can fail an abort that closely follows produce calls with a fatal
            # INVALID_TXN_STATE (confluentinc/librdkafka#4849). A new producer with the same
            # transactional.id fences the old epoch and the broker aborts what it left open.
            if not exc.args[0].fatal() or self.renew is None:
                raise
            log.warning("abort failed fatally; replacing the producer", extra={"error": str(exc)})
            self.producer = self.renew()
            self.producer.init_transactions(self.txn_timeout)
            self.renewed_producers += 1
        first: dict[tuple[str, int], int] = {}
        for m in batch:
            key = (m.topic(), m.partition())
            first[key] = min(first.get(key, m.offset()), m.offset())
        for (topic, partition), offset in first.items():
            if (topic, partition) in self.consumer.assigned:
                self.consumer.raw.seek(TopicPartition(topic, partition, offset))
