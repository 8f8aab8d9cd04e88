"""``python -m services.collector``: the stream and the HTTP API in one process.

The stream runs on its own thread (:class:`services.collector.stream.StreamRunner`), the HTTP
API (FastAPI on uvicorn, port 8001, with ``/healthz``, ``/readyz``, ``/metrics``) on the main
thread. SIGTERM stops the API from taking new requests, lets the stream finish and commit its
batch, then closes the consumer (leaving the group at once) and the producers.
"""

from __future__ import annotations

import logging
import sys
import threading

import uvicorn

from libs.common.health import HealthServer, Probes
from libs.common.lifecycle import Shutdown
from libs.common.logs import configure_logging
from libs.common.metrics import READY
from libs.common.settings import CommonSettings
from services.collector.gateway import KafkaGateway
from services.collector.http_api import create_app
from services.collector.settings import CollectorSettings
from services.collector.stream import StreamRunner

log = logging.getLogger("services.collector")


def run(common: CommonSettings | None = None, settings: CollectorSettings | None = None) -> int:
    common = common or CommonSettings()
    settings = settings or CollectorSettings()
    configure_logging("collector", common.log_level, common.log_format)
    # The HTTP thread must get the GIL back quickly while the stream thread decodes a batch.
    sys.setswitchinterval(0.001)
    shutdown = Shutdown().install_signal_handlers()
    probes = Probes("collector")
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
        if settings.http_enabled:
            app = create_app(common, settings, probes, gateway)
            config = uvicorn.Config(
                app,
                host=settings.host,
                port=settings.port,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=5,
            )
            server = uvicorn.Server(config)

            def stop_server_on_shutdown() -> None:
                shutdown.wait()
                server.should_exit = True

            threading.Thread(target=stop_server_on_shutdown, name="http-stopper", daemon=True).start()
            # uvicorn handles SIGTERM while serving and re-raises it afterwards: our handler
            # (installed above) then sets `shutdown` for the stream.
            server.run()
            if not server.started:
                log.error("HTTP server could not start", extra={"port": settings.port})
                shutdown.set("http server failed")
                return 1
        else:
            health = HealthServer(probes, settings.port, settings.host).start()
            shutdown.wait()
            health.stop()
    finally:
        shutdown.set("http server stopped")
        if runner is not None:
            runner.join(60)
        if gateway is not None:
            gateway.close()
        log.info("collector stopped", extra={"reason": shutdown.reason})
    return 0
