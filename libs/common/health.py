"""/healthz, /readyz and /metrics: a tiny server for services with no API of their own, and
the same routes for FastAPI services.

Liveness means the process loop is turning; readiness means its inputs are assigned and its
model or state is loaded. Both are named checks, so /readyz says which one is failing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


class _Handler(BaseHTTPRequestHandler):
    probes: Probes

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
        elif self.path == "/healthz":
            self._json(*self.probes.healthz())
        elif self.path == "/readyz":
            self._json(*self.probes.readyz())
        else:
            self._json(404, {"error": f"no route {self.path}"})

    def _json(self, status: int, body: dict) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:  # probes every few seconds would flood the log
        pass


class HealthServer:
    """Serves the probes on a daemon thread; ``port=0`` picks a free port (tests)."""

    def __init__(self, probes: Probes, port: int, host: str = "0.0.0.0") -> None:
        handler = type("Handler", (_Handler,), {"probes": probes})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def add_health_routes(app, probes: Probes) -> None:
    """The same three routes on a FastAPI app."""
    from fastapi import Response
    from fastapi.responses import JSONResponse

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        status, body = probes.healthz()
        return JSONResponse(body, status_code=status)

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        status, body = probes.readyz()
        return JSONResponse(body, status_code=status)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
