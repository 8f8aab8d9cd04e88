"""Supervisor HTTP API (port 8005).

Reading needs no token:

* ``GET /v1/models``: every version with its status (active, paused, retired), roles (champion,
  challenger), health (healthy, warning, unhealthy, no_data), why (the last decision and its
  reason, or the breaches), its window figures per slice and its decisions; per extractor
  version what serves and the fallback figures.
* ``GET /v1/experiments``: per extractor version and arm, pupdates, realised likes per pupdate
  with its confidence interval, the difference to the champion and the verdict.
* ``GET /v1/policies``: the policies in force and where they came from.
* ``GET /v1/windows``: diagnostics: the raw window tallies (what a restart must rebuild).
* ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.

Changing anything needs ``Authorization: Bearer <POOCH_SUPERVISOR_OPERATOR_TOKEN>``: 401
without credentials, 403 with a wrong token (or when no token is configured: then nobody may).

* ``POST /v1/models/{version}/pause``    body (optional): ``{"reason": "...", "actor": "ana",
  "fallback": true}``
* ``POST /v1/models/{version}/resume``   body (optional): ``{"reason": "...", "actor": "ana"}``
* ``POST /v1/models/{version}/activate`` body (optional): ``{"arm": "champion"|"challenger",
  "arm_weights": {"champion": 0.8, "challenger": 0.2}, "reason": "...", "actor": "ana"}``

200 with the records written once they are durable on ``models``; 404 for an unknown version;
409 when the state on the topic already says so (pausing a paused version: a decision is never
taken twice); 400 for a bad body; 503 while the supervisor is still reading the topics or Kafka
does not take the record.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from libs.common.health import Probes, add_health_routes
from libs.common.json_body import BadJsonBody, parse_json_body
from services.supervisor import decisions as dec
from services.supervisor import metrics as m
from services.supervisor.settings import SupervisorSettings

if TYPE_CHECKING:
    from services.supervisor.service import Supervisor

log = logging.getLogger(__name__)
ACTIONS = ("pause", "resume", "activate")


def _event_view(e: dict[str, Any]) -> dict[str, Any]:
    return {
        k: e[k]
        for k in (
            "kind",
            "event_id",
            "model_version",
            "extractor_version",
            "arm",
            "arm_weights",
            "reason",
            "actor",
            "metrics",
            "params",
            "created_at",
        )
    }


def create_app(sup: Supervisor, probes: Probes, settings: SupervisorSettings) -> FastAPI:
    app = FastAPI(title="pooch supervisor", version="1")
    add_health_routes(app, probes)
    token = settings.operator_token.get_secret_value() if settings.operator_token else None

    def authorise(request: Request, action: str) -> JSONResponse | None:
        header = request.headers.get("authorization") or ""
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            m.OPERATOR_REQUESTS.labels(action, "unauthorized").inc()
            return JSONResponse(
                {
                    "error": "unauthorized",
                    "detail": "changing a model needs Authorization: Bearer <operator token>",
                },
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="pooch-supervisor"'},
            )
        if token is None or not hmac.compare_digest(given.strip().encode(), token.encode()):
            m.OPERATOR_REQUESTS.labels(action, "forbidden").inc()
            detail = (
                "no operator token is configured (POOCH_SUPERVISOR_OPERATOR_TOKEN): changes are disabled"
                if token is None
                else "wrong operator token"
            )
            return JSONResponse({"error": "forbidden", "detail": detail}, status_code=403)
        return None

    @app.get("/v1/models")
    def models() -> JSONResponse:
        with sup.lock:
            body = sup.sup.health()
        body["ready"] = sup.rebuilt.is_set()
        return JSONResponse(body)

    @app.get("/v1/experiments")
    def experiments() -> JSONResponse:
        with sup.lock:
            body = sup.sup.experiments.report()
        body["ready"] = sup.rebuilt.is_set()
        return JSONResponse(_finite(body))

    @app.get("/v1/windows")
    def windows() -> JSONResponse:
        """Diagnostics: the raw window tallies and experiment sums (equal across restarts)."""
        with sup.lock:
            body = sup.sup.state()
        return JSONResponse(_finite(body))

    @app.get("/v1/policies")
    def policies() -> JSONResponse:
        return JSONResponse(sup.policies.describe())

    @app.post("/v1/models/{version}/{action}")
    async def operate(version: str, action: str, request: Request) -> JSONResponse:
        if action not in ACTIONS:
            return JSONResponse(
                {"error": "not_found", "detail": f"no action {action!r}; one of {ACTIONS}"}, 404
            )
        refused = authorise(request, action)
        if refused is not None:
            return refused
        try:
            body = parse_json_body(await request.body(), empty={})
            if not isinstance(body, dict):
                raise BadJsonBody("the body must be a JSON object")
        except BadJsonBody as exc:
            m.OPERATOR_REQUESTS.labels(action, "invalid").inc()
            return JSONResponse({"error": "invalid", "detail": f"bad JSON body: {exc}"}, 400)
        if not sup.rebuilt.is_set():
            m.OPERATOR_REQUESTS.labels(action, "not_ready").inc()
            return JSONResponse(
                {"error": "not_ready", "detail": "still reading the topics"},
                503,
                headers={"Retry-After": "2"},
            )
        name = str(body.get("actor") or "").strip()
        actor = f"operator:{name}" if name else "operator"
        try:
            # Blocking Kafka work: run it off the event loop.
            from starlette.concurrency import run_in_threadpool

            events = await run_in_threadpool(sup.operate, action, version, actor=actor, body=body)
        except dec.DecisionError as exc:
            m.OPERATOR_REQUESTS.labels(action, exc.code).inc()
            return JSONResponse({"error": exc.code, "detail": str(exc)}, exc.status)
        except Exception as exc:
            m.OPERATOR_REQUESTS.labels(action, "unavailable").inc()
            log.exception("operator decision not written")
            return JSONResponse({"error": "unavailable", "detail": f"not written to models: {exc}"}, 503)
        m.OPERATOR_REQUESTS.labels(action, "ok").inc()
        with sup.lock:
            v = sup.sup.catalog.versions[version]
            status = {"model_version": version, "status": v.status, "roles": sup.sup.catalog.roles(version)}
        return JSONResponse({"written": [_event_view(e) for e in events], "now": status})

    return app


def _finite(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return str(obj)
    return obj
