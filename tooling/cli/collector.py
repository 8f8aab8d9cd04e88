"""``pooch collector``: run the collector (raw topics to facts, and its HTTP API) in the foreground.

Registered in ``tooling/cli/main.py`` as ``app.command("collector")(collector)``. Options override
the ``POOCH_COLLECTOR_*`` environment; everything else is configured there (see
``services/collector/settings.py`` and ``docs/collector.md``).
"""

from __future__ import annotations

import os

import typer


def collector(
    port: int | None = typer.Option(None, "--port", help="HTTP port (default 8001, POOCH_COLLECTOR_PORT)."),
    instance_id: str | None = typer.Option(
        None,
        "--instance-id",
        help="Stable instance id; transactional.id is collector-<id> (default: hostname).",
    ),
    http: bool = typer.Option(
        True, "--http/--no-http", help="Serve the HTTP API (probes are served anyway)."
    ),
    stream: bool = typer.Option(True, "--stream/--no-stream", help="Run the raw-topics stream."),
) -> None:
    """Run the collector: raw pupdates and likes in, immutable facts and dead letters out."""
    overrides = {
        "POOCH_COLLECTOR_PORT": None if port is None else str(port),
        "POOCH_COLLECTOR_INSTANCE_ID": instance_id,
        "POOCH_COLLECTOR_HTTP_ENABLED": None if http else "false",
        "POOCH_COLLECTOR_STREAM_ENABLED": None if stream else "false",
    }
    if not http and not stream:
        raise typer.BadParameter("--no-http and --no-stream leave nothing to run")
    os.environ.update({k: v for k, v in overrides.items() if v is not None})
    from services.collector.app import run  # imported late: `pooch --help` stays fast

    raise typer.Exit(run())
