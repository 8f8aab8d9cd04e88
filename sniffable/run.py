"""The real-time runner: paces the pure event stream onto the wall clock and into a sink.

This is the only place that sleeps. With ``rate`` > 0 each event is sent when the wall clock
reaches its virtual send time (``time_scale`` simulated seconds per wall second); a slow sink
makes it fall behind (reported as ``max_lag_s``) but never skip or reorder. With ``rate`` 0 it
sends as fast as the sink takes them. Ctrl-C or ``stop`` ends the run cleanly: whatever was
handed to the sink is flushed and reported.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .clock import VirtualClock
from .config import SimConfig
from .report import DEFAULT_ID_CAP, ReportBuilder, SimulationReport
from .simulation import Simulation
from .sinks import Sink

log = logging.getLogger(__name__)

_CHECK_EVERY = 64
_TICK_S = 0.25


def events_log_path(report_path: str | Path) -> Path:
    """Where the per-record JSON-lines log of a report lives: beside it."""
    p = Path(report_path)
    return p.with_name(p.stem + ".events.jsonl")


class _Progress:
    """A rich progress bar on a terminal, a log line every few seconds otherwise."""

    def __init__(
        self,
        config: SimConfig,
        enabled: bool,
        console: Console | None,
        monotonic: Callable[[], float],
        log_every_s: float,
    ) -> None:
        self.enabled = enabled
        self._monotonic = monotonic
        self._every = log_every_s
        self._last_log = monotonic()
        self._last_n = 0
        self._bar: Progress | None = None
        console = console or Console(stderr=True)
        if enabled and console.is_terminal:
            total: float | None = config.max_events
            self._bar = Progress(
                TextColumn("[bold]simulating"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>9} ev/s"),
                TextColumn("virtual {task.fields[vt]}"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            self._task = self._bar.add_task("sim", total=total, rate="-", vt="-")

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, n: int, elapsed: float, virtual_ms: int, start_ms: int) -> None:
        if not self.enabled:
            return
        now = self._monotonic()
        rate = n / elapsed if elapsed > 0 else 0.0
        vt = f"+{(virtual_ms - start_ms) / 3_600_000:,.2f} h"
        if self._bar is not None:
            self._bar.update(self._task, completed=n, rate=f"{rate:,.0f}", vt=vt)
        elif now - self._last_log >= self._every:
            recent = (n - self._last_n) / (now - self._last_log)
            log.info("simulated %d events (%.0f/s now, %.0f/s overall), virtual %s", n, recent, rate, vt)
            self._last_log = now
            self._last_n = n


def run(
    config: SimConfig,
    sink: Sink,
    *,
    simulation: Simulation | None = None,
    report_path: str | Path | None = None,
    id_cap: int = DEFAULT_ID_CAP,
    progress: bool = False,
    console: Console | None = None,
    stop: threading.Event | None = None,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    log_every_s: float = 5.0,
) -> SimulationReport:
    """Send the simulation's events to ``sink`` and report exactly what was sent.

    ``report_path``: also write the report there as JSON, and every record, as it is sent, to
    :func:`events_log_path` beside it. The sink is flushed, not closed: the caller owns it.
    """
    sim = simulation or Simulation(config)
    clock = VirtualClock(sim.start_ms, config.time_scale)
    resolved = config.to_dict() | {"start_ms": sim.start_ms}
    report = SimulationReport(seed=config.seed, config=resolved, start_ms=sim.start_ms)
    paced = config.rate > 0
    duration = config.duration_s
    stop = stop or threading.Event()
    stopped_by = "events" if config.max_events is not None else "exhausted"
    max_lag = 0.0
    n = 0
    with ExitStack() as stack:
        log_file = None
        if report_path is not None:
            path = events_log_path(report_path)
            log_file = stack.enter_context(path.open("w", encoding="utf-8"))
            report.events_log = str(path)
        builder = ReportBuilder(report, id_cap=id_cap, events_log=log_file)
        bar = stack.enter_context(_Progress(config, progress, console, monotonic, log_every_s))
        t0 = monotonic()
        elapsed = 0.0
        try:
            for ev in sim.events():
                if n % _CHECK_EVERY == 0 or paced:
                    elapsed = monotonic() - t0
                    if stop.is_set():
                        stopped_by = "stopped"
                        break
                    if duration is not None and elapsed >= duration:
                        stopped_by = "duration"
                        break
                    if n % _CHECK_EVERY == 0:
                        bar.update(n, elapsed, ev.send_ms, sim.start_ms)
                if paced:
                    due = clock.wall_offset_s(ev.send_ms)
                    if duration is not None and due >= duration:
                        stopped_by = "duration"
                        break
                    if due > elapsed:
                        if not _sleep_until(t0 + due, stop, sleep, monotonic):
                            stopped_by = "stopped"
                            break
                    else:
                        max_lag = max(max_lag, elapsed - due)
                sink.send(ev)
                builder.add(ev)
                n += 1
        except KeyboardInterrupt:
            stopped_by = "interrupted"
        finally:
            sink.flush()
        wall = monotonic() - t0
        bar.update(n, wall, report.last_send_ms or sim.start_ms, sim.start_ms)
    report = builder.finish(wall_seconds=wall, stopped_by=stopped_by, sink=sink.stats())
    report.sink["max_lag_s"] = round(max_lag, 3)
    if report_path is not None:
        report.write(report_path)
    return report


def _sleep_until(
    deadline: float, stop: threading.Event, sleep: Callable[[float], None], monotonic: Callable[[], float]
) -> bool:
    """Sleep until ``deadline`` in short ticks; False when stopped meanwhile."""
    while True:
        left = deadline - monotonic()
        if left <= 0:
            return True
        if stop.is_set():
            return False
        sleep(min(left, _TICK_S))
