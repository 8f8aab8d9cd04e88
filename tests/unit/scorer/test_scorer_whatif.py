"""The what-if API without Kafka: validation (422 with the reason), ranking, deadline, Redis down."""

from __future__ import annotations

import socket
import time

import pytest
from fastapi.testclient import TestClient

from libs.common.health import Probes
from services.scorer.fixtures import make_artifact, train_model_text
from services.scorer.http_api import create_app
from services.scorer.registry import Registry
from services.scorer.routing import Router
from services.scorer.settings import ScorerSettings
from services.scorer.whatif import WhatIf
from tooling.stack.processes import free_port


def draft(**kw):
    base = {
        "dog_id": "dog-00001",
        "posted_at": 1_795_000_000_000,
        "hashtags": ["#Adorable", "#puppy"],
        "caption": "look at him",
        "photo_filter": "sepia",
        "dog": {"breed": "Beagle", "size": "MEDIUM", "age_months": 14},
        "dog_followers": 1200,
        "country": "US",
    }
    return base | kw


@pytest.fixture(scope="module")
def model():
    return make_artifact(train_model_text(rounds=20, seed=2))


@pytest.fixture
def client(model):
    # Redis on a port nobody listens on: the online view is down.
    settings = ScorerSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    registry = Registry(settings)
    registry.apply(model.to_event())
    registry.rebuild(synced=True)
    probes = Probes("scorer")
    probes.ready("models_loaded", lambda: True)
    app = create_app(WhatIf(settings, registry, Router(settings.routing_salt)), registry, probes)
    with TestClient(app) as c:
        yield c


def test_one_draft_answered_with_redis_down(client, model):
    r = client.post("/v1/predict", json={"draft": draft()})
    assert r.status_code == 200, r.text
    (p,) = r.json()["predictions"]
    assert p["model_version"] == model.model_version
    assert p["fallback"] is False and p["predicted_likes"] >= 0
    assert p["state"] == "unavailable"
    assert p["arm"] == "champion" and p["extractor_version"] == "v1"


def test_candidates_come_back_best_first(client):
    candidates = [
        draft(dog_followers=f, hashtags=["x"] * (i % 3)) for i, f in enumerate([10, 50_000, 300, 9000])
    ]
    r = client.post("/v1/predict", json={"candidates": candidates})
    assert r.status_code == 200, r.text
    body = r.json()
    preds = body["predictions"]
    assert sorted(p["index"] for p in preds) == [0, 1, 2, 3]
    likes = [p["predicted_likes"] for p in preds]
    assert likes == sorted(likes, reverse=True)
    assert body["best_index"] == preds[0]["index"]


