"""The collector's stateful decisions, record by record, without a broker.

Outputs are read back through ``apply_fact`` exactly as the stream's rebuild reads the topics,
so restart behaviour (nothing written twice) is checked here too.
"""

from __future__ import annotations

import pytest

from libs.common.serde import default_store
from services.collector import validation as v
from tests.support.collector_fakes import NOW_MS, like, make_processor, pupdate

T0 = 1000.0  # monotonic clock of the tests


def _process(proc, msgs, now=T0):
    for msg in msgs:
        proc.process(msg, NOW_MS, now)


def test_old_schema_versions_come_out_current_with_defaults_filled_in():
    proc, sink, feed = make_processor()
    store = default_store()
    _process(
        proc,
        [
            feed.pupdate(pupdate(3, event_id="e3", pupdate_id="p3"), 3),
            feed.pupdate(pupdate(2, event_id="e2", pupdate_id="p2"), 2),
            feed.pupdate(pupdate(1, event_id="e1", pupdate_id="p1"), 1),
            feed.like(like(1, event_id="l1", pupdate_id="p1"), 1),
            feed.like(like(2, event_id="l2", pupdate_id="p2"), 2),
        ],
    )
    facts = {f["event_id"]: f for f in sink.on("pupdates")}
    assert facts["e3"]["dog"] == {"breed": "Pug", "size": "SMALL", "age_months": 30}
    assert facts["e3"]["country"] == "BR"
    assert facts["e2"]["dog"] == {"breed": "Pug", "size": "SMALL", "age_months": None}
    assert facts["e2"]["country"] is None and facts["e2"]["caption"] == "Sunday vibes"
    # 1.x sends no profile: it comes from the registry (the latest profiled post of the dog).
    assert facts["e1"]["dog"] == facts["e2"]["dog"] or facts["e1"]["dog"] == facts["e3"]["dog"]
    assert facts["e1"]["caption"] is None and facts["e1"]["photo_filter"] is None
    for version in (1, 2, 3):
        assert facts[f"e{version}"]["raw_schema"] == store.version("pupdate_raw", version).fingerprint.hex()
    likes = {f["event_id"]: f for f in sink.on("likes")}
    assert likes["l1"]["app_version"] == "unknown"
    assert likes["l2"]["app_version"] == "3.2.0"
    assert proc.tally.accepted == {
        ("pupdate", 3): 1,
        ("pupdate", 2): 1,
        ("pupdate", 1): 1,
        ("like", 1): 1,
        ("like", 2): 1,
    }
    # every output says where it came from
    for _topic, _value, key, headers in sink.records:
        names = dict(headers)
        assert names["collector"] == b"test"
        assert names["source"].count(b"/") == 2
        assert isinstance(key, str)


def test_exact_resends_are_dropped_not_dead_lettered():
    proc, sink, feed = make_processor()
    p = feed.pupdate(pupdate())
    resend = feed.msg("pupdates.raw", p.value(), key="p1")
    l1 = feed.like(like())
    _process(proc, [p, l1, resend, feed.msg("likes.raw", l1.value(), key="p1")])
    assert len(sink.on("pupdates")) == 1 and len(sink.on("likes")) == 1
    assert sink.on("deadletters") == []
    assert proc.tally.duplicates == 2


def test_a_like_read_before_its_pupdate_waits_for_it():
    proc, sink, feed = make_processor()
    _process(proc, [feed.like(like())])
    assert len(proc.waiting) == 1 and sink.records == []
    assert proc.waiting.oldest_offset(("likes.raw", 0)) == 0
    _process(proc, [feed.pupdate(pupdate(), partition=2)], now=T0 + 5)
    assert len(proc.waiting) == 0
    assert [f["event_id"] for f in sink.on("likes")] == ["e-l1"]
    assert proc.tally.waits == [("resolved", 5.0)]


def test_a_like_for_a_pupdate_never_seen_is_rejected_at_its_deadline():
    proc, sink, feed = make_processor(waiting_timeout_s=3)
    _process(proc, [feed.like(like(pupdate_id="ghost"))])
    assert proc.expire(NOW_MS, T0 + 2.9) == 0
    assert proc.expire(NOW_MS, T0 + 3.0) == 1
    [letter] = sink.on("deadletters")
    assert letter["reason"] == v.LIKE_UNKNOWN_PUPDATE
    assert letter["source_offset"] == 0
    assert "ghost" in letter["detail"] and letter["value"].startswith(b"\xc3\x01")


def test_a_like_before_its_pupdate_was_posted_is_rejected():
    proc, sink, feed = make_processor()
    posted = NOW_MS - 60_000
    _process(proc, [feed.pupdate(pupdate(posted_at=posted)), feed.like(like(liked_at=posted - 1000))])
    [letter] = sink.on("deadletters")
    assert letter["reason"] == v.LIKE_BEFORE_PUPDATE
    assert "1000 ms before" in letter["detail"]


