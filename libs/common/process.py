"""The wiring every service process shares, apart from its loop: structured logs, SIGTERM and
SIGINT turned into a :class:`Shutdown` the loop checks, and the named probes its HTTP server
serves. ``main()`` of each service is this, its own parts, and its loop."""

from __future__ import annotations

from libs.common.health import Probes
from libs.common.lifecycle import Shutdown
from libs.common.logs import configure_logging
from libs.common.settings import CommonSettings


def start_process(service: str, settings: CommonSettings) -> tuple[Shutdown, Probes]:
    configure_logging(service, settings.log_level, settings.log_format)
    shutdown = Shutdown().install_signal_handlers()
    return shutdown, Probes(service)
