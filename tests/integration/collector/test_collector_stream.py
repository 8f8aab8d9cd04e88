"""The collector against the real broker: simulated traffic in, exact facts and dead letters out.

Each test runs ``python -m services.collector`` as a real process on topics of its own.
"""

from __future__ import annotations

import collections
import hashlib
import json
import time

import confluent_kafka
import pytest

from libs.common.kafka.producer import Producer
from libs.common.serde import Serde, default_store
from libs.common.topics import LIKES, LIKES_RAW, PUPDATES, PUPDATES_RAW
from sniffable import DUPLICATE, KAFKA_KINDS, KafkaSink, ListSink, SimConfig, SimulationReport, run
from tests.support.collector import CollectorProcess, Outputs, wait_for_outputs
from tests.support.kafkautil import end_offsets, read_all

# Every kind of bad input at 10%, likes over a one-minute horizon, dense posting: 10,000 records
# span about a minute of event time starting now, so the collector's clock judges them as live.
SIM = SimConfig(
    seed=11, max_events=10_000, bad_share=0.10, horizon_s=60, pupdates_per_hour=20_000, n_dogs=300
)
WAIT_S = 2  # waiting-room deadline for these tests (default 10 s)


def _simulate(settings, config: SimConfig = SIM) -> tuple[SimulationReport, list]:
    events = ListSink()
    report = run(config, events)
    assert set(report.bad_by_kind) | {DUPLICATE} == set(KAFKA_KINDS), "not every kind of bad input was sent"
    return report, events.events


def _send(settings, events) -> None:
    sink = KafkaSink(settings)
    for ev in events:
        sink.send(ev)
    sink.flush(30)


def _check_exact(report: SimulationReport, out: Outputs) -> None:
    """Each good event once among the facts, each bad one dead-lettered once with its kind."""
    good = set(report.good_pupdate_ids) | set(report.good_like_ids)
    ids = out.fact_ids
    assert report.ids_complete
    assert set(ids) == good, f"missing {len(good - set(ids))}, unexpected {len(set(ids) - good)}"
    assert max(ids.values()) == 1, "an event was written twice"
    assert {f["event_id"] for f in out.pupdates} == set(report.good_pupdate_ids)
    letters = collections.Counter((d["reason"], hashlib.sha256(d["value"]).hexdigest()) for d in out.dead)
    expected = collections.Counter((b.kind, b.sha256) for b in report.bad)
    assert letters == expected
    assert all(d["service"] == "collector" and d["source_offset"] is not None for d in out.dead)
    # the counts add up to what was sent
    assert len(ids) + sum(letters.values()) + report.duplicates == report.sent


def test_ten_thousand_simulated_events_become_exact_facts_and_dead_letters(topics, tmp_path):
    settings = topics
    report, events = _simulate(settings)
    _send(settings, events)
    collector = CollectorProcess(settings, tmp_path, waiting_timeout_s=WAIT_S).wait_ready()
    try:
        out = wait_for_outputs(settings, report.good_pupdates + report.good_likes, report.bad_total)
        _check_exact(report, out)
        assert collector.metric_sum("pooch_collector_duplicates_total") == report.duplicates
        assert (
            collector.metric_sum("pooch_collector_accepted_total") == report.good_pupdates + report.good_likes
        )
        for kind, n in report.bad_by_kind.items():
            assert collector.metric_sum("pooch_collector_rejected_total", reason=kind, path="stream") == n
        assert collector.metric_sum("pooch_collector_waiting_events") == 0
    finally:
        assert collector.stop() == 0, collector.log_tail()
    _check_exact(report, Outputs(settings))  # nothing more after a clean stop