def test_a_profile_less_pupdate_waits_for_its_dog_across_partitions_then_expires_if_unknown():
    proc, sink, feed = make_processor(waiting_timeout_s=10)
    _process(
        proc,
        [
            feed.pupdate(pupdate(1, event_id="a", pupdate_id="pa", dog_id="d7"), 1, partition=1),
            feed.pupdate(pupdate(1, event_id="b", pupdate_id="pb", dog_id="nobody"), 1, partition=1),
            feed.like(like(event_id="la", pupdate_id="pa")),  # waits for pa, which waits for d7
        ],
    )
    assert len(proc.waiting) == 3
    _process(
        proc, [feed.pupdate(pupdate(3, event_id="c", pupdate_id="pc", dog_id="d7"), partition=0)], T0 + 1
    )
    assert sorted(f["event_id"] for f in sink.on("pupdates")) == ["a", "c"]
    assert [f["event_id"] for f in sink.on("likes")] == ["la"]
    assert len(proc.waiting) == 1
    assert proc.expire(NOW_MS, T0 + 10) == 1
    [letter] = sink.on("deadletters")
    assert letter["reason"] == v.UNKNOWN_DOG and "nobody" in letter["detail"]


def test_a_full_waiting_room_rejects_its_oldest_early():
    proc, sink, feed = make_processor(waiting_max=2)
    _process(proc, [feed.like(like(event_id=f"l{i}", pupdate_id=f"x{i}")) for i in range(3)])
    [letter] = sink.on("deadletters")
    assert letter["reason"] == v.LIKE_UNKNOWN_PUPDATE and "full" in letter["detail"]
    assert letter["source_offset"] == 0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", v.UNDECODABLE),
        (b"{not avro", v.UNDECODABLE),
        (b"\xc3\x01" + b"\x11" * 8 + b"\x02", v.UNKNOWN_SCHEMA),
        (b"\xc3\x01" + b"\x00" * 70_000, v.OVERSIZED_RECORD),
    ],
)
def test_bytes_that_are_not_a_raw_record(value, reason):
    proc, sink, feed = make_processor()
    _process(proc, [feed.msg("likes.raw", value)])
    [letter] = sink.on("deadletters")
    assert letter["reason"] == reason
    assert letter["value"] == value
    assert letter["service"] == "collector" and letter["source_topic"] == "likes.raw"


def test_a_record_of_the_other_topic_is_an_unknown_schema():
    proc, sink, feed = make_processor()
    _process(proc, [feed.msg("likes.raw", feed.pupdate(pupdate()).value())])
    assert sink.on("deadletters")[0]["reason"] == v.UNKNOWN_SCHEMA


def test_a_bug_costs_one_record_not_the_stream(monkeypatch):
    proc, sink, feed = make_processor()

    def boom(*_a):
        raise RuntimeError("bug")

    monkeypatch.setattr(v, "check_like", boom)
    _process(proc, [feed.like(like()), feed.pupdate(pupdate())])
    assert sink.on("deadletters")[0]["reason"] == v.PROCESSING_ERROR
    assert len(sink.on("pupdates")) == 1


def test_a_restart_rebuilt_from_the_outputs_writes_nothing_twice():
    """Everything re-read after a crash is recognised: accepted by event_id, rejected by position."""
    proc, sink, feed = make_processor(waiting_timeout_s=1)
    raw = [
        feed.pupdate(pupdate()),
        feed.like(like()),
        feed.like(like(event_id="l-early", liked_at=NOW_MS - 3_600_000)),
        feed.msg("pupdates.raw", b"junk"),
        feed.like(like(event_id="l-ghost", pupdate_id="ghost")),
        feed.pupdate(pupdate(dog_followers=-1, event_id="neg", pupdate_id="pn")),
    ]
    _process(proc, raw)
    proc.expire(NOW_MS, T0 + 2)
    assert len(sink.on("pupdates")) + len(sink.on("likes")) == 2
    assert len(sink.on("deadletters")) == 4
    again, sink2, _ = make_processor(waiting_timeout_s=1)
    for msg in sink.as_messages():
        again.apply_fact(msg, skip_own=False, now_ms=NOW_MS, now=T0)
    _process(again, raw, now=T0 + 5)
    again.expire(NOW_MS, T0 + 10)
    assert sink2.records == []
    assert again.tally.replayed == len(raw)
    assert again.tally.duplicates == 0


def test_facts_of_another_instance_release_waiting_events_and_own_facts_are_skipped():
    other, other_sink, other_feed = make_processor()
    _process(other, [other_feed.pupdate(pupdate(3, dog_id="d9", event_id="x", pupdate_id="px"), partition=1)])
    proc, sink, feed = make_processor()
    _process(proc, [feed.pupdate(pupdate(1, dog_id="d9", event_id="y", pupdate_id="py"), 1)])
    assert len(proc.waiting) == 1
    for msg in other_sink.as_messages():
        msg._headers = [(k, b"elsewhere" if k == "collector" else v_) for k, v_ in msg._headers]
        proc.apply_fact(msg, skip_own=True, now_ms=NOW_MS, now=T0)
    assert len(proc.waiting) == 0 and len(proc.ready) == 1
    proc.run_ready(NOW_MS, T0)
    assert [f["event_id"] for f in sink.on("pupdates")] == ["y"]
    # own records are not filed twice while tailing
    own = sink.as_messages()
    fresh, _, _ = make_processor()
    fresh.apply_fact(own[0], skip_own=True, now_ms=NOW_MS, now=T0)
    assert len(fresh.state.seen) == 0
    fresh.apply_fact(own[0], skip_own=False, now_ms=NOW_MS, now=T0)
    assert "y" in fresh.state.seen


def test_revoked_partitions_forget_their_waiting_events():
    proc, _sink, feed = make_processor()
    _process(proc, [feed.like(like(), partition=0), feed.like(like(event_id="l2"), partition=1)])
    proc.drop_partitions({("likes.raw", 0)})
    assert len(proc.waiting) == 1
    assert proc.waiting.oldest_offset(("likes.raw", 1)) == 0