@pytest.mark.parametrize(
    ("body", "in_reason"),
    [
        ({"draft": draft(dog_followers=-1)}, "draft.dog_followers"),
        ({"draft": draft(dog={"breed": "Beagle", "size": "HUGE"})}, "draft.dog.size"),
        ({"draft": draft(country="USA")}, "draft.country"),
        ({"draft": draft(posted_at=5)}, "before 2010"),
        ({"draft": draft(hashtags=["x" * 101])}, "draft.hashtags"),
        ({"draft": draft(hashtag=["typo"])}, "draft.hashtag"),
        ({"draft": {k: v for k, v in draft().items() if k != "dog"}}, "draft.dog"),
        ({"candidates": [draft()] * 33}, "candidates"),
        ({"candidates": []}, "candidates"),
        ({"draft": draft(), "candidates": [draft()]}, "exactly one"),
        ({}, "exactly one"),
        ({"draft": draft(), "extractor_version": "v9"}, "unknown extractor_version"),
        ({"draft": draft(dog_id="  ")}, "dog_id"),
    ],
)
def test_invalid_drafts_get_422_with_the_reason(client, body, in_reason):
    r = client.post("/v1/predict", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_draft"
    assert in_reason in r.json()["reason"]


def test_not_json_is_422(client):
    r = client.post("/v1/predict", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "json" in r.json()["reason"].lower()


def test_past_the_deadline_the_answer_is_the_fallback(client):
    r = client.post("/v1/predict", json={"candidates": [draft(), draft()], "deadline_ms": 0.001})
    assert r.status_code == 200
    for p in r.json()["predictions"]:
        assert p["fallback"] is True and p["fallback_reason"] == "deadline"
        assert p["model_version"] is None and p["predicted_likes"] == p["baseline"]


def test_health_and_models_routes(client, model):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/v1/models").json()["serving"] == {"v1": {"champion": model.model_version}}
    client.post("/v1/predict", json={"draft": draft()})
    text = client.get("/metrics").text
    assert 'pooch_scorer_predictions_total{arm="champion"' in text
    assert "pooch_scorer_whatif_request_seconds_bucket" in text


def test_a_hung_online_view_costs_at_most_the_state_budget(model):
    # A socket that accepts connections (the kernel's backlog) and never answers: Redis hung.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)
    settings = ScorerSettings(redis_url=f"redis://127.0.0.1:{hung.getsockname()[1]}/0", whatif_deadline_ms=50)
    registry = Registry(settings)
    registry.apply(model.to_event())
    registry.rebuild(synced=True)
    app = create_app(WhatIf(settings, registry, Router(settings.routing_salt)), registry, Probes("scorer"))
    try:
        with TestClient(app) as c:
            started = time.perf_counter()
            r = c.post("/v1/predict", json={"candidates": [draft(), draft(dog_id="dog-2")]})
            elapsed = time.perf_counter() - started
    finally:
        hung.close()
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert {p["state"] for p in preds} == {"timeout"}
    assert all(p["model_version"] == model.model_version for p in preds)  # still a model's answer
    assert r.json()["elapsed_ms"] < 50
    assert elapsed < 1.0


def _asgi_post(app, body: bytes, received: float) -> tuple[int, dict[bytes, bytes], bytes]:
    """POST /v1/predict straight into the ASGI app, stamped as the protocol stamps it."""
    import asyncio

    from libs.common.http_limits import RECEIVED_AT

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/v1/predict",
        "raw_path": b"/v1/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "scheme": "http",
        "state": {RECEIVED_AT: received},
    }
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def _app(model, **settings_kw):
    settings = ScorerSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0", **settings_kw)
    registry = Registry(settings)
    registry.apply(model.to_event())
    registry.rebuild(synced=True)
    return create_app(WhatIf(settings, registry, Router(settings.routing_salt)), registry, Probes("scorer"))


def test_a_request_that_queued_past_the_shed_limit_gets_503_with_retry_after(model):
    import json

    app = _app(model, whatif_shed_after_ms=10, whatif_retry_after_s=2)
    body = json.dumps({"draft": draft()}).encode()
    status, headers, payload = _asgi_post(app, body, time.perf_counter() - 0.05)
    assert status == 503
    assert headers[b"retry-after"] == b"2" and headers[b"content-type"] == b"application/json"
    assert json.loads(payload)["error"] == "overloaded"
    status, _headers, payload = _asgi_post(app, body, time.perf_counter())  # fresh: answered
    assert status == 200 and len(json.loads(payload)["predictions"]) == 1


def test_the_deadline_counts_from_arrival(model):
    import json

    # Shedding off: a request that arrived 40 ms ago has spent its 25 ms deadline queueing, so
    # it is answered at once with the deadline fallback, without waiting for the online view.
    app = _app(model, whatif_shed_after_ms=0, whatif_deadline_ms=25)
    body = json.dumps({"candidates": [draft(), draft(dog_id="dog-2")]}).encode()
    status, _headers, payload = _asgi_post(app, body, time.perf_counter() - 0.04)
    assert status == 200
    for p in json.loads(payload)["predictions"]:
        assert p["fallback_reason"] == "deadline" and p["state"] == "timeout"
        assert p["predicted_likes"] == p["baseline"]


def test_online_view_values_are_decoded_once_per_distinct_value_and_never_stale(monkeypatch):
    from libs.common.features.extractors import extractor
    from libs.common.features.online_view import OnlineView, decode_dog, decode_stats
    from services.scorer import metrics as m
    from services.scorer import whatif as w

    calls: list[bytes] = []

    def counting(decode):
        def wrapped(raw):
            calls.append(raw)
            return decode(raw)

        return wrapped

    monkeypatch.setattr(w, "decode_stats", counting(decode_stats))
    monkeypatch.setattr(w, "decode_dog", counting(decode_dog))
    monkeypatch.setattr(w, "_DECODED", {})
    view, ext = OnlineView(None, "memo."), extractor("v1")
    pupdates = [draft(dog_id="dog-a"), draft(dog_id="dog-b")]
    keys, tags_of = w.state_keys(view, pupdates, ext)
    overall = b'{"n": 10, "likes": 70.0}'
    dog_a = b'{"posts": 3, "last_posted_at": 1795000000000, "matured": {"n": 2, "likes": 9.0}}'
    tag = b'{"n": 4, "likes": 20.0}'
    raw = [overall, dog_a, tag, tag, None]
    assert len(keys) == len(raw)

    first, _ = w.states_from(view, pupdates, ext, keys, tags_of, raw)
    again, notes = w.states_from(view, pupdates, ext, keys, tags_of, raw)
    assert first == again and notes == ["online", "dog_unknown"]
    assert sorted(calls) == sorted([overall, dog_a, tag])  # each distinct value decoded once
    assert first[0].dog.posts == 3 and first[0].overall.n == 10 and first[0].tags["adorable"].n == 4

    # A value that changed is decoded anew: never the old state.
    dog_a2 = dog_a.replace(b'"posts": 3', b'"posts": 4')
    changed, _ = w.states_from(view, pupdates, ext, keys, tags_of, [overall, dog_a2, tag, tag, None])
    assert changed[0].dog.posts == 4

    # A malformed value is read as missing, and counted, on every request.
    before = m.WHATIF_VIEW_INVALID.labels("tag")._value.get()
    for _ in range(2):
        bad, _ = w.states_from(view, pupdates, ext, keys, tags_of, [overall, dog_a, b"{not json", tag, None])
        assert "adorable" not in bad[0].tags
    assert m.WHATIF_VIEW_INVALID.labels("tag")._value.get() == before + 2