@pytest.mark.serial  # a 2 s waiting room: a starved collector dead-letters good likes
def test_sigkill_mid_stream_and_restart_gives_the_same_facts_no_loss_no_duplicate(topics, tmp_path):
    settings = topics
    report, events = _simulate(settings)
    half = len(events) // 2
    _send(settings, events[:half])
    # Small batches: many transactions, so the kill lands with work in flight and events waiting.
    options = {"waiting_timeout_s": WAIT_S, "batch_size": 100}
    first = CollectorProcess(settings, tmp_path, **options).wait_ready()
    try:
        facts_topic = settings.topic("likes")
        deadline = time.monotonic() + 60
        while end_offsets(settings, facts_topic) < 1500:
            assert time.monotonic() < deadline, first.log_tail()
            time.sleep(0.02)
    finally:
        first.kill()
    at_kill = Outputs(settings)
    assert len(at_kill.fact_ids) < report.good_pupdates + report.good_likes, "the kill came too late"
    _send(settings, events[half:])
    second = CollectorProcess(settings, tmp_path, **options).wait_ready()
    try:
        out = wait_for_outputs(settings, report.good_pupdates + report.good_likes, report.bad_total)
        _check_exact(report, out)
        # Informational: records read again after the kill whose output already existed.
        print(f"replayed after restart: {second.metric_sum('pooch_collector_replayed_total'):.0f}")
    finally:
        assert second.stop() == 0, second.log_tail()
    _check_exact(report, Outputs(settings))


def test_every_older_schema_version_comes_out_current_with_defaults(topics, tmp_path):
    settings = topics
    now = int(time.time() * 1000)
    store = default_store()
    base = {
        "pupdate_id": "p",
        "dog_id": "rex",
        "posted_at": now - 5000,
        "hashtags": ["#goodboy"],
        "dog_followers": 42,
    }
    pupdates = {
        3: base
        | {
            "event_id": "v3",
            "pupdate_id": "p3",
            "app_version": "3.2.0",
            "caption": "hi",
            "photo_filter": "juno",
            "dog": {"breed": "Boxer", "size": "LARGE", "age_months": 40},
            "country": "NG",
        },
        2: base
        | {
            "event_id": "v2",
            "pupdate_id": "p2",
            "app_version": "2.8.1",
            "caption": None,
            "photo_filter": "lark",
            "dog": {"breed": "Boxer", "size": "LARGE"},
        },
        1: base | {"event_id": "v1", "pupdate_id": "p1", "app_version": "1.4.2"},
    }
    likes = {
        1: {"event_id": "l1", "pupdate_id": "p1", "sniffer_id": "s1", "liked_at": now - 1000},
        2: {
            "event_id": "l2",
            "pupdate_id": "p2",
            "sniffer_id": "s2",
            "liked_at": now - 1000,
            "app_version": "3.0.2",
        },
    }
    producer = Producer(settings, name="old-apps")
    # The 1.x pupdate and its like come first, on other partitions than the profiled posts:
    # they wait for the dog and the pupdate, then come out complete.
    producer.produce(
        settings.topic(LIKES_RAW), Serde("like_raw", writer_version=1).encode(likes[1]), key="p1"
    )
    producer.produce(
        settings.topic(PUPDATES_RAW), Serde("pupdate_raw", writer_version=1).encode(pupdates[1]), key="p1"
    )
    for version in (3, 2):
        rec = pupdates[version]
        value = Serde("pupdate_raw", writer_version=version).encode(rec)
        producer.produce(settings.topic(PUPDATES_RAW), value, key=rec["pupdate_id"])
    producer.produce(
        settings.topic(LIKES_RAW), Serde("like_raw", writer_version=2).encode(likes[2]), key="p2"
    )
    producer.flush(30)

    collector = CollectorProcess(settings, tmp_path, waiting_timeout_s=10).wait_ready()
    try:
        out = wait_for_outputs(settings, 5, 0, timeout=30)
    finally:
        assert collector.stop() == 0, collector.log_tail()
    facts = {f["event_id"]: f for f in out.pupdates}
    fp = {v: store.version("pupdate_raw", v).fingerprint.hex() for v in (1, 2, 3)}
    assert facts["v3"] | {"collected_at": 0} == {
        "event_id": "v3",
        "pupdate_id": "p3",
        "dog_id": "rex",
        "posted_at": now - 5000,
        "hashtags": ["#goodboy"],
        "caption": "hi",
        "photo_filter": "juno",
        "dog": {"breed": "Boxer", "size": "LARGE", "age_months": 40},
        "dog_followers": 42,
        "country": "NG",
        "app_version": "3.2.0",
        "raw_schema": fp[3],
        "collected_at": 0,
    }
    assert facts["v2"]["dog"] == {"breed": "Boxer", "size": "LARGE", "age_months": None}
    assert facts["v2"]["country"] is None and facts["v2"]["raw_schema"] == fp[2]
    # 1.x: no caption, filter or country; the profile is the dog's latest (the v3 post, same time)
    assert (
        facts["v1"]["caption"] is None
        and facts["v1"]["photo_filter"] is None
        and facts["v1"]["country"] is None
    )
    assert facts["v1"]["dog"]["breed"] == "Boxer" and facts["v1"]["dog"]["size"] == "LARGE"
    assert facts["v1"]["raw_schema"] == fp[1]
    got_likes = {f["event_id"]: f for f in out.likes}
    assert got_likes["l1"]["app_version"] == "unknown"
    assert got_likes["l2"]["app_version"] == "3.0.2"
    assert out.dead == []


