"""The what-if API's reads of the Redis online view: MGET over one pipelined connection.

redis-py's asyncio client costs more per MGET than the rest of a one-draft request's Redis work
together: measured 2026-12-01 on this machine (uvloop, a 17-key MGET, CPU per call), the pooled
client 293 us, one held connection of it 167 us (its StreamReader and retry wrapper), and a
protocol on hiredis's reader 79 us. So the what-if path speaks RESP itself, with hiredis (the
parser redis-py uses too) reading the replies and packing the commands, and nothing else:

* one connection, pipelined: Redis answers a connection's commands in order, so concurrent
  requests each append a future and write their command, with no pool and no lock;
* a caller that gives up (its deadline) leaves its future behind, cancelled: the reply still
  comes, in order, and is dropped;
* a lost connection fails every waiting caller with :class:`redis.ConnectionError` (what the
  caller already handles as "unavailable"), and the next call connects again;
* ``redis://`` and ``rediss://`` URLs with user, password and database, as redis-py reads them.

Everything else (the featurizer's writes, the stream's reads) stays on redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Any

import hiredis
import redis
from redis.connection import parse_url

# Replies owed to callers who gave up: past this many the connection is taken as hung.
MAX_PENDING = 1024


class _Pipe(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.pending: collections.deque[asyncio.Future] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if not self.pending:  # a reply nobody asked for: the stream is out of step
                self.transport.close()  # type: ignore[union-attr]
                return
            fut = self.pending.popleft()
            if fut.done():  # its caller's deadline passed
                continue
            if isinstance(reply, hiredis.ReplyError):
                fut.set_exception(redis.ResponseError(str(reply)))
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        error = redis.ConnectionError(f"connection to Redis lost: {exc or 'closed'}")
        while self.pending:
            fut = self.pending.popleft()
            if not fut.done():
                fut.set_exception(error)

    def call(self, *args: Any) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.pending.append(fut)
        self.transport.write(hiredis.pack_command(args))  # type: ignore[union-attr]
        return fut


class ViewReader:
    """``await reader.mget(keys)``: the values (bytes or None), or a :class:`redis.RedisError`."""

    def __init__(self, url: str, *, connect_timeout_s: float, name: str = "pooch-scorer-whatif") -> None:
        scheme = url.split("://", 1)[0]
        if scheme not in ("redis", "rediss"):
            raise ValueError(f"the what-if reader speaks redis:// and rediss://, not {scheme}://")
        opts = parse_url(url)
        self.host = opts.get("host") or "localhost"
        self.port = int(opts.get("port") or 6379)
        self.db = int(opts.get("db") or 0)
        self.username = opts.get("username")
        self.password = opts.get("password")
        self.tls = ssl.create_default_context() if scheme == "rediss" else None
        self.connect_timeout_s = connect_timeout_s
        self.name = name  # CLIENT SETNAME: the connection is named in Redis's CLIENT LIST
        self._pipe: _Pipe | None = None
        self._connecting: asyncio.Task | None = None

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        pipe = await self._connected()
        if len(pipe.pending) >= MAX_PENDING:
            pipe.transport.close()  # type: ignore[union-attr]  # fails what waits; next call reconnects
            raise redis.ConnectionError(f"Redis has not answered {MAX_PENDING} reads: reconnecting")
        return await pipe.call("MGET", *keys)

    async def _connected(self) -> _Pipe:
        pipe = self._pipe
        if pipe is not None and not pipe.lost:
            return pipe
        if self._connecting is None or self._connecting.done():
            # One connect at a time, shared by concurrent callers, and not cancelled with the
            # first of them to give up (a failed one is retried by the next call, not replayed).
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Pipe:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, pipe = await loop.create_connection(_Pipe, self.host, self.port, ssl=self.tls)
                hello: list[asyncio.Future] = []
                if self.password is not None:
                    auth = (self.username, self.password) if self.username else (self.password,)
                    hello.append(pipe.call("AUTH", *auth))
                if self.db:
                    hello.append(pipe.call("SELECT", self.db))
                hello.append(pipe.call("CLIENT", "SETNAME", self.name))
                for reply in hello:
                    await reply
        except TimeoutError as exc:
            raise redis.TimeoutError(f"no connection to Redis within {self.connect_timeout_s} s") from exc
        except OSError as exc:
            raise redis.ConnectionError(f"cannot connect to Redis at {self.host}:{self.port}: {exc}") from exc
        self._pipe = pipe
        return pipe

    async def aclose(self) -> None:
        if self._pipe is not None and self._pipe.transport is not None:
            self._pipe.transport.close()
        self._pipe = None
