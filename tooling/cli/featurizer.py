"""``pooch featurizer [run|backfill]``: the feature and label stream, and its history replays."""

from __future__ import annotations

import typer
from rich.table import Table

from tooling.cli.output import console, fail, progress

featurizer_app = typer.Typer(
    help="Featurizer: point-in-time features and labels from the facts.",
    invoke_without_command=True,
)


@featurizer_app.callback()
def featurizer(ctx: typer.Context) -> None:
    """Run the featurizer service (the same as `python -m services.featurizer`)."""
    if ctx.invoked_subcommand is None:
        from services.featurizer.service import main

        main()


@featurizer_app.command()
def backfill(
    extractor: str = typer.Option(..., "--extractor", help="Extractor version to replay history through."),
    horizon_ms: int | None = typer.Option(None, help="Label horizon (default: the featurizer's setting)."),
) -> None:
    """Replay the facts from the beginning and write the instances VERSION would have produced."""
    from libs.common.features.extractors import EXTRACTORS
    from services.featurizer.settings import FeaturizerSettings
    from tooling.offline.backfill import backfill as run_backfill

    if extractor not in EXTRACTORS:
        fail(f"unknown extractor version {extractor!r}", hint=f"known: {', '.join(sorted(EXTRACTORS))}")
    settings = FeaturizerSettings()
    horizon = horizon_ms or settings.horizon_ms
    last = [0]

    def report(facts: int, pupdates: int) -> None:
        if facts - last[0] >= 50_000:
            last[0] = facts
            progress(f"{facts:,} facts read, {pupdates:,} pupdates featurized")

    try:
        result = run_backfill(settings, extractor, horizon_ms=horizon, progress=report)
    except Exception as exc:  # shown as a message; the traceback is in the log
        fail(f"backfill failed: {exc}", hint="is Kafka up? `pooch stack status` tells")
    table = Table(title=f"backfill of extractor {extractor}")
    for col in ("facts read", "pupdates", "instances written", "skipped", "seconds"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{result.facts:,}",
        f"{result.pupdates:,}",
        f"{result.instances:,}",
        f"{result.skipped:,}",
        f"{result.seconds:.1f}",
    )
    console.print(table)