def _owns_partitions(collector: CollectorProcess) -> bool:
    for line in collector.log_path.read_text().splitlines():
        if '"partitions assigned"' in line and json.loads(line).get("partitions"):
            return True
    return False


def test_what_another_instance_accepted_is_known_to_every_instance(topics, tmp_path):
    """Two collectors share the raw partitions; pupdates and dog profiles reach the other via the facts."""
    settings = topics
    collectors = [
        CollectorProcess(settings, tmp_path, instance_id=f"i{i}", waiting_timeout_s=8) for i in range(2)
    ]
    try:
        for c in collectors:
            c.wait_ready()
        deadline = time.monotonic() + 30
        while not all(_owns_partitions(c) for c in collectors):
            assert time.monotonic() < deadline, "the group never gave both members partitions"
            time.sleep(0.2)
        now = int(time.time() * 1000)
        producer = confluent_kafka.Producer(settings.kafka_config())
        v3 = Serde("pupdate_raw", writer_version=3)
        v1 = Serde("pupdate_raw", writer_version=1)
        like = Serde("like_raw", writer_version=2)
        profiled = {
            "event_id": "reg",
            "pupdate_id": "p-reg",
            "dog_id": "nomad",
            "posted_at": now,
            "hashtags": [],
            "dog_followers": 5,
            "app_version": "web-3.2.0",
            "dog": {"breed": "Mixed", "size": "MEDIUM", "age_months": None},
        }
        producer.produce(settings.topic(PUPDATES_RAW), v3.encode(profiled), key="p-reg", partition=0)
        # Whatever the assignment (by topic or by partition), some of these are read by the
        # instance that did not accept p-reg: a 1.x post of the same dog, or a like of p-reg.
        for p in (1, 2):
            rec = {k: profiled[k] for k in ("dog_id", "posted_at", "hashtags", "dog_followers")}
            rec |= {"event_id": f"old{p}", "pupdate_id": f"p-old{p}", "app_version": "1.9.7"}
            producer.produce(settings.topic(PUPDATES_RAW), v1.encode(rec), key=rec["pupdate_id"], partition=p)
        for p in (0, 1, 2):
            rec = {"event_id": f"like{p}", "pupdate_id": "p-reg", "sniffer_id": "s", "liked_at": now + 1}
            producer.produce(
                settings.topic(LIKES_RAW), like.encode(rec | {"app_version": "3.2.0"}), partition=p
            )
        assert producer.flush(30) == 0
        out = wait_for_outputs(settings, 6, 0, timeout=30)
        assert sorted(f["event_id"] for f in out.pupdates) == ["old1", "old2", "reg"]
        assert sorted(f["event_id"] for f in out.likes) == ["like0", "like1", "like2"]
        assert all(f["dog"]["size"] == "MEDIUM" for f in out.pupdates)
        assert out.dead == []
        writers = {
            dict(m.headers())["event_id"]: dict(m.headers())["collector"]
            for topic in (PUPDATES, LIKES)
            for m in read_all(settings, settings.topic(topic))
        }
        assert len(set(writers.values())) == 2, (
            f"one instance did all the work, nothing was proved: {writers}"
        )
    finally:
        for c in collectors:
            assert c.stop() == 0, c.log_tail()
