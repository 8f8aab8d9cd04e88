"""The what-if API's pipelined MGET client (services/scorer/view_reader.py) on the real Redis:
concurrent callers each get their own reply, a caller that gives up does not shift the others',
a killed connection fails what waits and the next call reconnects, and Redis's errors surface."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest
import redis
import uvloop
from redis.connection import parse_url

from services.scorer.view_reader import ViewReader


@pytest.fixture
def keys(redis_url: str):
    prefix = f"test-view-reader:{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(redis_url)
    values = {f"{prefix}{i}": f"value-{i}".encode() for i in range(200)}
    client.mset(values)
    yield prefix, values
    client.delete(*values)


def _run(coro):
    return uvloop.run(coro)


def test_concurrent_callers_each_get_their_own_values_in_order(redis_url, keys):
    prefix, values = keys

    async def main():
        reader = ViewReader(redis_url, connect_timeout_s=2)
        asks = [[f"{prefix}{i}", f"{prefix}missing", f"{prefix}{(i * 7) % 200}"] for i in range(200)]
        got = await asyncio.gather(*(reader.mget(k) for k in asks))
        await reader.aclose()
        return asks, got

    asks, got = _run(main())
    for ask, reply in zip(asks, got, strict=True):
        assert reply == [values[ask[0]], None, values[ask[2]]]


def test_a_caller_that_gives_up_does_not_shift_the_replies_of_the_next(redis_url, keys):
    prefix, values = keys

    async def main():
        reader = ViewReader(redis_url, connect_timeout_s=2)
        await reader.mget([f"{prefix}0"])  # connected
        given_up = 0
        for i in range(50):
            task = asyncio.ensure_future(reader.mget([f"{prefix}{i}"]))
            await asyncio.sleep(0)  # its command is written
            task.cancel()  # and its caller leaves before the reply
            with pytest.raises(asyncio.CancelledError):
                await task
            given_up += 1
            assert await reader.mget([f"{prefix}{i + 100}"]) == [values[f"{prefix}{i + 100}"]]
        await reader.aclose()
        return given_up

    assert _run(main()) == 50


def test_a_killed_connection_fails_what_waits_and_the_next_call_reconnects(redis_url, keys):
    prefix, values = keys
    name = f"test-reader-{uuid.uuid4().hex[:8]}"
    admin = redis.Redis.from_url(redis_url)

    async def main():
        reader = ViewReader(redis_url, connect_timeout_s=2, name=name)
        assert await reader.mget([f"{prefix}1"]) == [values[f"{prefix}1"]]
        ours = [c for c in admin.client_list() if c["name"] == name]
        assert len(ours) == 1, "the reader names its one connection"
        # Killed before the loop has seen it: the read is written to the dead connection and
        # waits, then the loss reaches it.
        waiting = asyncio.ensure_future(reader.mget([f"{prefix}2"]))
        admin.client_kill_filter(_id=ours[0]["id"])
        with pytest.raises(redis.ConnectionError):
            async with asyncio.timeout(5):
                await waiting
        assert await reader.mget([f"{prefix}3"]) == [values[f"{prefix}3"]]
        assert len([c for c in admin.client_list() if c["name"] == name]) == 1
        await reader.aclose()

    _run(main())


def test_redis_errors_and_an_unreachable_redis_are_redis_errors(redis_url):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]

    opts = parse_url(redis_url)
    host, port = opts["host"], opts.get("port", 6379)

    async def main():
        with pytest.raises(redis.ConnectionError):
            await ViewReader(f"redis://{host}:{closed_port}/0", connect_timeout_s=2).mget(["k"])
        # The test Redis has no password: AUTH is refused, and the refusal surfaces.
        with pytest.raises(redis.ResponseError):
            await ViewReader(f"redis://:wrong@{host}:{port}/0", connect_timeout_s=2).mget(["k"])

    _run(main())


def test_only_redis_urls_are_taken():
    with pytest.raises(ValueError, match="unix://"):
        ViewReader("unix:///tmp/redis.sock", connect_timeout_s=1)
