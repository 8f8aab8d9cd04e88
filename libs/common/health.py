"""/healthz, /readyz and /metrics: named probes and the routes that serve them
(served by :mod:`libs.common.http_server`).

Liveness means the process loop is turning; readiness means its inputs are assigned and its
model or state is loaded. Both are named checks, so /readyz says which one is failing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

Check = Callable[[], bool]


class Probes:
    """Named liveness and readiness checks; each check returns True when fine."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.live_checks: dict[str, Check] = {}
        self.ready_checks: dict[str, Check] = {}

    def live(self, name: str, check: Check) -> None:
        self.live_checks[name] = check

    def ready(self, name: str, check: Check) -> None:
        self.ready_checks[name] = check

    @staticmethod
    def _evaluate(checks: dict[str, Check]) -> tuple[bool, dict[str, bool]]:
        results = {}
        for name, check in checks.items():
            try:
                results[name] = bool(check())
            except Exception:  # a failing check is "not ready", never a 500
                log.exception("probe check failed", extra={"check": name})
                results[name] = False
        return all(results.values()), results

    def healthz(self) -> tuple[int, dict]:
        ok, results = self._evaluate(self.live_checks)
        return (200 if ok else 503), {"service": self.service, "live": ok, "checks": results}

    def readyz(self) -> tuple[int, dict]:
        ok, results = self._evaluate(self.ready_checks)
        return (200 if ok else 503), {"service": self.service, "ready": ok, "checks": results}


def add_health_routes(app, probes: Probes, ready_detail: Callable[[], dict] | None = None) -> None:
    """``/healthz``, ``/readyz`` (with ``detail`` when given) and ``/metrics`` on a FastAPI app."""
    from fastapi import Response
    from fastapi.responses import JSONResponse

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        status, body = probes.healthz()
        return JSONResponse(body, status_code=status)

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        status, body = probes.readyz()
        if ready_detail is not None:
            body["detail"] = ready_detail()
        return JSONResponse(body, status_code=status)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
