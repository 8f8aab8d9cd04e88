"""Trainer HTTP API (port 8003).

* ``POST /v1/train`` (body optional: ``{"extractor_version": "v1"}``): ask for a training run
  now. 202 when queued on the leader; 409 on a standby (the leader trains; ask it, or any
  replica after a failover); 503 while the window is still being rebuilt; 404 for an
  extractor_version the trainer has no instances of. The outcome shows in ``GET /v1/status``.
* ``GET /v1/status``: role, windows, the run in progress, the last run per extractor_version.
* ``GET /healthz``, ``GET /readyz`` (with a ``detail`` of role, windows and failed runs),
  ``GET /metrics``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from libs.common.health import Probes, add_health_routes
from libs.common.json_body import BadJsonBody, parse_json_body

if TYPE_CHECKING:
    from services.trainer.service import Trainer


def create_app(trainer: Trainer, probes: Probes) -> FastAPI:
    app = FastAPI(title="pooch trainer", version="1")

    def ready_detail() -> dict[str, Any]:
        doc = trainer.status_doc
        return {
            "role": doc.get("role"),
            "rebuilt": doc.get("rebuilt"),
            "windows": {v: w["size"] for v, w in doc.get("windows", {}).items()},
            "failed_runs": {
                v: {"error": r["error"], "started_at": r["started_at"]}
                for v, r in doc.get("failed_runs", {}).items()
            },
        }

    add_health_routes(app, probes, ready_detail)

    @app.get("/v1/status")
    def status() -> dict[str, Any]:
        return trainer.status_doc

    @app.post("/v1/train", status_code=202)
    async def train_now(request: Request) -> JSONResponse:
        # The body is read here, not by FastAPI: its validation error echoes the input, which
        # fails to render when that holds NaN or a lone surrogate (a 500).
        try:
            body = parse_json_body(await request.body(), empty={})
        except BadJsonBody as exc:
            return JSONResponse({"error": "invalid", "detail": str(exc)}, status_code=400)
        version = body.get("extractor_version") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(version, str | None):
            detail = 'the body must be {"extractor_version": "<version>"} or empty'
            return JSONResponse({"error": "invalid", "detail": detail}, status_code=422)
        if not trainer.rebuilt:
            return JSONResponse(
                {"error": "not_ready", "detail": "the training window is still being rebuilt from instances"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        if not trainer.election.is_leader:
            return JSONResponse(
                {
                    "error": "standby",
                    "detail": f"replica {trainer.s.replica_id} stands by; the leader trains. "
                    "Send the request to the leader (GET /v1/status shows each replica's role).",
                },
                status_code=409,
            )
        known = trainer.status_doc.get("windows", {})
        if not known:
            return JSONResponse({"error": "no_instances", "detail": "no instances read yet"}, status_code=409)
        if version is not None and version not in known:
            return JSONResponse(
                {
                    "error": "unknown_extractor_version",
                    "detail": f"no instances of {version!r}; have {sorted(known)}",
                },
                status_code=404,
            )
        versions = [version] if version else sorted(known)
        trainer.request_training([version] if version else None)
        return JSONResponse({"accepted": True, "extractor_versions": versions}, status_code=202)

    return app
