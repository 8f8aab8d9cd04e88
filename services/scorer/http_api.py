"""Scorer HTTP API (port 8004).

* ``POST /v1/predict``: ``{"draft": {...}}`` or ``{"candidates": [{...}, ...]}`` (up to 32),
  optional ``extractor_version`` and ``deadline_ms``. 200 with every candidate's predicted
  likes, model_version, arm, fallback (and reason), best first. 422 with the reason for a
  draft that is not valid (``{"error": "invalid_draft", "reason": "...", "errors": [...]}``).
  503 with ``Retry-After`` (``{"error": "overloaded", "reason": "..."}``) for a request shed
  under overload: one that waited ``whatif_shed_after_ms`` in the server before its turn (its
  deadline counts from arrival, so worked on late it could only get the deadline fallback).
* ``GET /v1/models``: what serves now (per extractor version and arm), weights, statuses.
* ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from libs.common.health import Probes, add_health_routes
from libs.common.http_limits import RECEIVED_AT
from services.scorer import metrics as m
from services.scorer.registry import Registry
from services.scorer.whatif import PredictRequest, WhatIf

log = logging.getLogger(__name__)
_REQUEST = TypeAdapter(PredictRequest)
PREDICT_PATH = "/v1/predict"


def _reason(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = [
        {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
    ]
    reason = "; ".join(f"{e['loc']}: {e['msg']}" if e["loc"] else e["msg"] for e in errors[:5])
    return reason, errors


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


_OK, _INVALID, _ERROR = (m.WHATIF_REQUESTS.labels(o) for o in ("ok", "invalid", "error"))
_SHED_QUEUED = m.WHATIF_SHED.labels("queued")


async def answer(whatif: WhatIf, body: bytes, received: float | None) -> tuple[int, dict[str, Any]]:
    """``POST /v1/predict``: the status and the JSON answer for one request body."""
    try:
        req = _REQUEST.validate_json(body)
    except ValidationError as exc:
        reason, errors = _reason(exc)
        _INVALID.inc()
        return 422, {"error": "invalid_draft", "reason": reason, "errors": errors}
    try:
        # The deadline counts from arrival: time queued in the event loop is the caller's time too.
        result = await whatif.predict(req, started=received)
    except Exception:
        _ERROR.inc()
        log.exception("what-if request failed")
        return 500, {"error": "internal", "reason": "the scorer failed to answer; see its log"}
    _OK.inc()
    return 200, result


class PredictEndpoint:
    """``POST /v1/predict`` as plain ASGI, in front of FastAPI's routing; everything else passes on.

    The what-if API is the scorer's hot path: profiled under load (``docs/scorer.md``), FastAPI's
    routing, dependency solving and response classes took about a sixth of a request's CPU, more
    than predicting 8 rows. This answers the same statuses and bodies as the FastAPI route
    (:func:`answer`, shared by both), and sheds load first: a request that waited past
    ``shed_after_s`` in the server (stamped by the protocol, :data:`RECEIVED_AT`) gets a 503 with
    ``Retry-After`` at once, so an overloaded scorer spends its core on answers that can still be
    on time instead of queueing every request behind the others without bound."""

    def __init__(self, app: Any, *, whatif: WhatIf, shed_after_s: float, retry_after_s: int) -> None:
        self.app = app
        self.whatif = whatif
        self.shed_after_s = shed_after_s
        payload = orjson.dumps(
            {"error": "overloaded", "reason": "the scorer is overloaded: the request waited too long; retry"}
        )
        self._shed = _response(503, payload, [(b"retry-after", str(retry_after_s).encode())])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != PREDICT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        received = scope.get("state", {}).get(RECEIVED_AT)
        if (
            self.shed_after_s > 0
            and received is not None
            and time.perf_counter() - received > self.shed_after_s
        ):
            _SHED_QUEUED.inc()
            for message in self._shed:
                await send(message)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        status, body = await answer(self.whatif, b"".join(chunks), received)
        for message in _response(status, orjson.dumps(body)):
            await send(message)


def _response(
    status: int, payload: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    headers = [(b"content-length", str(len(payload)).encode()), (b"content-type", b"application/json")]
    return {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}, {
        "type": "http.response.body",
        "body": payload,
    }


def create_app(whatif: WhatIf, registry: Registry, probes: Probes) -> PredictEndpoint:
    """The scorer's ASGI app: PredictEndpoint in front of the FastAPI app of the other routes."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await whatif.close()

    app = FastAPI(title="pooch scorer", version="1", lifespan=lifespan)
    add_health_routes(app, probes)

    @app.post(PREDICT_PATH)
    async def predict(request: Request) -> Response:
        # Served by PredictEndpoint; the route stays for the OpenAPI description and for a
        # request that reaches FastAPI by another way (a redirect of "/v1/predict/", say).
        status, body = await answer(
            whatif, await request.body(), request.scope.get("state", {}).get(RECEIVED_AT)
        )
        return _json(body, status)

    @app.get("/v1/models")
    def models() -> JSONResponse:
        return JSONResponse(registry.snapshot.describe())

    # Outside FastAPI altogether: a shed answer then costs no middleware stack at all.
    return PredictEndpoint(
        app,
        whatif=whatif,
        shed_after_s=whatif.s.whatif_shed_after_ms / 1000,
        retry_after_s=whatif.s.whatif_retry_after_s,
    )
