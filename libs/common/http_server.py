"""The one way a service serves HTTP: uvicorn on a daemon thread.

Every service runs its loop on the main thread, which owns the signal handlers
(:class:`libs.common.lifecycle.Shutdown`); uvicorn installs none off the main thread, so SIGTERM
always reaches the loop and its offsets are committed before the process ends. Services with an
API of their own serve it with the probe routes added (:func:`libs.common.health.add_health_routes`);
the others serve the probes alone (:func:`serve_probes`). Every server is guarded the same way
(:mod:`libs.common.http_limits`): body and head limits, read deadlines, in-flight limit, keys.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Literal

import uvicorn

from libs.common.health import Probes, add_health_routes
from libs.common.http_limits import ApiKeys, Guard, HttpLimits, deadline_protocol

log = logging.getLogger(__name__)


class ServerStartError(RuntimeError):
    """The HTTP server could not start (the port is taken, say)."""


class HttpServer:
    def __init__(
        self,
        app: Any,
        *,
        host: str,
        port: int,
        lifespan: Literal["auto", "on", "off"] = "off",
        graceful_shutdown_s: float = 5.0,
        name: str = "http",
        limits: HttpLimits | None = None,
        keys: ApiKeys | None = None,
        keyed: list[tuple[str, str]] | None = None,
        body_limit: bool = True,
    ) -> None:
        """``limits`` default to ``POOCH_HTTP_*``; ``keyed`` (method, path) routes need one of
        ``keys`` when any is configured; ``body_limit=False`` for an app that enforces its own."""
        self.host = host
        limits = limits or HttpLimits()
        guarded = Guard(app, limits, keys=keys, keyed=keyed or [], body_limit=body_limit)
        config = uvicorn.Config(
            guarded,
            host=host,
            port=port,
            log_config=None,  # our structured logging, not uvicorn's own
            access_log=False,
            lifespan=lifespan,
            timeout_graceful_shutdown=int(graceful_shutdown_s),
            workers=1,
            loop="uvloop",  # libuv's loop: less overhead per request than asyncio's (docs/scorer.md)
            http=deadline_protocol(limits),
            timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type]  # a float works
            limit_concurrency=limits.max_connections,
            # No X-Forwarded-* rewriting: nothing here acts on the client's address, and the
            # middleware was a step of every request.
            proxy_headers=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=name, daemon=True)

    def start(self, wait_s: float = 15.0) -> HttpServer:
        """Start serving; returns once listening, raises :class:`ServerStartError` if it cannot."""
        self.thread.start()
        deadline = time.monotonic() + wait_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ServerStartError(
                    f"HTTP server could not start on {self.host}:{self.server.config.port}"
                )
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one picked for port 0)."""
        for server in self.server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self.server.config.port)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def serve_probes(probes: Probes, *, host: str, port: int) -> HttpServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` alone, for services without an API."""
    from fastapi import FastAPI

    app = FastAPI(title=f"pooch {probes.service}", docs_url=None, redoc_url=None, openapi_url=None)
    add_health_routes(app, probes)
    return HttpServer(app, host=host, port=port, name=f"{probes.service}-probes").start()
