"""Scorer HTTP API (port 8004).

* ``POST /v1/predict``: ``{"draft": {...}}`` or ``{"candidates": [{...}, ...]}`` (up to 32),
  optional ``extractor_version`` and ``deadline_ms``. 200 with every candidate's predicted
  likes, model_version, arm, fallback (and reason), best first. 422 with the reason for a
  draft that is not valid (``{"error": "invalid_draft", "reason": "...", "errors": [...]}``).
* ``GET /v1/models``: what serves now (per extractor version and arm), weights, statuses.
* ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from libs.common.health import Probes, add_health_routes
from services.scorer import metrics as m
from services.scorer.registry import Registry
from services.scorer.whatif import PredictRequest, WhatIf

log = logging.getLogger(__name__)
_REQUEST = TypeAdapter(PredictRequest)


def _reason(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = [
        {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
    ]
    reason = "; ".join(f"{e['loc']}: {e['msg']}" if e["loc"] else e["msg"] for e in errors[:5])
    return reason, errors


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def create_app(whatif: WhatIf, registry: Registry, probes: Probes) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await whatif.close()

    app = FastAPI(title="pooch scorer", version="1", lifespan=lifespan)
    add_health_routes(app, probes)

    @app.post("/v1/predict")
    async def predict(request: Request) -> Response:
        body = await request.body()
        try:
            req = _REQUEST.validate_json(body)
        except ValidationError as exc:
            reason, errors = _reason(exc)
            m.WHATIF_REQUESTS.labels("invalid").inc()
            return _json({"error": "invalid_draft", "reason": reason, "errors": errors}, 422)
        try:
            answer = await whatif.predict(req)
        except Exception:
            m.WHATIF_REQUESTS.labels("error").inc()
            log.exception("what-if request failed")
            return _json({"error": "internal", "reason": "the scorer failed to answer; see its log"}, 500)
        m.WHATIF_REQUESTS.labels("ok").inc()
        return _json(answer)

    @app.get("/v1/models")
    def models() -> JSONResponse:
        return JSONResponse(registry.snapshot.describe())

    return app
