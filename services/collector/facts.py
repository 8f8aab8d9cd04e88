"""The facts topics as the collector's changelog: rebuild the state on start, then tail them.

One :class:`libs.common.kafka.replay.ReplayReader` over every partition of ``pupdates``,
``likes`` and ``deadletters`` from the start of the state window. On start it reads to
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

from libs.common.kafka.errors import KafkaUnavailableError
from libs.common.kafka.replay import ReplayReader, Start
from libs.common.retry import kafka_call
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
        self.reader: ReplayReader | None = None
        self.records = 0
        self.rebuilt = False

    def rebuild(self, timeout: float) -> int:
        """Assign from the window start and read to the end; returns records read."""
        started = time.monotonic()
        window_start = int(time.time() * 1000 - self.settings.state_window_s * 1000)
        self.close()
        self.reader = kafka_call(
            lambda: ReplayReader(
                self.common,
                self.topics,
                name=f"collector-facts-{self.settings.instance_id}",
                start=Start(timestamp_ms=window_start),
                **{"fetch.wait.max.ms": 50, "logger": rdkafka_logger()},
            ),
            what="reading the facts topics (are the contract topics created?)",
            deadline_s=timeout,
        )
        self.records = 0
        n = self.catch_up(timeout - (time.monotonic() - started), skip_own=False)
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

    def catch_up(self, timeout: float, *, skip_own: bool = True) -> int:
        """Read until every partition reaches its end as of now (bounded by ``timeout``)."""
        reader = self.reader
        assert reader is not None, "rebuild() first"
        deadline = time.monotonic() + timeout
        kafka_call(reader.mark_ends, what="reading the facts' end offsets", deadline_s=max(timeout, 1.0))
        n = 0
        while not reader.rebuilt():
            if time.monotonic() > deadline:
                behind = [k for k, o in reader.positions().items() if o < reader.rebuild_to[k]]
                raise KafkaUnavailableError(
                    f"facts not read to their end within {timeout:.0f} s: {behind[:5]}"
                )
            n += self.poll(max_messages=5000, timeout=0.2, skip_own=skip_own)
        return n

    def poll(self, *, max_messages: int = 2000, timeout: float = 0.0, skip_own: bool = True) -> int:
        """Apply what has arrived; never blocks longer than ``timeout``."""
        if self.reader is None:
            return 0
        msgs = self.reader.poll(max_messages, timeout)
        if not msgs:
            return 0
        now_ms = int(time.time() * 1000)
        now = time.monotonic()
        apply = self.processor.apply_fact
        for msg in msgs:
            apply(msg, skip_own, now_ms, now)
        self.records += len(msgs)
        return len(msgs)

    def close(self) -> None:
        if self.reader is None:
            return
        try:
            self.reader.close()
        except Exception:
            log.exception("closing the facts consumer failed")
        self.reader = None
