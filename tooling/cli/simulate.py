"""``pooch simulate``: run the simulated Sniffable app against Kafka or the collector's HTTP API.

Prints what was sent (a table, optionally a JSON report with every good event_id and every
bad record's expected rejection reason). Ctrl-C or SIGTERM stops it cleanly: what was sent is
flushed and reported.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import threading
from pathlib import Path

import typer

from libs.common.kafka.errors import DeliveryError, KafkaUnavailableError
from libs.common.logs import configure_logging
from libs.common.settings import CommonSettings
from sniffable import (
    HTTP_KINDS,
    HttpSink,
    KafkaSink,
    NullSink,
    SimConfig,
    Simulation,
    SinkUnavailableError,
    run,
)
from tooling.cli.output import console, err_console, fail

SINKS = ("kafka", "http", "null")


def simulate(
    events: int | None = typer.Option(
        None, "--events", "-n", min=0, help="Send exactly this many records, then stop."
    ),
    duration: float | None = typer.Option(
        None, "--duration", "-d", min=0, help="Stop after this many wall seconds."
    ),
    rate: float = typer.Option(
        0.0,
        "--rate",
        "-r",
        min=0,
        help="Average records per wall second (pacing on the virtual clock); 0: as fast as possible.",
    ),
    time_scale: float = typer.Option(
        1.0,
        "--time-scale",
        "-s",
        min=0.001,
        help="Simulated seconds per wall second when pacing (3600: a day in 24 s).",
    ),
    horizon: float = typer.Option(
        86_400.0,
        "--horizon",
        min=0.001,
        help="Label horizon in simulated seconds; like delays are built around it.",
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Same seed and options, same records byte for byte. Default: random."
    ),
    start_ms: int | None = typer.Option(
        None, "--start-ms", help="Virtual clock start (epoch ms). Default: now, so events look live."
    ),
    bad_share: float = typer.Option(
        0.02, "--bad-share", min=0.0, max=0.99, help="Share of records that are bad input."
    ),
    bad_kinds: str | None = typer.Option(
        None,
        "--bad-kinds",
        help=f"Comma-separated bad kinds to inject (default: all the sink allows): {', '.join(HTTP_KINDS)}.",
    ),
    sink: str = typer.Option("kafka", "--sink", help=f"Where records go: {', '.join(SINKS)}."),
    url: str = typer.Option("http://127.0.0.1:8001", "--url", help="Collector base URL (--sink http)."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="POOCH_API_KEY", help="Sent as X-API-Key (--sink http)."
    ),
    http_batch: int = typer.Option(
        1, "--http-batch", min=1, help="Good events per HTTP request (a JSON list when > 1)."
    ),
    dogs: int = typer.Option(2_000, "--dogs", min=1, help="Dogs in the simulated world."),
    sniffers: int = typer.Option(50_000, "--sniffers", min=1, help="Sniffers who like pupdates."),
    pupdates_per_hour: float | None = typer.Option(
        None,
        "--pupdates-per-hour",
        min=0.0,
        help="Posting density in simulated time (default: from --rate, or 1.5 a day per dog).",
    ),
    late_share: float = typer.Option(
        0.03, "--late-share", min=0.0, max=0.99, help="Share of likes arriving after the horizon."
    ),
    jitter_share: float = typer.Option(
        0.05, "--jitter-share", min=0.0, max=1.0, help="Share of likes sent out of event-time order."
    ),
    drain: bool | None = typer.Option(
        None,
        "--drain/--no-drain",
        help="With --events: stop posting early so the last pupdates get their likes "
        "(default: drain unless paced by --rate).",
    ),
    topic_prefix: str | None = typer.Option(
        None, "--topic-prefix", help="Topic prefix (default: POOCH_TOPIC_PREFIX)."
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Write the JSON report here, and every record to <report>.events.jsonl."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not print the summary table."),
) -> None:
    """Simulate the Sniffable app: pupdates and likes from many app versions, with bad input."""
    if sink not in SINKS:
        fail(f"unknown sink {sink!r}", hint=f"choose one of {', '.join(SINKS)}")
    kinds = tuple(k.strip() for k in bad_kinds.split(",") if k.strip()) if bad_kinds else None
    try:
        config = SimConfig(
            seed=seed if seed is not None else secrets.randbits(32),
            start_ms=start_ms,
            time_scale=time_scale,
            horizon_s=horizon,
            rate=rate,
            duration_s=duration,
            max_events=events,
            bad_share=bad_share,
            bad_kinds=kinds,
            transport="http" if sink == "http" else "kafka",
            n_dogs=dogs,
            n_sniffers=sniffers,
            pupdates_per_hour=pupdates_per_hour,
            late_share=late_share,
            jitter_share=jitter_share,
        )
    except ValueError as exc:
        fail(str(exc))
    settings = CommonSettings()
    if topic_prefix is not None:
        settings = settings.model_copy(update={"topic_prefix": topic_prefix})
    configure_logging("simulate", settings.log_level, "console")

    stop = threading.Event()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if main_thread else None
    try:
        target = _sink(sink, settings, url=url, api_key=api_key, batch=http_batch)
        try:
            err_console.print(
                f"[dim]•[/dim] simulating with seed {config.seed} into {sink}"
                + (f" ({settings.topic_prefix or 'no'} topic prefix)" if sink == "kafka" else "")
                + (f" at {url}" if sink == "http" else ""),
                highlight=False,
            )
            result = run(
                config,
                target,
                simulation=Simulation(config),
                report_path=report,
                progress=progress,
                console=err_console,
                stop=stop,
            )
        finally:
            with contextlib.suppress(Exception):
                target.close()
    except (KafkaUnavailableError, DeliveryError) as exc:
        fail(str(exc), hint="is Kafka up and are the topics there? `pooch topics --create`")
    except SinkUnavailableError as exc:
        fail(str(exc), hint=f"is the collector up at {url}?")
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if not quiet:
        console.print(result.table())
    if report is not None:
        err_console.print(f"[dim]•[/dim] report written to {report}", highlight=False)
    unexpected = result.sink.get("unexpected", 0)
    if unexpected:
        err_console.print(
            f"[yellow]![/yellow] {unexpected} HTTP answers disagreed with the "
            "records' kinds (see the report's sink.unexpected_sample)"
        )


def _sink(kind: str, settings: CommonSettings, *, url: str, api_key: str | None, batch: int):
    if kind == "kafka":
        return KafkaSink(settings)
    if kind == "http":
        return HttpSink(url, api_key=api_key, batch=batch)
    return NullSink()
