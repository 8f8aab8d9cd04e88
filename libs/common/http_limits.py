"""What every service's HTTP server takes from a caller, and who may call what: owned here once.

* :class:`HttpLimits` (``POOCH_HTTP_*``): the largest body (413), the deadline for a request's
  head and body to arrive (a slow client is dropped), the keep-alive idle time, the most
  requests in flight (503) and the largest request head.
* :class:`ApiKeys`: the optional ``X-API-Key`` check (constant-time against every key), for the
  collector's ingest, the scorer's what-if, the trainer's ``POST /v1/train``.
* :class:`Guard`: the ASGI middleware that applies the body limit, the in-flight limit and the
  keys. Probes (``/healthz``, ``/readyz``, ``/metrics``) are never limited nor keyed: an
  orchestrator must reach them when the API is saturated.
* :func:`deadline_protocol`: uvicorn's httptools protocol with a deadline from a connection's first
  byte (or its opening) to the end of each request. uvicorn times out only idle keep-alive
  connections, so a client that sends its head or body a byte at a time would hold a
  connection forever; an ASGI middleware cannot help with the head, which uvicorn reads first.
  It also stamps each request's scope with when its bytes were read (:data:`RECEIVED_AT`, in
  ``scope["state"]``): under overload a request waits in the event loop before any middleware
  runs, and only the protocol sees it arrive, so an app can shed what has waited too long.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, MutableMapping
from typing import Annotated, Any

from prometheus_client import Counter
from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
# Key in a request's scope["state"]: time.perf_counter() when the protocol read its bytes.
RECEIVED_AT = "pooch.received_at"
REJECTED = Counter(
    "pooch_http_rejected_total",
    "Requests refused before the handler: too_large (413), overloaded (503), unauthorized (401), "
    "too_slow (connection dropped: head or body not in within the deadline).",
    ["reason"],
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _split_keys(value: Any) -> Any:
    if isinstance(value, str):
        return [k.strip() for k in value.split(",") if k.strip()]
    return value


# A settings field of API keys: comma-separated in the environment, each kept secret.
ApiKeyList = Annotated[list[SecretStr], NoDecode, BeforeValidator(_split_keys)]


class HttpLimits(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POOCH_HTTP_", frozen=True, extra="ignore")

    max_body_bytes: int = Field(1024 * 1024, ge=1, description="Larger request bodies get 413.")
    read_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A request's head and body must arrive within this; else the connection is dropped.",
    )
    keep_alive_s: float = Field(5.0, gt=0, description="An idle keep-alive connection is closed after this.")
    max_concurrency: int = Field(
        64, ge=1, description="Requests in flight (probes aside); more get 503 with Retry-After."
    )
    max_connections: int = Field(
        1000, ge=1, description="Open connections uvicorn serves at all (limit_concurrency); more get 503."
    )
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="Largest request head; more: 400.")


class ApiKeys:
    """``X-API-Key`` against the configured keys; no keys configured: everyone may call."""

    def __init__(self, keys: Iterable[SecretStr]) -> None:
        self._keys = [k.get_secret_value().encode() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def allows(self, given: str | bytes | None) -> bool:
        if not self._keys:
            return True
        raw = given.encode("latin-1") if isinstance(given, str) else (given or b"")
        ok = False
        for key in self._keys:  # every key, in constant time each: no timing hint which matched
            ok |= hmac.compare_digest(raw, key)
        return ok


def _json_response(status: int, error: str, detail: str, headers: list[tuple[bytes, bytes]] | None = None):
    body = json.dumps({"error": error, "detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {"type": "http.response.start", "status": status, "headers": head + (headers or [])}, {
        "type": "http.response.body",
        "body": body,
    }


class Guard:
    """Body limit, in-flight limit and API keys in front of an ASGI app (probes exempt).

    ``keyed`` lists the (method, path) pairs that need a key; a path ending in ``*`` is a prefix.
    The body is read here (bounded) and handed to the app whole: the app's own read is instant
    and can never be slower than the protocol's deadline."""

    def __init__(
        self,
        app: Any,
        limits: HttpLimits,
        *,
        keys: ApiKeys | None = None,
        keyed: Collection[tuple[str, str]] = (),
        body_limit: bool = True,
    ) -> None:
        self.app = app
        self.limits = limits
        self.keys = keys or ApiKeys([])
        self.keyed = list(keyed)
        self.body_limit = body_limit
        self.in_flight = 0

    def _needs_key(self, method: str, path: str) -> bool:
        for m, p in self.keyed:
            if m == method and (path == p or (p.endswith("*") and path.startswith(p[:-1]))):
                return True
        return False

    async def _refuse(self, send: Send, status: int, reason: str, error: str, detail: str, **extra) -> None:
        REJECTED.labels(reason).inc()
        headers = [(k.encode(), v.encode()) for k, v in extra.items()]
        start, body = _json_response(status, error, detail, headers)
        await send(start)
        await send(body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        if self.keys.enabled and self._needs_key(scope["method"], scope["path"]):
            given = next((v for k, v in scope["headers"] if k == b"x-api-key"), None)
            if not self.keys.allows(given):
                await self._refuse(
                    send, 401, "unauthorized", "unauthorized", "a valid X-API-Key header is required"
                )
                return
        if self.in_flight >= self.limits.max_concurrency:
            await self._refuse(
                send,
                503,
                "overloaded",
                "overloaded",
                "too many requests in flight; retry",
                **{"retry-after": "1"},
            )
            return
        self.in_flight += 1
        try:
            if self.body_limit:
                body = await self._read_body(scope, receive, send)
                if body is None:
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        limit = self.limits.max_body_bytes
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, 413, "too_large", "body_too_large", f"the body is over {limit} bytes")
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(
                    send, 413, "too_large", "body_too_large", f"the body is over {limit} bytes"
                )
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, whenever it comes

    return replay


