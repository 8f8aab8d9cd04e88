"""Hostile input the collector must answer with a clear error and a dead letter, never a 500 or a
wedged stream (issue 11: a 1 MB raw record, a 100,000-deep JSON body, a lone surrogate)."""

from __future__ import annotations

import json
import os
import time

from libs.common.kafka.producer import Producer
from libs.common.serde import serde
from libs.common.topics import DEADLETTERS, PUPDATES_RAW
from sniffable import SimConfig, run
from sniffable.sinks import KafkaSink
from tests.support.collector import CollectorProcess, wait_for_outputs
from tests.support.kafkautil import read_all

KEY = "k"


def _dead_letters(settings) -> list[dict]:
    return [serde("dead_letter").decode(m.value()) for m in read_all(settings, settings.topic(DEADLETTERS))]


def test_hostile_http_bodies_get_4xx_and_a_dead_letter_not_a_500(topics, tmp_path):
    settings = topics
    collector = CollectorProcess(settings, tmp_path, api_keys=KEY).wait_ready()
    auth = {"X-API-Key": KEY, "Content-Type": "application/json"}
    try:
        deep = b"[" * 100_000 + b"]" * 100_000
        r = collector.http.post("/v1/pupdates", content=deep, headers=auth | {"X-Request-Id": "deep"})
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "undecodable"

        # A lone surrogate is valid JSON but no Unicode text: it cannot become a fact.
        lone = (
            b'{"event_id":"e1","pupdate_id":"p1","sniffer_id":"s\\ud800","liked_at":'
            + str(int(time.time() * 1000)).encode()
            + b"}"
        )
        r = collector.http.post("/v1/likes", content=lone, headers=auth | {"X-Request-Id": "lone"})
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "invalid_field" and "surrogate" in r.json()["detail"]

        assert collector.http.get("/healthz").status_code == 200
        dead = {}
        deadline = time.monotonic() + 30
        while set(dead) != {"deep", "lone"} and time.monotonic() < deadline:
            dead = {d["request_id"]: d for d in _dead_letters(settings) if d["request_id"]}
            time.sleep(0.5)
        assert dead["deep"]["reason"] == "undecodable" and dead["lone"]["reason"] == "invalid_field"
    finally:
        collector.stop()


def test_a_raw_record_of_about_a_megabyte_is_dead_lettered_and_the_stream_goes_on(topics, tmp_path):
    settings = topics
    big = os.urandom(999_990)  # fits the raw topic; a dead letter copying it whole would not
    producer = Producer(settings, name="hostile", **{"message.max.bytes": 1_048_576})
    producer.produce(settings.topic(PUPDATES_RAW), big, key=b"huge")
    producer.flush(30)
    report = run(
        SimConfig(seed=3, max_events=300, bad_share=0.0, horizon_s=60, pupdates_per_hour=20_000),
        KafkaSink(settings),
    )
    collector = CollectorProcess(settings, tmp_path).wait_ready()
    try:
        good = report.good_pupdates + report.good_likes
        out = wait_for_outputs(settings, good, 1, timeout=60)
        [letter] = out.dead
        assert letter["reason"] == "oversized_record" and letter["source_offset"] == 0
        assert len(letter["value"]) < len(big) and big.startswith(letter["value"])
        assert "truncated" in letter["detail"] and str(len(big)) in letter["detail"]
        assert max(out.fact_ids.values()) == 1 and len(out.fact_ids) == good
        assert collector.http.get("/healthz").status_code == 200
        # The stream is not looping on the record: its progress moved past it.
        assert json.loads(collector.http.get("/readyz").text)["ready"] is True
    finally:
        collector.stop()


def test_hostile_event_ids_and_keys_are_refused_with_a_4xx_not_a_500(topics, tmp_path):
    """Found by the fuzz test: the answer echoed a NaN event_id (not JSON) or a lone surrogate
    (not UTF-8), and a key with a lone surrogate broke the dead letter: each was a 500."""
    settings = topics
    collector = CollectorProcess(settings, tmp_path, api_keys=KEY).wait_ready()
    auth = {"X-API-Key": KEY, "Content-Type": "application/json"}
    now = str(int(time.time() * 1000)).encode()
    bodies = {
        "nan-id": b'{"event_id":NaN,"pupdate_id":"p1","sniffer_id":"s1","liked_at":' + now + b"}",
        "lone-id": b'{"event_id":"e\\ud800","pupdate_id":"p1","sniffer_id":"s1","liked_at":' + now + b"}",
        "lone-key": b'{"event_id":"e1","pupdate_id":"\\udfff","sniffer_id":"s1","liked_at":-1}',
        "batch": b'[{"event_id":Infinity},{"event_id":"\\ud800","pupdate_id":"\\ud800"}]',
    }
    try:
        for rid, body in bodies.items():
            r = collector.http.post("/v1/likes", content=body, headers=auth | {"X-Request-Id": rid})
            assert r.status_code == 422, (rid, r.status_code, r.text)
            assert r.json()["request_id"] == rid
        assert r.json()["results"][1]["event_id"] == "\ud800"  # escaped in the JSON, then read back
        assert r.json()["results"][0]["event_id"] is None  # a number is not echoed as an event_id
        want = {"nan-id", "lone-id", "lone-key", "batch#0", "batch#1"}
        dead: dict = {}
        deadline = time.monotonic() + 30
        while set(dead) != want and time.monotonic() < deadline:
            dead = {d["request_id"]: d for d in _dead_letters(settings) if d["request_id"]}
            time.sleep(0.5)
        assert set(dead) == want
        assert dead["lone-key"]["key"] == "\udfff".encode("utf-8", "surrogatepass")
        assert all(d["reason"] for d in dead.values())
        assert collector.http.get("/healthz").status_code == 200
    finally:
        collector.stop()
