"""HTTP for clients that cannot speak Kafka: ``POST /v1/pupdates`` and ``POST /v1/likes``.

The body is one event (a JSON object) or a batch (a JSON array). Fields are the raw Avro
schema's, plus an optional ``schema_version`` (default: the current one), so an app on an old
version can post what it would have written to Kafka. Each event is checked here against its
schema version and the stateless rules of :mod:`services.collector.validation`; what passes is
encoded in that writer version, exactly as the app would have sent it to the raw topic, and the
stream does the stateful checks (re-sends, unknown dogs and pupdates) like for any raw record.

Answers (every one carries ``X-Request-Id``, the client's or a generated one):

* 202: every event is durably in Kafka (acks=all delivery reports of those messages).
* 400 ``undecodable``: the body is not JSON. 422: the event is invalid; the body says why
  (``reason`` is a dead-letter reason code). A batch with valid and invalid events gets 207 and
  one result per event: the valid ones were written. Retrying a whole batch is safe: the stream
  drops re-sent event_ids.
* 401 without a valid ``X-API-Key`` when keys are configured; 413 for a body over the limit
  (Content-Length or the bytes actually sent) or a batch with too many events.
* 503 within a second when Kafka does not acknowledge (``Retry-After: 1``).

Rejected events also go to ``deadletters`` with the request id (best effort: when Kafka is
down they are only logged).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from libs.common.deadletters import DEADLETTERS_TOTAL, DeadLetters
from libs.common.health import Probes, add_health_routes
from libs.common.http_limits import ApiKeys
from libs.common.serde import Serde, default_store
from libs.common.settings import CommonSettings
from libs.common.topics import DEADLETTERS, LIKES_RAW, PUPDATES_RAW
from services.collector import metrics as m
from services.collector import validation as v
from services.collector.gateway import KafkaGateway, KafkaUnavailable
from services.collector.settings import CollectorSettings

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_ROUTES = {"/v1/pupdates": "pupdates", "/v1/likes": "likes"}


class _SafeJSON(JSONResponse):
    """JSON that always renders: the answers echo what the client sent (its event_id, details
    quoting its values), which may hold lone surrogates or NaN; those are escaped (``\\udXXX``)
    or not echoed, never a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def _echo(value: Any) -> str | None:
    """A client's event_id as it may be echoed: a string, or nothing."""
    return value if isinstance(value, str) else None


class _Kind:
    """What one endpoint accepts: the raw record, its topic and its writer versions."""

    def __init__(self, name: str, stem: str, topic: str, check) -> None:
        self.name = name
        self.topic = topic
        self.check = check
        store = default_store()
        self.current = store.current(stem).version
        self.writers = {
            s.version: (s.parsed, Serde(stem, writer_version=s.version)) for s in store.versions[stem]
        }


