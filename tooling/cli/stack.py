"""``pooch stack up|down|status|prereqs``: the local Kafka and Redis."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from libs.common.admin import TopicState
from tooling.cli.output import console, err_console, expected_errors, progress
from tooling.stack.manager import COMPONENTS, LocalStack, StackStatus

stack_app = typer.Typer(
    help="Run the local stack: real Kafka (KRaft) and Redis as local processes.",
    no_args_is_help=True,
)

STATE_STYLE = {"up": "green", "down": "red", "unresponsive": "yellow", "port taken": "red"}


@stack_app.command()
@expected_errors
def up(
    fresh: bool = typer.Option(False, "--fresh", help="Stop everything and wipe Kafka and Redis data first."),
    partitions: int | None = typer.Option(
        None, "--partitions", min=1, help="Partitions for every multi-partition topic created now."
    ),
    only: list[str] = typer.Option(
        [], "--only", help=f"Start only this component (repeatable): {', '.join(COMPONENTS)}."
    ),
    record: Path | None = typer.Option(
        None,
        "--record",
        help="Append the components this call started to FILE, one a line (for scripts that "
        "stop only what they started, like `make test`).",
    ),
) -> None:
    """Start Kafka and Redis (if not running), wait until they answer, create the topics."""
    _check_names(only)
    stack = LocalStack(report=progress)
    started: list[str] = []
    try:
        result = stack.up(fresh=fresh, partitions=partitions, components=only or COMPONENTS)
        started = result.started
    finally:
        if record is not None:
            with record.open("a") as f:
                f.writelines(f"{name}\n" for name in started)
    for name in result.started:
        console.print(f"[green]✓[/green] {name} started")
    for name in result.already_running:
        console.print(f"[green]✓[/green] {name} already running")
    if result.topics is not None:
        t = result.topics
        console.print(
            f"[green]✓[/green] topics: {len(t.created)} created, {len(t.existing)} already there"
            + (f", config updated on {len(t.reconfigured)}" if t.reconfigured else "")
        )
        for name, (want, have) in t.partition_mismatches.items():
            console.print(
                f"[yellow]![/yellow] {name} has {have} partitions, not {want} "
                "(kept; `pooch stack up --fresh` recreates everything)"
            )
    console.print(f"Kafka: [bold]{stack.kafka_bootstrap}[/bold]   Redis: [bold]{stack.redis_url}[/bold]")


@stack_app.command()
@expected_errors
def down(
    only: list[str] = typer.Option(
        [], "--only", help=f"Stop only this component (repeatable): {', '.join(COMPONENTS)}."
    ),
) -> None:
    """Stop the local stack (SIGTERM, then SIGKILL after a timeout). Data is kept."""
    _check_names(only)
    stack = LocalStack(report=progress)
    stopped = stack.down(only or COMPONENTS)
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack_app.command()
@expected_errors
def status(
    check: bool = typer.Option(
        False,
        "--check",
        help="No tables: print the components that are not up, one a line, and exit 1 if any.",
    ),
    only: list[str] = typer.Option(
        [], "--only", help=f"With --check, check only this component (repeatable): {', '.join(COMPONENTS)}."
    ),
) -> None:
    """Show processes and topics. Informational: exits 0 even when something is down."""
    _check_names(only)
    stack = LocalStack(report=progress)
    if check:
        wanted = set(only or COMPONENTS)
        down_names = [p.name for p in stack.status(topics=False).processes if not p.up and p.name in wanted]
        for name in down_names:
            print(name)
        raise typer.Exit(1 if down_names else 0)
    render_status(*_status_with_last_demo(stack))


def _status_with_last_demo(stack: LocalStack) -> tuple[StackStatus, str | None]:
    """Each demo writes its topics under its own prefix: without POOCH_TOPIC_PREFIX, show those of
    the last demo (and say so) instead of the unprefixed contract topics, which a demo never uses."""
    import os

    from tooling.demo.run import last_demo

    demo = last_demo(stack)
    if os.environ.get("POOCH_TOPIC_PREFIX") or demo is None:
        return stack.status(), None
    note = (
        f"topics of the last demo: prefix [bold]{demo['prefix']}[/bold] ({demo['state']}; report "
        f"{demo['report']}). POOCH_TOPIC_PREFIX=... pooch stack status shows another prefix."
    )
    return stack.status(topic_prefix=demo["prefix"]), note


@stack_app.command()
@expected_errors
def prereqs() -> None:
    """Check java and mvn, install redis-server if missing (as root), fetch the Kafka jars."""
    stack = LocalStack(report=progress)
    stack.prerequisites()
    console.print(f"[green]✓[/green] java, mvn and redis-server found; Kafka jars in {stack.paths.jars_dir}")


def _check_names(names: list[str]) -> None:
    unknown = sorted(set(names) - set(COMPONENTS))
    if unknown:
        err_console.print(f"[red]error:[/red] unknown component(s) {unknown}; known: {', '.join(COMPONENTS)}")
        raise typer.Exit(2)


def render_status(status: StackStatus, note: str | None = None) -> None:
    procs = Table(title=f"Local stack ({status.state_dir})", title_justify="left")
    for col in ("process", "pid", "ports", "state", "detail"):
        procs.add_column(col)
    for p in status.processes:
        style = STATE_STYLE.get(p.state, "")
        procs.add_row(
            p.name,
            str(p.pid or "-"),
            ", ".join(map(str, p.ports)),
            f"[{style}]{p.state}[/{style}]",
            p.detail,
        )
    console.print(procs)
    if note:
        console.print(note)
    if status.topics is not None:
        where = f" (prefix {status.topic_prefix})" if status.topic_prefix else ""
        console.print(topics_table(status.topics, f"Topics on {status.kafka_bootstrap}{where}"))
    elif status.topics_error:
        console.print(f"[dim]topics: not shown ({status.topics_error})[/dim]")
    down_names = [p.name for p in status.processes if not p.up]
    if down_names:
        console.print(f"[red]not up:[/red] {', '.join(down_names)}   (start with `pooch stack up`)")
    else:
        console.print(f"[green]all up[/green]   Kafka {status.kafka_bootstrap}   Redis {status.redis_url}")


def topics_table(topics: dict[str, TopicState], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("topic")
    table.add_column("partitions", justify="right")
    table.add_column("end offsets (total)", justify="right")
    table.add_column("retention.ms", justify="right")
    for name, t in topics.items():
        retention = t.spec.config.get("retention.ms", "") if t.spec else ""
        if not t.exists:
            table.add_row(name, "[red]missing[/red]", "-", retention)
        else:
            table.add_row(name, str(t.partitions), f"{t.end_offset_total:,}", retention)
    return table
