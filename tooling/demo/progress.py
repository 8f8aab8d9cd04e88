"""Live progress: a rich panel on a terminal, a plain line every few seconds otherwise (CI logs)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table


def _fmt_arms(arms: dict[str, dict]) -> str:
    parts = []
    for arm, a in arms.items():
        mean = a.get("likes_per_pupdate")
        parts.append(
            f"{arm} {a.get('pupdates', 0)}/{a.get('labelled', 0)}" + (f" {mean:.1f}" if mean else "")
        )
    return ", ".join(parts) or "-"


def line(s: dict[str, Any]) -> str:
    return (
        f"[{s['phase']}] {s['elapsed']:.0f}s, {s['left']:.0f}s left | {s['events']:,} events "
        f"({s['rate']:,.0f}/s) | posts {s['posts']:,}: advised {s['advised']}, first draft "
        f"{s['first_draft']} | champion {s['champion'] or '-'} challenger {s['challenger'] or '-'} | "
        f"decisions {s['decisions']} (paused: {', '.join(s['paused']) or 'none'}) | "
        f"arms (pupdates/labelled likes per pupdate): {_fmt_arms(s['arms'])}"
    )


def table(s: dict[str, Any]) -> Table:
    t = Table(title=f"pooch demo: {s['phase']}", title_justify="left", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("now")
    t.add_row("time", f"{s['elapsed']:.0f} s elapsed, {s['left']:.0f} s left in this phase")
    t.add_row("events", f"{s['events']:,} sent, {s['rate']:,.0f}/s")
    t.add_row(
        "owners",
        f"{s['posts']:,} posts: {s['advised']:,} advised ({s['by_arm']}), {s['first_draft']} first draft",
    )
    t.add_row(
        "models",
        f"champion {s['champion'] or '-'}, challenger {s['challenger'] or '-'}, {s['versions']} versions",
    )
    t.add_row("supervisor", f"{s['decisions']} decisions; paused: {', '.join(s['paused']) or 'none'}")
    t.add_row(
        "experiment", "supervisor, per arm pupdates/labelled likes per pupdate: " + _fmt_arms(s["arms"])
    )
    for note in s.get("notes", [])[-4:]:
        t.add_row("", note)
    return t


class LiveView:
    def __init__(self, console: Console, every_s: float = 5.0) -> None:
        self.console = console
        self.tty = console.is_terminal
        self.every_s = every_s
        self._last = 0.0
        self._live: Live | None = None

    def __enter__(self) -> LiveView:
        if self.tty:
            self._live = Live(console=self.console, refresh_per_second=2, transient=False)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def update(self, snapshot: dict[str, Any]) -> None:
        if self._live is not None:
            self._live.update(table(snapshot))
            return
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            print(line(snapshot), flush=True)
