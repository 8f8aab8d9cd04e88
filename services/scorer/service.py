"""The scorer process: the models feed, the stream and the what-if API, wired together.

Threads: ``models-feed`` (registry), the HTTP server (uvicorn, its own event loop) and the main
thread running the stream. ``POOCH_SCORER_ROLE`` runs the stream or the API alone (the API's
latency then never shares the interpreter with the stream's batches).

Probes: live while the feed thread runs and no shutdown was asked; ready once the registry has
a first snapshot (a model, or the knowledge that only the baseline can serve) and, with the
stream, the consumer group has assigned this process its partitions.
"""

from __future__ import annotations

import gc
import logging
import sys
import time

from libs.common.http_limits import ApiKeys
from libs.common.http_server import HttpServer, serve_probes
from libs.common.process import start_process
from libs.common.retry import Restarting
from services.scorer.registry import ModelsFeed, Registry
from services.scorer.routing import Router
from services.scorer.settings import ScorerSettings
from services.scorer.stream import SERVICE, StreamScorer

log = logging.getLogger(__name__)


def main(settings: ScorerSettings | None = None) -> None:
    started = time.monotonic()
    settings = settings or ScorerSettings()
    shutdown, probes = start_process(SERVICE, settings)
    # The stream holds the GIL for whole batches; a short switch interval lets the API thread in.
    sys.setswitchinterval(0.001)
    registry = Registry(settings)
    feed = ModelsFeed(settings, registry)
    feed.start()
    router = Router(settings.routing_salt)
    with_stream = settings.role in ("all", "stream")
    with_api = settings.role in ("all", "whatif")
    # The stream under the shared restart loop: a failed incarnation (Kafka away longer than a
    # transaction's deadline) is replaced by one that resumes from the committed offsets, while
    # the registry, the models feed and the what-if API keep serving.
    stream = (
        Restarting(SERVICE, "stream", lambda: StreamScorer(settings, registry, router), shutdown)
        if with_stream
        else None
    )

    probes.live("loop", lambda: not shutdown.is_set())
    probes.live("models_feed", lambda: feed.is_alive() and feed.error is None)
    probes.ready("models_loaded", registry.ready_event.is_set)
    if stream is not None:
        probes.ready(
            "partitions_assigned",
            lambda: stream.current is not None and stream.current.assigned_once.is_set(),
        )

    server: HttpServer
    if with_api:
        from services.scorer.http_api import create_app
        from services.scorer.whatif import WhatIf

        app = create_app(WhatIf(settings, registry, router), registry, probes)
        server = HttpServer(
            app,
            host=settings.host,
            port=settings.port,
            lifespan="on",
            keys=ApiKeys(settings.api_keys),
            keyed=[("POST", "/v1/predict")],
        ).start()
    else:
        server = serve_probes(probes, host=settings.host, port=settings.port)
    # Everything loaded so far lives as long as the process: keep it out of the collector's
    # generations, so a full collection (a pause of milliseconds) stays rare and short.
    gc.collect()
    gc.freeze()
    log.info(
        "scorer started",
        extra={
            "role": settings.role,
            "instance_id": settings.instance_id,
            "transactional_id": settings.transactional_id,
            "port": settings.port,
        },
    )
    try:
        until = time.monotonic() + settings.registry_sync_timeout_s
        while not registry.synced_event.wait(0.2) and not shutdown.is_set() and time.monotonic() < until:
            pass
        if not registry.synced_event.is_set() and not shutdown.is_set():
            log.warning(
                "models topic not read to its end in time; serving what the registry has "
                "(the historical baseline when nothing)",
                extra={"snapshot": registry.snapshot.describe()},
            )
        registry.ready_event.set()  # a model, or the fallback, is what serves from now on
        if stream is not None and not shutdown.is_set():
            stream.run()
        else:
            while not shutdown.wait(1.0):
                if feed.error is not None:
                    break
    except Exception:
        log.exception("scorer failed; exiting for a restart")
        raise
    finally:
        feed.stop()
        if registry.compiler is not None:
            registry.compiler.stop()
        server.stop()
        feed.join(5)
        log.info(
            "scorer stopped",
            extra={"reason": shutdown.reason, "uptime_s": round(time.monotonic() - started, 1)},
        )