class RequestContext:
    """Pure ASGI middleware: request id in and out, latency histogram by route and status."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                text = value.decode("latin-1")
                request_id = text if _REQUEST_ID.match(text) else None
                break
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = [500]
        rid = request_id.encode()

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = _ROUTES.get(scope["path"])
            if route is not None:
                m.HTTP_SECONDS.labels(route, str(status[0])).observe(time.perf_counter() - started)


def create_app(
    common: CommonSettings, settings: CollectorSettings, probes: Probes, gateway: KafkaGateway | None
) -> FastAPI:
    app = FastAPI(title="Pooch Predictor collector", version="1", docs_url="/docs", redoc_url=None)
    add_health_routes(app, probes)
    limits = v.Limits.from_settings(settings)
    keys = ApiKeys(settings.api_keys)
    dead_topic = common.topic(DEADLETTERS)
    letters = DeadLetters(common, "collector")
    kinds = {
        "pupdates": _Kind("pupdate", "pupdate_raw", common.topic(PUPDATES_RAW), v.check_pupdate),
        "likes": _Kind("like", "like_raw", common.topic(LIKES_RAW), v.check_like),
    }

    def authorised(request: Request) -> bool:
        return keys.allows(request.headers.get("x-api-key"))

    def error(status: int, request_id: str, reason: str, detail: str, **extra) -> JSONResponse:
        body = {"request_id": request_id, "error": reason, "detail": detail, **extra}
        return _SafeJSON(body, status_code=status, headers={"Retry-After": "1"} if status == 503 else None)

    def dead_letter(request_id: str, reason: str, detail: str, value: bytes, key: str | None) -> None:
        m.REJECTED.labels(reason, "http").inc()
        rec = letters.record(reason, detail, request_id=request_id, key=key or None, value=value)
        queued = gateway is not None and gateway.send_nowait(dead_topic, letters.encode(rec), rec["key"])
        if queued:
            DEADLETTERS_TOTAL.labels("collector", reason).inc()
        log.info(
            "request rejected",
            extra={
                "request_id": request_id,
                "reason": reason,
                "detail": detail[:300],
                "dead_lettered": queued,
            },
        )

    async def read_body(request: Request, request_id: str) -> bytes | Response:
        declared = request.headers.get("content-length")
        limit = settings.http_max_body_bytes
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return error(400, request_id, v.UNDECODABLE, "Content-Length is not a number")
            if size > limit:
                return error(413, request_id, "body_too_large", f"{size} bytes (limit {limit})")
        chunks = []
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                return error(413, request_id, "body_too_large", f"more than {limit} bytes (limit {limit})")
            chunks.append(chunk)
        return b"".join(chunks)

    def check_event(
        kind: _Kind, obj: Any, now_ms: int
    ) -> tuple[tuple[str, bytes, str] | None, v.Rejection | None]:
        if not isinstance(obj, dict):
            return None, v.Rejection(
                v.MISTYPED_FIELD, f"an event must be a JSON object, got {type(obj).__name__}"
            )
        version = obj.get("schema_version", kind.current)
        if not isinstance(version, int) or isinstance(version, bool) or version not in kind.writers:
            return None, v.Rejection(
                v.UNKNOWN_SCHEMA, f"schema_version {version!r} is not one of {sorted(kind.writers)}"
            )
        parsed, writer = kind.writers[version]
        rec, bad = v.from_json(obj, parsed)
        if bad is not None:
            return None, bad
        bad = kind.check(rec, now_ms, limits)
        if bad is not None:
            return None, bad
        value = writer.encode(rec)
        bad = v.check_value_size(len(value), limits)
        if bad is not None:
            return None, bad
        return (kind.topic, value, rec["pupdate_id"]), None

    async def ingest(request: Request, route: str) -> Response:
        request_id = request.state.request_id
        kind = kinds[route]
        if not authorised(request):
            return error(401, request_id, "unauthorized", "a valid X-API-Key header is required")
        body = await read_body(request, request_id)
        if isinstance(body, Response):
            return body
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
            dead_letter(request_id, v.UNDECODABLE, f"body is not JSON: {exc}", body, None)
            m.HTTP_EVENTS.labels(kind.name, "rejected").inc()
            return error(400, request_id, v.UNDECODABLE, f"the body is not JSON: {exc}")
        single = not isinstance(payload, list)
        events = [payload] if single else payload
        if not events:
            return error(422, request_id, "empty_batch", "the batch has no events")
        if len(events) > settings.http_max_batch:
            return error(
                413, request_id, "batch_too_large", f"{len(events)} events (limit {settings.http_max_batch})"
            )
        now_ms = int(time.time() * 1000)
        results: list[dict[str, Any]] = []
        good: list[tuple[str, bytes, str]] = []
        good_index: list[int] = []
        for i, obj in enumerate(events):
            message, bad = check_event(kind, obj, now_ms)
            event_id = _echo(obj.get("event_id")) if isinstance(obj, dict) else None
            if bad is not None:
                key = obj.get("pupdate_id") if isinstance(obj, dict) else None
                dead_letter(
                    request_id if single else f"{request_id}#{i}",
                    bad.reason,
                    bad.detail,
                    json.dumps(obj, separators=(",", ":")).encode(),
                    key if isinstance(key, str) else None,
                )
                results.append(
                    {
                        "index": i,
                        "event_id": event_id,
                        "status": "rejected",
                        "reason": bad.reason,
                        "detail": bad.detail,
                    }
                )
            else:
                good.append(message)
                good_index.append(i)
                results.append({"index": i, "event_id": event_id, "status": "accepted"})
        if good:
            if gateway is None:
                return error(503, request_id, "kafka_unavailable", "this instance serves no API producer")
            try:
                await gateway.send(good)
            except KafkaUnavailable as exc:
                m.HTTP_EVENTS.labels(kind.name, "unavailable").inc(len(good))
                log.warning("Kafka unavailable", extra={"request_id": request_id, "error": str(exc)})
                return error(503, request_id, "kafka_unavailable", str(exc))
        n_bad = len(events) - len(good)
        if good:
            m.HTTP_EVENTS.labels(kind.name, "accepted").inc(len(good))
        if n_bad:
            m.HTTP_EVENTS.labels(kind.name, "rejected").inc(n_bad)
        if single:
            r = results[0]
            if r["status"] == "accepted":
                return _SafeJSON(
                    {"request_id": request_id, "status": "accepted", "event_id": r["event_id"]}, 202
                )
            return error(422, request_id, r["reason"], r["detail"], event_id=r["event_id"])
        status = 202 if not n_bad else (422 if not good else 207)
        return _SafeJSON(
            {"request_id": request_id, "accepted": len(good), "rejected": n_bad, "results": results}, status
        )

    @app.post("/v1/pupdates", status_code=202)
    async def post_pupdates(request: Request) -> Response:
        """One pupdate or a list of them, in any known pupdate_raw schema version."""
        return await ingest(request, "pupdates")

    @app.post("/v1/likes", status_code=202)
    async def post_likes(request: Request) -> Response:
        """One like or a list of them, in any known like_raw schema version."""
        return await ingest(request, "likes")

    app.add_middleware(RequestContext)
    return app
