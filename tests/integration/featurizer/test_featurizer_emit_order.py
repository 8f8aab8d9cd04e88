"""Features are written once each through a restart, whatever order their event times came in.

Features are released in event-time order, but the committed progress of a pupdates partition
is an offset. A pupdate that arrived late (an older ``posted_at`` at a higher offset) was written
ahead of that offset and written again after a restart: a doubled feature vector, found by the
incident suite (scenario 7 redeploys the featurizer). And a second fact of a pupdate_id (another
event_id) is ignored by the engine: it must not hold the progress (or, now, the emission) back.
"""

from __future__ import annotations

import collections
import time

from libs.common.kafka.clients import new_producer
from libs.common.serde import serde
from libs.common.topics import FEATURES, PUPDATES
from tests.support.facts import pupdate_fact
from tests.support.kafkautil import read_all, wait_for
from tests.support.procs import ServiceProcess


def _features(settings) -> collections.Counter[str]:
    decode = serde("feature_vector").decode
    records = read_all(settings, settings.topic(FEATURES))
    return collections.Counter(decode(m.value())["pupdate_id"] for m in records)


def test_a_late_arrival_is_featurized_once_through_a_restart(topics, tmp_path):
    settings = topics
    producer = new_producer(settings, name="facts")
    t0 = int(time.time() * 1000) - 120_000

    def write(pid: str, posted_at: int, event_id: str | None = None) -> None:
        value = serde("pupdate").encode(pupdate_fact(pid, posted_at, event_id=event_id))
        producer.produce(settings.topic(PUPDATES), value, key=pid, partition=0)
        assert producer.flush(30) == 0

    def featurizer() -> ServiceProcess:
        # idle_flush far away: the watermark stays one lateness behind the newest fact
        return ServiceProcess(
            "featurizer",
            settings,
            tmp_path,
            horizon_ms=2_000,
            lateness_ms=500,
            idle_flush_ms=600_000,
            versions='["v1"]',
            redis_view="false",
        )

    def watermark_past(proc: ServiceProcess, at: int) -> None:
        # the gauge is set after the cycle's emission committed
        wait_for(
            lambda: proc.metric_sum("pooch_featurizer_watermark_timestamp_seconds") * 1000 >= at,
            timeout=60,
            what=f"the watermark past {at - t0} ms",
        )

    write("p-a", t0 + 10_000)  # offset 0
    write("p-b", t0)  # offset 1: arrived after p-a, posted before it
    first = featurizer()
    try:
        first.wait_ready()
        watermark_past(first, t0 + 9_000)  # p-b released, p-a not yet
    finally:
        assert first.stop() == 0, first.log_tail()
    write("p-a", t0 + 10_000, event_id="e-p-a-again")  # offset 2: a second fact of p-a
    second = featurizer()
    try:
        second.wait_ready()
        watermark_past(second, t0 + 9_000)
        write("p-c", t0 + 20_000)  # offset 3: releases p-a and p-b
        write("p-d", t0 + 40_000)  # offset 4: releases p-c, behind the ignored second p-a
        watermark_past(second, t0 + 39_000)
        got = wait_for(
            lambda: f if {"p-a", "p-b", "p-c"} <= set(f := _features(settings)) else None,
            timeout=30,
            what="features of p-a, p-b and p-c",
        )
    finally:
        assert second.stop() == 0, second.log_tail()
    assert got == {"p-a": 1, "p-b": 1, "p-c": 1}, got
