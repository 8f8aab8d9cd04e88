"""The collector's HTTP API as a client sees it, against the real broker (and a broker stopped)."""

from __future__ import annotations

import collections
import json
import time

import pytest

from libs.common.serde import serde
from libs.common.topics import DEADLETTERS
from sniffable import DUPLICATE, HTTP_KINDS, ListSink, SimConfig, run
from sniffable.sinks import HTTP_PATHS
from tests.support.collector import CollectorProcess, Outputs, wait_for_outputs
from tests.support.kafkautil import read_all

KEY = "s3cret-key"
# What the API can judge on its own answers 4xx at once; what needs the stream's state (was
# the dog or pupdate ever seen? is it a re-send?) is accepted (202) and judged by the stream.
STATUS = {"undecodable": 400} | dict.fromkeys(
    (
        "unknown_schema",
        "negative_followers",
        "future_timestamp",
        "oversized_caption",
        "invalid_field",
        "missing_field",
        "mistyped_field",
    ),
    422,
)
STATEFUL = {"like_unknown_pupdate", "like_before_pupdate", "unknown_dog", DUPLICATE}
assert set(STATUS) | STATEFUL == set(HTTP_KINDS)


def _body(ev) -> bytes:
    if ev.http_body is not None:
        return ev.http_body
    return json.dumps(ev.json_payload).encode()


def test_http_answers_every_kind_of_request(topics, tmp_path):
    settings = topics
    report_sink = ListSink()
    report = run(
        SimConfig(
            seed=5, transport="http", max_events=800, bad_share=0.25, horizon_s=60, pupdates_per_hour=20_000
        ),
        report_sink,
    )
    collector = CollectorProcess(
        settings, tmp_path, api_keys=f"other-key,{KEY}", waiting_timeout_s=2
    ).wait_ready()
    http = collector.http
    auth = {"X-API-Key": KEY}
    try:
        # --- auth -----------------------------------------------------------------------------
        assert http.post("/v1/likes", content=b"[]").status_code == 401
        r = http.post("/v1/likes", content=b"[]", headers={"X-API-Key": "wrong"})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert http.get("/healthz").status_code == 200  # probes need no key
        assert http.get("/readyz").status_code == 200

        # --- size -----------------------------------------------------------------------------
        big = b"[" + b" " * (1024 * 1024) + b"]"
        r = http.post("/v1/pupdates", content=big, headers=auth)
        assert r.status_code == 413 and r.json()["error"] == "body_too_large"

        def chunks():  # no Content-Length: the limit holds on the bytes actually sent
            for _ in range(20):
                yield b" " * 65536

        assert http.post("/v1/pupdates", content=chunks(), headers=auth).status_code == 413
        many = json.dumps([{}] * 1001).encode()
        assert http.post("/v1/likes", content=many, headers=auth).status_code == 413

        # --- request ids ------------------------------------------------------------------------
        r = http.post("/v1/likes", content=b"{oops", headers=auth | {"X-Request-Id": "req-42"})
        assert r.status_code == 400 and r.headers["x-request-id"] == "req-42"
        assert r.json() == {
            "request_id": "req-42",
            "error": "undecodable",
            "detail": r.json()["detail"],
        }
        assert len(http.post("/v1/likes", content=b"{oops", headers=auth).headers["x-request-id"]) == 32

        # --- every simulated event, one request each ---------------------------------------------
        answers = collections.Counter()
        for ev in report_sink.events:
            r = http.post(HTTP_PATHS[ev.topic_base], content=_body(ev), headers=auth)
            if ev.good or ev.kind in STATEFUL:
                assert r.status_code == 202, (ev.kind, ev.detail, r.text)
            else:
                assert r.status_code == STATUS[ev.kind], (ev.kind, ev.detail, r.text)
                assert r.json()["error"] == ev.kind, (ev.detail, r.text)
            answers[(ev.kind, r.status_code)] += 1

        # --- batches --------------------------------------------------------------------------
        goods = [ev for ev in report_sink.events if ev.good and ev.topic_base == "likes.raw"][:3]
        bad = {"event_id": "x", "pupdate_id": "p", "sniffer_id": "", "liked_at": int(time.time() * 1000)}
        r = http.post("/v1/likes", json=[g.json_payload for g in goods] + [bad], headers=auth)
        assert r.status_code == 207
        assert [x["status"] for x in r.json()["results"]] == ["accepted"] * 3 + ["rejected"]
        assert r.json()["results"][3]["reason"] == "invalid_field"
        r = http.post("/v1/likes", json=[g.json_payload for g in goods], headers=auth)  # a retry: re-sends
        assert r.status_code == 202 and r.json()["accepted"] == 3
        assert http.post("/v1/likes", json=[bad], headers=auth).status_code == 422

        # --- what the stream made of it -------------------------------------------------------
        stateful_bad = sum(n for k, n in report.bad_by_kind.items() if k in STATEFUL)
        http_bad = sum(n for k, n in report.bad_by_kind.items() if k not in STATEFUL)
        good = set(report.good_pupdate_ids) | set(report.good_like_ids)
        # +4: the two unreadable bodies and the batch's bad like, twice; +1 the size-less 413 is not one
        out = wait_for_outputs(settings, len(good), stateful_bad + http_bad + 4)
        time.sleep(1)
        out = Outputs(settings)
        assert set(out.fact_ids) == good and max(out.fact_ids.values()) == 1
        by_reason = collections.Counter(d["reason"] for d in out.dead if d["source_topic"] is not None)
        assert by_reason == {k: n for k, n in report.bad_by_kind.items() if k in STATEFUL}
        from_http = [d for d in out.dead if d["request_id"] is not None]
        assert len(from_http) == http_bad + 4
        assert collections.Counter(d["reason"] for d in from_http) == collections.Counter(
            {k: n for k, n in report.bad_by_kind.items() if k not in STATEFUL}
        ) + collections.Counter({"undecodable": 2, "invalid_field": 2})
        assert any(d["request_id"] == "req-42" for d in from_http)
        assert collector.metric_sum("pooch_collector_http_request_duration_seconds_count") > len(
            report_sink.events
        )
    finally:
        assert collector.stop() == 0, collector.log_tail()


