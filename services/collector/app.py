"""``python -m services.collector``: the stream and the HTTP API in one process.

The stream runs on its own thread (:class:`services.collector.stream.StreamRunner`), the HTTP
API (FastAPI, port 8001, with ``/healthz``, ``/readyz``, ``/metrics``) on the shared
:class:`libs.common.http_server.HttpServer` thread; the main thread waits for SIGTERM, then
stops the API from taking new requests, lets the stream finish and commit its batch, and
closes the consumer (leaving the group at once) and the producers.
"""

from __future__ import annotations

import logging
import sys

from libs.common.http_server import HttpServer, ServerStartError, serve_probes
from libs.common.metrics import READY
from libs.common.process import start_process
from libs.common.settings import CommonSettings
from services.collector.gateway import KafkaGateway
from services.collector.http_api import create_app
from services.collector.settings import CollectorSettings
from services.collector.stream import StreamRunner

log = logging.getLogger("services.collector")


def run(common: CommonSettings | None = None, settings: CollectorSettings | None = None) -> int:
    common = common or CommonSettings()
    settings = settings or CollectorSettings()
    shutdown, probes = start_process("collector", common)
    # The HTTP thread must get the GIL back quickly while the stream thread decodes a batch.
    sys.setswitchinterval(0.001)
    ready_gauge = READY.labels("collector")

    runner = StreamRunner(common, settings, shutdown) if settings.stream_enabled else None
    gateway = KafkaGateway(common, settings).start() if settings.http_enabled else None
    if runner is not None:
        probes.live("stream", runner.live)
        probes.ready("stream", runner.ready)
        runner.start()

    def ready() -> bool:
        ok = runner is None or runner.ready()
        ready_gauge.set(1 if ok else 0)
        return ok

    probes.ready("collector", ready)
    log.info(
        "collector starting",
        extra={
            "instance_id": settings.instance_id,
            "port": settings.port,
            "stream": settings.stream_enabled,
            "http": settings.http_enabled,
            "auth": bool(settings.api_keys),
        },
    )
    try:
        try:
            if settings.http_enabled:
                app = create_app(common, settings, probes, gateway)
                # The collector reads bodies itself: an oversized one is dead-lettered with its
                # request id, so only the shared deadlines and in-flight limit apply here.
                server = HttpServer(app, host=settings.host, port=settings.port, body_limit=False).start()
            else:
                server = serve_probes(probes, host=settings.host, port=settings.port)
        except ServerStartError as exc:
            log.error("HTTP server could not start", extra={"port": settings.port, "error": str(exc)})
            shutdown.set("http server failed")
            return 1
        while not shutdown.wait(1.0):
            if not server.alive():
                log.error("HTTP server stopped unexpectedly")
                break
        server.stop()
    finally:
        shutdown.set("http server stopped")
        if runner is not None:
            runner.join(60)
        if gateway is not None:
            gateway.close()
        log.info("collector stopped", extra={"reason": shutdown.reason})
    return 0
