"""Each kind of bad input is bad exactly the way it claims, and never touches the good stream."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from libs.common.serde import CorruptBodyError, NotSingleObjectError, UnknownSchemaError, serde
from libs.common.topics import LIKES_RAW, PUPDATES_RAW
from sniffable import DUPLICATE, HTTP_KINDS, KAFKA_KINDS, LIKE, PUPDATE, SimConfig, Simulation
from sniffable.badinput import ALLOWED_SIZES, MAX_CAPTION

START = 1_700_000_000_000
STEM = {PUPDATES_RAW: "pupdate_raw", LIKES_RAW: "like_raw"}
DAY_MS = 86_400_000


def run(**kw):
    config = SimConfig(**({"seed": 5, "start_ms": START, "max_events": 30_000, "bad_share": 0.1} | kw))
    return list(Simulation(config).events())


@pytest.fixture(scope="module")
def kafka_events():
    return run()


@pytest.fixture(scope="module")
def http_events():
    return run(transport="http", seed=6)


def decode(e):
    return serde(STEM[e.topic_base]).decode(e.value)


def test_bad_share_is_respected(kafka_events):
    for share in (0.0, 0.02, 0.1):
        events = kafka_events if share == 0.1 else run(bad_share=share, max_events=20_000)
        abnormal = sum(1 for e in events if not e.good) / len(events)
        assert abnormal == pytest.approx(share, abs=0.01)


def test_every_kind_appears_and_kinds_can_be_chosen(kafka_events, http_events):
    assert {e.kind for e in kafka_events if not e.good} == set(KAFKA_KINDS)
    assert {e.kind for e in http_events if not e.good} == set(HTTP_KINDS)
    only = run(bad_kinds=("undecodable", "duplicate"), max_events=5_000)
    assert {e.kind for e in only if not e.good} == {"undecodable", DUPLICATE}
    with pytest.raises(ValueError, match="not possible over kafka"):
        SimConfig(bad_kinds=("missing_field",))


def test_undecodable_does_not_decode(kafka_events):
    bad = [e for e in kafka_events if e.kind == "undecodable"]
    for e in bad:
        with pytest.raises((NotSingleObjectError, CorruptBodyError)):
            decode(e)
        with pytest.raises(ValueError):  # the HTTP form is not JSON either
            json.loads(e.http_body)
    assert {e.detail.split(" ")[0] for e in bad} == {"random", "truncated"}


def test_unknown_schema_has_the_magic_and_an_unknown_fingerprint(kafka_events):
    for e in (e for e in kafka_events if e.kind == "unknown_schema"):
        assert e.value[:2] == b"\xc3\x01"
        with pytest.raises(UnknownSchemaError):
            decode(e)
        assert e.json_payload["schema_version"] >= 900


def test_negative_followers_decode_but_are_negative(kafka_events):
    for e in (e for e in kafka_events if e.kind == "negative_followers"):
        assert decode(e)["dog_followers"] < 0


def test_future_timestamps_are_days_ahead(kafka_events):
    for e in (e for e in kafka_events if e.kind == "future_timestamp"):
        r = decode(e)
        t = r.get("posted_at") if e.topic_base == PUPDATES_RAW else r["liked_at"]
        assert t >= e.send_ms + 2 * DAY_MS


def test_like_kinds_refer_to_the_right_pupdates(kafka_events):
    posted: dict[str, int] = {}
    bad_pupdates = set()
    for e in kafka_events:
        if e.kind == PUPDATE:
            posted[e.key] = e.event_time_ms
        elif e.kind == "like_unknown_pupdate":
            assert e.key not in posted
            bad_pupdates.add(e.key)
        elif e.kind == "like_before_pupdate":
            assert decode(e)["liked_at"] < posted[e.key]
    # a pupdate id a bad like invented never turns up later as a real pupdate
    assert not bad_pupdates & set(posted)


def test_duplicates_repeat_a_good_event_byte_for_byte(kafka_events):
    first = {}
    for e in kafka_events:
        if e.good:
            first[e.event_id] = e
        elif e.kind == DUPLICATE:
            original = first[e.event_id]
            assert (original.value, original.key, original.topic_base) == (e.value, e.key, e.topic_base)
            assert e.send_ms >= original.send_ms


def test_oversized_caption(kafka_events):
    for e in (e for e in kafka_events if e.kind == "oversized_caption"):
        assert len(decode(e)["caption"]) > MAX_CAPTION


def test_unknown_dog_is_a_v1_pupdate_of_a_dog_never_seen(kafka_events):
    sim_dogs = Simulation(SimConfig(seed=5, start_ms=START)).world.by_id
    for e in (e for e in kafka_events if e.kind == "unknown_dog"):
        assert e.schema_version == 1
        assert decode(e)["dog"] is None
        assert e.json_payload["dog_id"] not in sim_dogs


def test_invalid_fields(kafka_events):
    details = Counter()
    for e in (e for e in kafka_events if e.kind == "invalid_field"):
        r = decode(e)
        if e.topic_base == LIKES_RAW:
            assert r["sniffer_id"] == ""
            details["sniffer"] += 1
        elif r["pupdate_id"] == "":
            assert e.key == ""
            details["pupdate_id"] += 1
        else:
            assert r["dog"]["size"] not in ALLOWED_SIZES
            details["size"] += 1
    assert set(details) == {"sniffer", "pupdate_id", "size"}


def test_bad_pupdates_are_otherwise_valid_and_of_known_dogs(kafka_events):
    known = set()
    for e in kafka_events:
        if e.kind == PUPDATE and e.schema_version >= 2:
            known.add(e.json_payload["dog_id"])
        elif e.topic_base == PUPDATES_RAW and e.kind in (
            "negative_followers",
            "oversized_caption",
            "future_timestamp",
        ):
            assert e.json_payload["dog_id"] in known
            assert e.schema_version >= 2


def test_bad_records_never_get_good_likes(kafka_events):
    bad_ids = {e.key for e in kafka_events if e.bad and e.topic_base == PUPDATES_RAW}
    assert not any(e.kind == LIKE and e.key in bad_ids for e in kafka_events)
    good_pupdates = {e.key for e in kafka_events if e.kind == PUPDATE}
    assert not bad_ids & good_pupdates


def test_http_only_kinds(http_events):
    for e in http_events:
        if e.kind == "missing_field":
            fields = e.json_payload.keys()
            required = (
                {"event_id", "pupdate_id", "dog_id", "posted_at", "hashtags", "dog_followers"}
                if e.topic_base == PUPDATES_RAW
                else {"event_id", "pupdate_id", "sniffer_id", "liked_at"}
            )
            assert len(required - fields) == 1
        elif e.kind == "mistyped_field":
            field = e.detail.split(" ")[0]
            assert type(e.json_payload[field]) is not EXPECTED_TYPE[field]


EXPECTED_TYPE = {"dog_followers": int, "posted_at": int, "liked_at": int, "hashtags": list, "sniffer_id": str}
