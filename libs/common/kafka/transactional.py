"""Kafka transactions, owned here once: every service's outputs commit through this module.

:class:`TransactionalProducer` is the only code that begins, commits or aborts a transaction:

* ``init()`` fences every earlier producer with the same ``transactional.id`` (a restarted
  instance, a stalled leader) and aborts what it left open;
* ``transaction()`` runs a body inside one transaction and commits it, with consumed offsets
  (or progress metadata) when the body sent them; a retriable commit failure is retried until
  the timeout;
* a failed body or commit is aborted and the *original* error raised (an abort that fails is
  logged, never raised in its place): :class:`TransactionAborted` when Kafka says the
  transaction must be redone, the body's own error otherwise;
* an abort that fails renews the producer: a new one with the same ``transactional.id`` fences
  the broken epoch and the broker aborts what it left open (librdkafka can fail an abort that
  closely follows produce calls with a fatal INVALID_TXN_STATE, confluentinc/librdkafka#4849);
* a fatal error (another producer took the ``transactional.id`` over) raises :class:`Fenced`:
  this incarnation must stop writing.

:class:`TransactionalLoop` is the consume-transform-produce loop on top (the scorer's stream):
a read_committed reader downstream sees each input's outputs exactly once, through crashes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaException, TopicPartition

from libs.common.kafka.clients import Headers, close_producer, new_producer, position, produce_waiting
from libs.common.kafka.consumer import Consumer, next_offsets
from libs.common.kafka.errors import KafkaUnavailableError
from libs.common.lifecycle import Shutdown
from libs.common.retry import kafka_call
from libs.common.settings import CommonSettings

log = logging.getLogger(__name__)


class TransactionAborted(KafkaUnavailableError):
    """The transaction was aborted: none of its outputs are visible; redo its inputs."""


class Fenced(RuntimeError):
    """A newer producer with the same transactional.id took over: this one must stop writing."""


def _kafka_error(exc: BaseException) -> confluent_kafka.KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], confluent_kafka.KafkaError):
        return exc.args[0]
    return None


def is_fatal(exc: BaseException) -> bool:
    err = _kafka_error(exc)
    return err is not None and err.fatal()


class TransactionalProducer:
    """A transactional producer that renews itself when its transaction state breaks."""

    def __init__(
        self,
        settings: CommonSettings,
        *,
        name: str,
        transactional_id: str,
        timeout_s: float = 30.0,
        **overrides: Any,
    ) -> None:
        self.transactional_id = transactional_id
        self.timeout_s = timeout_s
        self._build = lambda: new_producer(
            settings, name=name, **({"transactional.id": transactional_id} | overrides)
        )
        # The raw client: replaced on renewal, so hold this object, never the client.
        self.raw: confluent_kafka.Producer = self._build()
        self.initialised = False
        self.committed = 0
        self.aborted = 0
        self.renewed = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def init(self, *, deadline_s: float | None = None, shutdown: Shutdown | None = None) -> None:
        """Fence earlier producers with this transactional.id; retried while Kafka is away
        (for ``deadline_s``, by default the transaction timeout, or until shutdown)."""
        if deadline_s is None and shutdown is None:
            deadline_s = self.timeout_s
        kafka_call(
            lambda: self.raw.init_transactions(self.timeout_s),
            what="init_transactions",
            deadline_s=deadline_s,
            shutdown=shutdown,
        )
        self.initialised = True

    def renew(self) -> None:
        """Replace the client: the new epoch fences the old one, whose open transaction the
        broker aborts."""
        with contextlib.suppress(Exception):
            self.raw.flush(0)
        self.raw = self._build()
        self.renewed += 1
        self.raw.init_transactions(self.timeout_s)

    def close(self, timeout: float = 10.0) -> None:
        close_producer(self.raw, timeout)

    # -- inside a transaction ------------------------------------------------------------------

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None = None,
        *,
        headers: Headers | None = None,
        block_seconds: float = 30.0,
    ) -> None:
        """Queue one output of the open transaction; waits (bounded) for queue space.

        No per-message delivery callback: a message that fails delivery fails the commit,
        and the whole transaction is redone (a Python callback would cost ~1 µs a record)."""
        try:  # the hot path (the scorer's stream, ~50,000 a second): one call into the client
            self.raw.produce(topic, value, key, headers=headers)
        except BufferError:
            produce_waiting(self.raw, topic, value, key, headers=headers, block_seconds=block_seconds)

    def send_offsets(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        """Commit these input offsets (with their metadata) with the open transaction.

        On a helper thread, given up a little after the timeout: librdkafka can block in this
        call far past its own timeout once the group coordinator went away with the broker
        (confluentinc/librdkafka#5456, #5511; seen here after a 20 s outage, stuck for minutes).
        Giving up fails the transaction; its abort then renews the producer, whose new epoch
        fences the stuck one."""
        if not offsets:
            return
        raw = self.raw
        _bounded(
            lambda: raw.send_offsets_to_transaction(offsets, group_metadata, self.timeout_s),
            self.timeout_s + 5.0,
            "send_offsets_to_transaction",
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[TransactionalProducer]:
        """``with txn.transaction() as out: out.produce(...); out.send_offsets(...)``: committed
        when the body returns, aborted (and the cause raised) when anything fails."""
        if not self.initialised:
            raise RuntimeError("init() the transactional producer before its first transaction")
        try:
            self.raw.begin_transaction()
            yield self
            self._commit()
        except BaseException as exc:
            if is_fatal(exc):
                raise Fenced(f"{self.transactional_id}: {exc}") from exc
            self._abort()
            err = _kafka_error(exc)
            if err is not None and err.txn_requires_abort():
                raise TransactionAborted(f"transaction aborted: {err.str()}") from exc
            raise
        self.committed += 1

    def _commit(self) -> None:
        def retriable(exc: BaseException) -> bool:
            err = _kafka_error(exc)
            return err is not None and err.retriable() and not err.txn_requires_abort()

        kafka_call(
            lambda: self.raw.commit_transaction(self.timeout_s),
            what="commit_transaction",
            deadline_s=self.timeout_s,
            retry_if=retriable,
        )

    def _abort(self) -> None:
        self.aborted += 1
        try:
            self.raw.abort_transaction(self.timeout_s)
        except Exception as exc:
            log.warning("abort failed; replacing the producer", extra={"error": str(exc)})
            self.renew()


def _bounded(fn: Callable[[], object], seconds: float, what: str) -> None:
    """``fn()`` on a daemon thread; raises its error, or :class:`KafkaUnavailableError` when it
    has not returned after ``seconds`` (the thread is left to its fate: it holds no lock of ours)."""
    failure: list[BaseException] = []

    def call() -> None:
        try:
            fn()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=call, name=f"kafka-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise KafkaUnavailableError(f"{what} still blocked after {seconds:.0f} s; the producer is replaced")
    if failure:
        raise failure[0]


BatchHandler = Callable[[list[confluent_kafka.Message], TransactionalProducer], None]


class TransactionalLoop:
    """Runs ``handler`` on each polled batch inside one transaction with the batch's offsets."""

    def __init__(
        self,
        consumer: Consumer,
        producer: TransactionalProducer,
        *,
        batch_size: int = 500,
        poll_timeout: float = 0.2,
    ) -> None:
        if consumer.auto_commit:
            raise ValueError("a transactional loop needs a consumer with enable.auto.commit=false")
        self.consumer = consumer
        self.producer = producer
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.committed_batches = 0
        self.aborted_batches = 0
        self.last_commit_monotonic = time.monotonic()
        if not producer.initialised:
            producer.init()

    def run(self, handler: BatchHandler, shutdown: Shutdown) -> None:
        while not shutdown.is_set():
            self.run_once(handler)

    def run_once(self, handler: BatchHandler) -> int:
        self.consumer.check_membership()
        batch = self.consumer.poll_batch(self.batch_size, self.poll_timeout)
        if not batch:
            return 0
        try:
            with self.producer.transaction() as out:
                handler(batch, out)
                out.send_offsets(next_offsets(batch), self.consumer.raw.consumer_group_metadata())
        except TransactionAborted as exc:
            log.warning("transaction aborted; batch will be re-read", extra={"error": str(exc)})
            self.aborted_batches += 1
            self._rewind(batch)
            return 0
        except Exception:
            self.aborted_batches += 1
            self._rewind(batch)
            raise
        self.committed_batches += 1
        self.last_commit_monotonic = time.monotonic()
        return len(batch)

    def _rewind(self, batch: list[confluent_kafka.Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for m in batch:
            topic, partition, offset = position(m)
            first[(topic, partition)] = min(first.get((topic, partition), offset), offset)
        for (topic, partition), offset in first.items():
            if (topic, partition) in self.consumer.assigned:
                self.consumer.raw.seek(TopicPartition(topic, partition, offset))
