"""The featurizer's Redis online view through wipes and restarts, with TTLs it keeps fresh, and
like counting that stays right when the same like reaches the facts twice (issue 11, items 2, 8)."""

from __future__ import annotations

import json
import time

import pytest
import redis

from libs.common.features.online_view import OnlineView
from libs.common.kafka.producer import Producer
from libs.common.serde import serde
from libs.common.topics import INSTANCES, LIKES, PUPDATES
from tests.support.facts import pupdate_fact
from tests.support.kafkautil import read_all, wait_for
from tests.support.procs import ServiceProcess
from tests.support.scorer import RedisServer
from tests.support.simworld import START_MS

HORIZON_MS = 60_000


def _like(event_id: str, pid: str, liked_at: int) -> dict:
    return {
        "event_id": event_id,
        "pupdate_id": pid,
        "sniffer_id": f"s-{event_id}",
        "liked_at": liked_at,
        "app_version": "3.0.0",
        "collected_at": liked_at,
    }


def _write(settings, pupdates: list[dict], likes: list[dict]) -> None:
    producer = Producer(settings, name="facts")
    for p in pupdates:
        producer.produce(settings.topic(PUPDATES), serde("pupdate").encode(p), key=p["pupdate_id"])
    for lk in likes:
        producer.produce(settings.topic(LIKES), serde("like").encode(lk), key=lk["pupdate_id"])
    producer.flush(30)


def _featurizer(settings, tmp_path, redis_url: str | None = None, **opts) -> ServiceProcess:
    return ServiceProcess(
        "featurizer",
        settings,
        tmp_path,
        redis_url=redis_url,
        horizon_ms=HORIZON_MS,
        versions='["v1"]',
        lateness_ms=0,
        idle_flush_ms=300,
        **opts,
    ).wait_ready()


def _instances(settings) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for msg in read_all(settings, settings.topic(INSTANCES), timeout=30):
        rec = serde("instance").decode(msg.value())
        out.setdefault(rec["pupdate_id"], []).append(rec)
    return out


def test_a_like_resent_after_the_collector_forgot_it_is_counted_once(topics, tmp_path):
    t = START_MS
    # like-1 again, as the collector lets it through once it has forgotten its id
    likes = [_like("like-1", "p1", t + 10), _like("like-2", "p1", t + 20), _like("like-1", "p1", t + 10)]
    # p2, two horizons later, moves event time past p1's horizon
    _write(
        topics,
        [
            pupdate_fact("p1", t, dog="d1", tags=["#pug"]),
            pupdate_fact("p2", t + 2 * HORIZON_MS, dog="d1", tags=[]),
        ],
        likes,
    )
    proc = _featurizer(topics, tmp_path)
    try:
        wait_for(lambda: "p1" in _instances(topics), timeout=60, what="p1's instance")
        duplicates = proc.metric_sum("pooch_featurizer_likes_total", outcome="duplicate")
    finally:
        proc.stop()
    [inst] = _instances(topics)["p1"]
    assert inst["likes"] == 2
    assert duplicates == 1


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


class ViewRun:
    """A featurizer writing the view of a few matured pupdates into a Redis of the test's own."""

    def __init__(self, settings, tmp_path, redis_server: RedisServer, **opts) -> None:
        t = START_MS
        pupdates = [
            pupdate_fact(f"p{i}", t + i * 1000, dog=f"d{i % 3}", tags=["#pug", f"#tag{i % 4}"])
            for i in range(12)
        ]
        pupdates.append(
            pupdate_fact("late", t + 3 * HORIZON_MS, dog="dz", tags=[])
        )  # closes every horizon above
        _write(settings, pupdates, [_like(f"l{i}", f"p{i}", t + i * 1000 + 5) for i in range(12)])
        self.proc = _featurizer(settings, tmp_path, redis_url=redis_server.url, **opts)
        self.client = redis.Redis.from_url(redis_server.url)
        view = OnlineView(self.client, settings.topic_prefix)
        self.keys = [view.dog_key(d) for d in ("d0", "d1", "d2", "dz")]
        self.keys += [view.tag_key("v1", "pug"), view.overall_key]
        wait_for(
            lambda: (v := self.values()) and v[-1] == {"n": 12, "likes": 12.0} and None not in v,
            timeout=60,
            what="the whole view",
        )
        self.full = self.values()

    def values(self) -> list:
        try:
            return [json.loads(v) if v is not None else None for v in self.client.mget(self.keys)]
        except redis.RedisError:
            return []

    def close(self) -> None:
        self.client.close()
        self.proc.stop()


def test_the_view_is_rewritten_after_flushall_and_after_a_redis_restart(topics, tmp_path, own_redis):
    run = ViewRun(topics, tmp_path, own_redis, view_check_s=0.3, view_rewrite_batch=4)
    try:
        run.client.flushall()  # no fact arrives any more: nothing "changed"
        wait_for(lambda: run.values() == run.full, timeout=15, interval=0.2, what="the view after FLUSHALL")
        own_redis.stop()  # no persistence: it comes back empty
        own_redis.start()
        wait_for(lambda: run.values() == run.full, timeout=15, interval=0.2, what="the view after a restart")
        assert run.proc.metric_sum("pooch_featurizer_view_rewrites_total", reason="wiped") >= 2
    finally:
        run.close()


def test_view_keys_expire_unless_the_featurizer_refreshes_them(topics, tmp_path, own_redis):
    ttl_s = 3
    run = ViewRun(topics, tmp_path, own_redis, view_ttl_s=ttl_s, view_check_s=0.3)
    try:
        ttls = [run.client.ttl(k) for k in run.keys]
        assert all(0 < t <= ttl_s for t in ttls), ttls
        time.sleep(2 * ttl_s)  # no fact arrives: the featurizer keeps the keys alive past their TTL
        assert run.values() == run.full
        assert run.proc.metric_sum("pooch_featurizer_view_rewrites_total", reason="refresh") >= 1
        run.proc.stop()  # its writer gone, the view expires
        wait_for(lambda: run.values() == [None] * len(run.keys), timeout=2 * ttl_s, what="the keys expired")
    finally:
        run.close()
