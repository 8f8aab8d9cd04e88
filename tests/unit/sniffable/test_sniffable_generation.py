"""The simulated app's good stream: deterministic, decodable, versioned like the real apps."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
from collections import Counter

import pytest

from libs.common.serde import serde
from libs.common.topics import LIKES_RAW, PUPDATES_RAW
from sniffable import LIKE, PUPDATE, SimConfig, Simulation
from sniffable.app import ALL_APPS, APP_VERSIONS, WEB, Codec, like_record

START = 1_700_000_000_000
STEM = {PUPDATES_RAW: "pupdate_raw", LIKES_RAW: "like_raw"}


def cfg(**kw) -> SimConfig:
    return SimConfig(**({"seed": 11, "start_ms": START, "max_events": 20_000} | kw))


@pytest.fixture(scope="module")
def events():
    return list(Simulation(cfg(bad_share=0.05)).events())


def digest(config: SimConfig) -> str:
    h = hashlib.sha256()
    for e in Simulation(config).events():
        h.update(e.topic_base.encode() + b"\0" + e.key.encode() + b"\0" + e.value + b"\1")
    return h.hexdigest()


def test_same_seed_same_bytes_and_other_seed_other_bytes():
    assert digest(cfg(max_events=5_000)) == digest(cfg(max_events=5_000))
    assert digest(cfg(max_events=5_000)) != digest(cfg(max_events=5_000, seed=12))


def test_events_can_be_replayed_from_one_simulation():
    sim = Simulation(cfg(max_events=2_000))
    assert [e.value for e in sim.events()] == [e.value for e in sim.events()]


def test_max_events_is_exact(events):
    assert len(events) == 20_000
    assert list(Simulation(cfg(max_events=0)).events()) == []


def test_every_good_event_decodes_with_the_current_reader(events):
    for e in events:
        if not e.good:
            continue
        record, writer = serde(STEM[e.topic_base]).decode_with_writer(e.value)
        assert writer.version == e.schema_version
        assert record["event_id"] == e.event_id
        assert record["pupdate_id"] == e.key
        if e.kind == PUPDATE:
            assert e.topic_base == PUPDATES_RAW
            assert record["posted_at"] == e.event_time_ms
            assert record["dog_followers"] >= 0
        else:
            assert e.topic_base == LIKES_RAW
            assert record["liked_at"] == e.event_time_ms


def test_json_payload_says_the_same_as_the_avro(events):
    for e in events[:3_000]:
        if not e.good:
            continue
        decoded = serde(STEM[e.topic_base]).decode(e.value)  # resolved to the current schema
        payload = dict(e.json_payload)
        assert payload.pop("schema_version") == e.schema_version
        for k, v in payload.items():
            if k == "dog":  # a v2 profile gains age_months = None when resolved to v3
                assert {f: decoded[k][f] for f in v} == v
            else:
                assert decoded[k] == v


def test_each_app_version_writes_its_schema(events):
    by_app = {a.version: a for a in ALL_APPS}
    seen = Counter()
    for e in events:
        if e.kind == PUPDATE:
            app = by_app[e.json_payload["app_version"]]
            assert e.schema_version == app.pupdate_schema
            seen[app.pupdate_schema] += 1
        elif e.kind == LIKE and e.schema_version == 2:
            assert e.json_payload["app_version"] in by_app
    assert set(seen) == {1, 2, 3}
    likes = Counter(e.schema_version for e in events if e.kind == LIKE)
    assert set(likes) == {1, 2}


def test_v1_pupdates_only_for_dogs_already_sent_with_a_profile(events):
    known: set[str] = set()
    v1 = 0
    for e in events:
        if e.kind != PUPDATE:
            continue
        dog_id = e.json_payload["dog_id"]
        if e.schema_version == 1:
            v1 += 1
            assert dog_id in known
        else:
            assert e.json_payload["dog"]["size"] in {"TOY", "SMALL", "MEDIUM", "LARGE", "GIANT"}
            known.add(dog_id)
    assert v1 > 0
    first_posts = [e for e in events if e.kind == PUPDATE and e.json_payload["app_version"] == WEB.version]
    assert first_posts, "1.x owners register their dogs from the web app"


def test_likes_never_precede_their_pupdate_in_time_or_send_order(events):
    posted: dict[str, int] = {}
    for e in events:
        if e.kind == PUPDATE:
            posted[e.key] = e.event_time_ms
        elif e.kind == LIKE:
            assert e.key in posted, "a good like is sent after its pupdate"
            assert e.event_time_ms >= posted[e.key]


def test_send_time_never_goes_back_and_some_likes_arrive_out_of_order(events):
    sends = [e.send_ms for e in events]
    assert sends == sorted(sends)
    likes = [e for e in events if e.kind == LIKE]
    out_of_order = sum(1 for a, b in itertools.pairwise(likes) if b.event_time_ms < a.event_time_ms)
    assert out_of_order > 0
    assert all(e.send_ms >= e.event_time_ms for e in likes)


def test_ids_are_unique_and_each_sniffer_likes_a_pupdate_once(events):
    good = [e for e in events if e.good]
    assert len({e.event_id for e in good}) == len(good)
    pairs = [(e.key, e.json_payload["sniffer_id"]) for e in good if e.kind == LIKE]
    assert len(set(pairs)) == len(pairs)


def test_time_starts_at_start_ms_and_follows_the_virtual_clock(events):
    first = next(e for e in events if e.good)
    assert first.event_time_ms >= START
    assert events[-1].send_ms - START < 10 * 86_400_000


def test_hand_written_like_encoder_matches_fastavro():
    codec = Codec()
    for schema in (1, 2):
        for sniffer in ("snf_1", "", "é" * 70):
            rec = like_record(
                schema,
                event_id="e" * 32,
                pupdate_id="pup_" + "0" * 200,
                sniffer_id=sniffer,
                liked_at=-5 if sniffer == "" else 1_700_000_000_123,
                app_version="3.2.0",
            )
            assert codec.encode_like(rec) == codec.like[schema].encode(rec)


def test_app_versions_cover_three_generations():
    assert {a.pupdate_schema for a in APP_VERSIONS} == {1, 2, 3}
    assert {a.like_schema for a in APP_VERSIONS} == {1, 2}


def test_posting_density_follows_rate_and_time_scale():
    slow = Simulation(cfg(rate=100, time_scale=1.0))
    fast = Simulation(cfg(rate=100, time_scale=3600.0))
    assert slow.pupdates_per_ms == pytest.approx(fast.pupdates_per_ms * 3600)
    events_per_pupdate = (1 + slow.mean_likes) / (1 - slow.config.bad_share)
    assert slow.pupdates_per_ms * 1000 * events_per_pupdate == pytest.approx(100)
    assert Simulation(cfg(pupdates_per_hour=36.0)).pupdates_per_ms == pytest.approx(1e-5)


def test_drain_stops_posting_early_so_the_last_pupdates_get_their_likes():
    drained = list(Simulation(cfg(max_events=5_000, bad_share=0.0)).events())
    cut = list(Simulation(cfg(max_events=5_000, bad_share=0.0, drain=False)).events())
    assert cfg(rate=10).draining is False and cfg().draining is True

    def last_pupdate(events):
        return max(i for i, e in enumerate(events) if e.kind == PUPDATE)

    assert last_pupdate(drained) < 4_500  # then the tail is likes
    assert last_pupdate(cut) > 4_900  # posting goes on to the end
    assert drained[-1].send_ms - drained[last_pupdate(drained)].send_ms > 86_400_000 / 2


def test_same_bytes_in_other_processes_whatever_the_hash_seed():
    """Nothing may depend on set order or ``hash()``: a seed replays across processes."""
    code = (
        "import hashlib; from sniffable import SimConfig, Simulation; h = hashlib.sha256()\n"
        f"config = SimConfig(seed=11, start_ms={START}, max_events=5000, bad_share=0.05)\n"
        "for e in Simulation(config).events():\n"
        "    h.update(e.value)\n"
        "print(h.hexdigest())"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = os.environ | {"PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    h = hashlib.sha256()
    for e in Simulation(cfg(max_events=5_000, bad_share=0.05)).events():
        h.update(e.value)
    assert digests == {h.hexdigest()}
