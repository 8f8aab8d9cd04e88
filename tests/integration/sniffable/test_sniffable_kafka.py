"""The simulated app into real Kafka: what lands on the raw topics is exactly what the report says."""

from __future__ import annotations

import hashlib
from collections import Counter

from libs.common.serde import serde
from libs.common.settings import CommonSettings
from libs.common.topics import LIKES_RAW, PUPDATES_RAW
from sniffable import KafkaSink, SimConfig, run
from tests.support.kafkautil import read_all

START = 1_700_000_000_000


def test_simulation_lands_on_the_raw_topics_exactly_as_reported(topics: CommonSettings, tmp_path):
    config = SimConfig(seed=2024, start_ms=START, max_events=2_000, bad_share=0.05)
    sink = KafkaSink(topics)
    try:
        report = run(config, sink, report_path=tmp_path / "report.json")
    finally:
        sink.close()
    assert report.sent == 2_000
    assert report.sink["produced"] == 2_000

    pupdates = read_all(topics, topics.topic(PUPDATES_RAW))
    likes = read_all(topics, topics.topic(LIKES_RAW))
    assert len(pupdates) == report.sent_by_topic[PUPDATES_RAW]
    assert len(likes) == report.sent_by_topic[LIKES_RAW]

    # every good event is there once, keyed by its pupdate_id; each duplicate once more
    seen: Counter[str] = Counter()
    keys_ok = True
    for stem, messages in (("pupdate_raw", pupdates), ("like_raw", likes)):
        for m in messages:
            try:
                record = serde(stem).decode(m.value())
            except ValueError:
                continue
            seen[record["event_id"]] += 1
            keys_ok &= m.key() == record["pupdate_id"].encode()
    assert keys_ok
    dupes = Counter(report.duplicate_ids)
    for event_id in report.good_pupdate_ids + report.good_like_ids:
        assert seen[event_id] == 1 + dupes[event_id]

    # and every bad record is on the wire byte for byte
    wire = Counter(hashlib.sha256(m.value()).hexdigest() for m in pupdates + likes)
    for bad in report.bad:
        assert wire[bad.sha256] >= 1, bad
