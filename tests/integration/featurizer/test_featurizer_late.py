"""A pupdate that arrives after its label horizon had closed in event time: features yes, no
training instance, and never silently: a ``late_pupdate`` dead letter and a metric."""

from __future__ import annotations

import time

from libs.common.kafka.producer import Producer
from libs.common.serde import serde
from libs.common.topics import DEADLETTERS, FEATURES, INSTANCES, PUPDATES
from tests.support.facts import pupdate_fact
from tests.support.kafkautil import read_all, wait_for
from tests.support.procs import ServiceProcess

HORIZON_MS = 2_000


def _ids(settings, base: str, stem: str) -> list[str]:
    return [serde(stem).decode(m.value())["pupdate_id"] for m in read_all(settings, settings.topic(base))]


def test_a_pupdate_older_than_one_horizon_behind_the_watermark_is_dead_lettered_not_lost(topics, tmp_path):
    settings = topics
    producer = Producer(settings, name="facts")
    t0 = int(time.time() * 1000) - 60_000

    def write(pid: str, posted_at: int) -> None:
        producer.produce(
            settings.topic(PUPDATES), serde("pupdate").encode(pupdate_fact(pid, posted_at)), key=pid
        )
        producer.flush(30)

    featurizer = ServiceProcess(
        "featurizer",
        settings,
        tmp_path,
        horizon_ms=HORIZON_MS,
        lateness_ms=500,
        idle_flush_ms=500,
        versions='["v1"]',
        redis_view="false",
    )
    try:
        write("p-early", t0)
        write("p-next", t0 + 30_000)
        featurizer.wait_ready()
        # The watermark passes p-next once the input is idle: p-early's horizon is long closed.
        wait_for(
            lambda: (
                featurizer.metric_sum("pooch_featurizer_watermark_timestamp_seconds") * 1000 > t0 + 30_000
            ),
            timeout=60,
            what="the watermark past p-next",
        )
        assert _ids(settings, INSTANCES, "instance") == ["p-early"]
        write("p-late", t0 + 1_000)  # 29 s (many horizons) behind the watermark
        write("p-on-time", t0 + 30_100)  # behind the watermark too, but within one horizon
        wait_for(
            lambda: {"p-late", "p-on-time"} <= set(_ids(settings, FEATURES, "feature_vector")),
            timeout=60,
            what="features of the late pupdates",
        )
        letters = wait_for(
            lambda: [
                d
                for d in (
                    serde("dead_letter").decode(m.value())
                    for m in read_all(settings, settings.topic(DEADLETTERS))
                )
                if d["reason"] == "late_pupdate"
            ],
            timeout=30,
            what="a late_pupdate dead letter",
        )
        assert featurizer.metric_sum("pooch_featurizer_late_pupdates_total") == 1
        assert (
            featurizer.metric_sum("pooch_deadletters_total", service="featurizer", reason="late_pupdate") == 1
        )
    finally:
        assert featurizer.stop() == 0, featurizer.log_tail()
    assert len(letters) == 1
    (letter,) = letters
    assert letter["service"] == "featurizer" and letter["key"] == b"p-late"
    assert serde("pupdate").decode(letter["value"])["pupdate_id"] == "p-late"
    assert "no training instance" in letter["detail"]
    # Features once each; p-late never gets an instance, so nothing pretends to have labelled it.
    features = _ids(settings, FEATURES, "feature_vector")
    assert sorted(features) == ["p-early", "p-late", "p-next", "p-on-time"]
    assert "p-late" not in _ids(settings, INSTANCES, "instance")
