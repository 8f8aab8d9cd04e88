"""``pooch demo``: the main job. Every service under supervision, a warm start, the live
"possible worlds" experiment with the closed loop of the simulated Sniffable, a rogue version
the supervisor must pause, optionally a SIGKILLed service, and a report folder.

The work is in :mod:`tooling.demo`; this module is the command line. Exit code 1 when the run is
broken (no model, no predictions, the rogue not paused, too many fallbacks, a failed invariant),
so CI can run a short demo as a smoke test. The report folder's path is printed last.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from tooling.cli.output import console, expected_errors, progress
from tooling.demo.plan import DemoPlan
from tooling.demo.plots import table_rows
from tooling.demo.run import run_demo


@expected_errors
def demo(
    seconds: float = typer.Option(180.0, "--seconds", min=10, help="Wall seconds of the live experiment."),
    rate: float = typer.Option(1200.0, "--rate", min=10, help="Average records per wall second, live."),
    history: int = typer.Option(
        5000, "--history", min=300, help="Pupdates of simulated history (warm start)."
    ),
    drafts: int = typer.Option(6, "--drafts", min=1, max=32, help="Candidate drafts per post."),
    horizon: float = typer.Option(
        20.0, "--horizon", min=2, help="Label horizon in seconds (24 h in production)."
    ),
    seed: int = typer.Option(7, "--seed", help="Simulation seed."),
    dogs: int = typer.Option(4000, "--dogs", min=50, help="Dogs in the simulated world."),
    bad_share: float = typer.Option(0.02, "--bad-share", min=0, max=0.9, help="Share of bad input."),
    chaos: bool = typer.Option(
        False, "--chaos", help="Also SIGKILL a service mid-run (supervisord restarts it)."
    ),
    no_chaos: bool = typer.Option(False, "--no-chaos", help="Break nothing on purpose: no rogue version."),
    kill: str = typer.Option("scorer", "--kill", help="The service --chaos kills."),
    drain: float = typer.Option(45.0, "--drain", min=0, help="Seconds to wait for the last labels."),
    out: Path | None = typer.Option(
        None, "--out", help="Parent folder of the report (default ./demo-reports)."
    ),
    free_ports: bool = typer.Option(
        False, "--free-ports", help="Serve on free ports instead of 8001-8005 (beside another stack)."
    ),
    keep: bool = typer.Option(False, "--keep", help="Leave the services running afterwards."),
) -> None:
    """Run the whole system on a simulated Sniffable and report what its predictions are worth."""
    if chaos and no_chaos:
        raise typer.BadParameter("--chaos and --no-chaos contradict each other")
    plan = DemoPlan(
        seed=seed,
        horizon_s=horizon,
        history_pupdates=history,
        live_seconds=seconds,
        rate=rate,
        drafts=drafts,
        bad_share=bad_share,
        n_dogs=dogs,
        rogue=not no_chaos,
        chaos=chaos,
        chaos_service=kill,
        drain_s=drain,
        free_ports=free_ports,
    )
    result = run_demo(plan, out=out, console=console, say=progress, keep=keep)
    header, rows = table_rows(result.report)
    table = Table(title="possible worlds")
    for col in header:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for check in result.report["invariants"]:
        mark = "[green]PASS[/green]" if check["ok"] else "[red]FAIL[/red]"
        console.print(f"{mark} {check['name']}: {check['detail']}", highlight=False)
    console.print(f"topics of this run: POOCH_TOPIC_PREFIX={result.prefix} pooch topics", highlight=False)
    console.print(f"report: {result.folder / 'report.md'}", highlight=False, soft_wrap=True)
    if result.failures:
        raise typer.Exit(1)
