"""``pooch topics [--create]``: the contract topics on the configured cluster.

Uses ``POOCH_KAFKA_BOOTSTRAP`` and ``POOCH_TOPIC_PREFIX`` (not the local stack's settings), so
it works the same against any cluster.
"""

from __future__ import annotations

import typer

from libs.common.admin import describe_topics, ensure_topics
from libs.common.settings import CommonSettings
from tooling.cli.output import console, expected_errors
from tooling.cli.stack import topics_table

topics_app = typer.Typer(help="Show (and create) the contract topics.", invoke_without_command=True)


@topics_app.callback()
@expected_errors
def topics(
    create: bool = typer.Option(False, "--create", help="Create missing topics and set their config."),
    partitions: int | None = typer.Option(
        None, "--partitions", min=1, help="With --create: partitions for every multi-partition topic."
    ),
    all_topics: bool = typer.Option(False, "--all", help="Also list topics outside the contract."),
    timeout: float = typer.Option(15.0, "--timeout", help="Seconds to wait for Kafka."),
) -> None:
    """List the contract topics with partitions and end offsets; --create makes them."""
    settings = CommonSettings()
    if create:
        report = ensure_topics(settings, partitions=partitions, timeout=timeout)
        console.print(
            f"[green]✓[/green] {len(report.created)} created, {len(report.existing)} already there"
            + (f", config updated on {', '.join(report.reconfigured)}" if report.reconfigured else "")
        )
        for name, (want, have) in report.partition_mismatches.items():
            console.print(f"[yellow]![/yellow] {name} has {have} partitions, the spec asks for {want}")
    state = describe_topics(settings, all_topics=all_topics, timeout=timeout)
    prefix = f" (prefix {settings.topic_prefix!r})" if settings.topic_prefix else ""
    console.print(topics_table(state, f"Topics on {settings.kafka_bootstrap}{prefix}"))
    missing = [name for name, t in state.items() if t.spec and not t.exists]
    if missing:
        console.print(f"[yellow]missing:[/yellow] {', '.join(missing)}   (`pooch topics --create`)")