@pytest.mark.serial  # asserts answers within a second
def test_kafka_down_answers_503_within_a_second_and_recovers(private_stack, tmp_path):
    """A broker of its own (so stopping it disturbs nobody): stop it mid-traffic, then start it again."""
    private_stack.up(components=["kafka"], partitions=3, topic_prefix="down.")
    settings = private_stack.common_settings("down.")
    collector = CollectorProcess(settings, tmp_path, waiting_timeout_s=2).wait_ready()
    http = collector.http
    now = int(time.time() * 1000)

    def pupdate(i: int) -> dict:
        return {
            "event_id": f"e{i}",
            "pupdate_id": f"p{i}",
            "dog_id": "d",
            "posted_at": now,
            "hashtags": ["#dog"],
            "dog_followers": 1,
            "app_version": "3.2.0",
            "dog": {"breed": "Pug", "size": "SMALL"},
        }

    try:
        assert http.post("/v1/pupdates", json=pupdate(0)).status_code == 202
        private_stack.stop_kafka()
        try:
            for i in range(1, 8):
                t0 = time.monotonic()
                r = http.post("/v1/pupdates", json=pupdate(i), timeout=5)
                took = time.monotonic() - t0
                assert r.status_code == 503, r.text
                assert took < 1.0, f"request {i} took {took:.2f} s"
                assert r.json()["error"] == "kafka_unavailable" and r.headers["retry-after"] == "1"
            # bad requests are still answered, and the process stays alive
            assert http.post("/v1/pupdates", content=b"nope").status_code == 400
            assert http.get("/healthz").status_code == 200
            # the outage is on /metrics (alert PoochKafkaUnreachable)
            assert collector.metric_sum("pooch_kafka_client_errors_total", code="_ALL_BROKERS_DOWN") >= 1
        finally:
            private_stack.start_kafka()
        deadline = time.monotonic() + 60
        while True:  # the client's retry after 503 goes through once Kafka is back
            r = http.post("/v1/pupdates", json=pupdate(1), timeout=5)
            if r.status_code == 202:
                break
            assert r.status_code == 503 and time.monotonic() < deadline, r.text
            time.sleep(0.5)
        out = wait_for_outputs(settings, 2, 0, timeout=60)
        assert {"e0", "e1"} <= set(out.fact_ids) and max(out.fact_ids.values()) == 1
    finally:
        assert collector.stop() == 0, collector.log_tail()
    letters = [
        serde("dead_letter").decode(m.value()) for m in read_all(settings, settings.topic(DEADLETTERS))
    ]
    assert all(d["reason"] == "undecodable" for d in letters)


def test_unauthenticated_collector_accepts_without_a_key(topics, tmp_path):
    settings = topics
    collector = CollectorProcess(settings, tmp_path, stream_enabled="false").wait_ready()
    try:
        r = collector.http.post(
            "/v1/likes",
            json={"event_id": "e", "pupdate_id": "p", "sniffer_id": "s", "liked_at": int(time.time() * 1000)},
        )
        assert r.status_code == 202 and r.json()["status"] == "accepted"
        assert len(read_all(settings, settings.topic("likes.raw"))) == 1
    finally:
        assert collector.stop() == 0
