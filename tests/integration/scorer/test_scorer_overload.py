"""The what-if API far past its capacity (issue 15): it sheds load instead of queueing without bound.

A real scorer process (role=whatif, the online view in a redis-server of the test's own, the model
from the models topic) is driven open loop at 1,000 requests/s of 32 candidates over 200
connections, several times what one core can answer. Without shedding, every request queues
behind all the others (seconds). With it, a request that waited past
``POOCH_SCORER_WHATIF_SHED_AFTER_MS`` before its turn gets a fast, well-formed 503 with
Retry-After, and the answered ones stay bounded.

Marked serial: it saturates a core for seconds and asserts latency bounds. About 25 s.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis

from libs.common.features.online_view import OnlineView
from libs.common.features.state import DogState, Stats
from services.scorer.fixtures import make_artifact, publish_events, train_model_text
from tests.support.scorer import ScorerProcess

pytestmark = pytest.mark.serial

CONNECTIONS = 200
RATE = 1000.0  # requests/s of 32 candidates: several times what one core answers
SECONDS = 6.0
# The stated bound, with a wide margin for a loaded 2-core CI machine: requests shed after 10 ms
# queued plus a 25 ms deadline; without shedding the answered p99 is seconds here.
ANSWERED_P99_BOUND_S = 0.5


def _draft(i: int) -> dict:
    return {
        "dog_id": f"dog-{i % 50:05d}",
        "posted_at": 1_795_000_000_000,
        "hashtags": ["#adorable", "#puppy", f"#tag{i % 7}"],
        "caption": "look at him",
        "dog": {"breed": "Beagle", "size": "MEDIUM", "age_months": 14},
        "dog_followers": 100 + i,
        "country": "US",
    }


BODY = json.dumps({"candidates": [_draft(i) for i in range(32)]}).encode()
REQUEST = (
    b"POST /v1/predict HTTP/1.1\r\nhost: scorer\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body


async def _drive(port: int) -> list[tuple[float, int, dict[str, str], bytes]]:
    """Open loop: RATE requests/s for SECONDS over CONNECTIONS connections, whatever the answers
    take (a connection still waiting sends its next request when it is free; latency counts from
    the scheduled time); (latency, status, headers, body) each."""
    out: list[tuple[float, int, dict[str, str], bytes]] = []
    start = time.perf_counter() + 0.1
    total = int(RATE * SECONDS)

    async def connection(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in range(k, total, CONNECTIONS):
                scheduled = start + i / RATE
                await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
                writer.write(REQUEST)
                status, headers, body = await _read_response(reader)
                out.append((time.perf_counter() - scheduled, status, headers, body))
        finally:
            writer.close()

    await asyncio.gather(*(connection(k) for k in range(CONNECTIONS)))
    return out


def _p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def test_far_past_capacity_requests_are_shed_fast_and_answered_ones_stay_bounded(topics, tmp_path, online):
    art = make_artifact(train_model_text(rounds=100, seed=3))
    publish_events(topics, [art.to_event()])
    view = OnlineView(redis.Redis.from_url(online.url), topics.topic_prefix)
    dogs = {f"dog-{i:05d}": DogState(5, 1_794_990_000_000, Stats(4, 40.0 + i)) for i in range(50)}
    view.write(dogs, {"v1": {"adorable": Stats(50, 900.0)}}, Stats(1000, 9000.0), 1_794_999_000_000)
    scorer = ScorerProcess(
        topics,
        tmp_path,
        redis_url=online.url,
        role="whatif",
        compile_models="false",  # LightGBM: the test needs no compiler's seconds of a core
        whatif_shed_after_ms="10",
        # The in-flight limit (503 in libs/common/http_limits.Guard) above the connections: what
        # is measured here is the scorer's own shedding, not the generic cap.
        extra_env={"POOCH_HTTP_MAX_CONCURRENCY": "1000"},
    ).wait_ready()
    try:
        warm = scorer.http.post("/v1/predict", content=BODY, headers={"content-type": "application/json"})
        assert warm.status_code == 200, warm.text
        assert warm.json()["predictions"][0]["model_version"] == art.model_version

        results = asyncio.run(_drive(scorer.port))

        answered = [r for r in results if r[1] == 200]
        shed = [r for r in results if r[1] == 503]
        assert len(answered) + len(shed) == len(results), {r[1] for r in results}
        assert len(shed) > 0, "far past capacity, nothing was shed"
        assert len(answered) >= 20, f"only {len(answered)} answered in {SECONDS} s"
        for _lat, _status, headers, body in shed:  # well-formed: the reason and when to come back
            assert headers["retry-after"] == "1"
            assert headers["content-type"] == "application/json"
            assert json.loads(body)["error"] == "overloaded"
        for _lat, _status, _headers, body in answered[:50]:
            preds = json.loads(body)["predictions"]
            assert len(preds) == 32 and all(p["predicted_likes"] >= 0 for p in preds)
        answered_p99 = _p([r[0] for r in answered], 0.99)
        shed_p99 = _p([r[0] for r in shed], 0.99)
        answered_p50 = _p([r[0] for r in answered], 0.5)
        figures = (
            f"{len(results)} requests: {len(answered)} answered (p50 {answered_p50:.3f} s, "
            f"p99 {answered_p99:.3f} s), {len(shed)} shed (p99 {shed_p99:.3f} s)"
        )
        print(figures)
        assert answered_p99 < ANSWERED_P99_BOUND_S, figures
        assert shed_p99 < ANSWERED_P99_BOUND_S, figures
        assert scorer.metric_sum("pooch_scorer_whatif_shed_total", reason="queued") == len(shed)

        # Past the overload, an ordinary request is answered at once again.
        started = time.perf_counter()
        again = scorer.http.post("/v1/predict", content=BODY, headers={"content-type": "application/json"})
        assert again.status_code == 200 and time.perf_counter() - started < 1.0
    finally:
        assert scorer.stop() == 0