class _DeadlineHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline from the first byte of a request (or the
    connection's opening) to its last, a connection that misses it being closed, and a limit on
    the request head (400 past it).

    httptools (llhttp, in C) rather than h11 (pure Python): profiled on the scorer's what-if
    path, h11's parsing and writing were a sixth of a request's CPU (``docs/scorer.md``)."""

    read_timeout_s = 10.0
    max_header_bytes = 16 * 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._received_at = time.perf_counter()
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = False  # between a request's first byte and its last header
        self._in_request = False  # between a request's first byte and its last
        self._head_bytes = 0  # bytes read while a head was incomplete
        self._parsed_head = 0  # the current head's size as parsed
        super().connection_made(transport)
        self._arm()  # the first request must be in before the deadline too

    def data_received(self, data: bytes) -> None:
        self._received_at = time.perf_counter()
        if self._in_head or not self._in_request:
            # Bytes of a head not complete yet (an upper bound: a chunk may carry body bytes
            # too): llhttp would buffer one endless header whole, so the bound is kept here.
            self._head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            self._disarm()
            return
        if self._in_head and self._head_bytes > self.max_header_bytes:
            self.send_400_response("Request head too large.")
            self._disarm()
            return
        if self._in_request or self._head_bytes:
            self._arm()  # a request is on its way: it must be in before the deadline
        else:
            self._disarm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = self._in_request = True
        self._parsed_head = 0
        # Stamped with when the data it came in was read (for a pipelined request, parsed with
        # its predecessor, that read: a lower bound), before any queueing in the event loop.
        self.scope["state"][RECEIVED_AT] = self._received_at

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_size(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._head_size(len(name) + len(value) + 4)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_request = False
        self._head_bytes = 0
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _head_size(self, n: int) -> None:
        # The exact size of the head as parsed: raising here makes the parser fail and uvicorn
        # answer 400, as h11 does for a head over its limit.
        self._parsed_head += n
        if self._parsed_head > self.max_header_bytes:
            raise ValueError("request head too large")

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.read_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        waiting = self._in_request or self._head_bytes or self.cycle is None
        if waiting and not self.transport.is_closing():
            REJECTED.labels("too_slow").inc()
            log.info(
                "request not in within the deadline; connection dropped", extra={"client": str(self.client)}
            )
            self.transport.close()


def deadline_protocol(limits: HttpLimits) -> type[HttpToolsProtocol]:
    return type(
        "DeadlineHttpTools",
        (_DeadlineHttpTools,),
        {"read_timeout_s": limits.read_timeout_s, "max_header_bytes": limits.max_header_bytes},
    )
