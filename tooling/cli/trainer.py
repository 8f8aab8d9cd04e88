"""``pooch trainer [compare]``: the continuous trainer, and feature versions judged side by side."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from tooling.cli.output import console, fail, progress

trainer_app = typer.Typer(
    help="Trainer: LightGBM models learned continuously from instances, published on models.",
    invoke_without_command=True,
)


@trainer_app.callback()
def trainer(ctx: typer.Context) -> None:
    """Run the trainer service (the same as `python -m services.trainer`)."""
    if ctx.invoked_subcommand is None:
        from services.trainer.service import main

        main()


@trainer_app.command()
def compare(
    extractor: list[str] = typer.Option(
        ..., "--extractor", "-e", help="Extractor version to compare; give it twice or more."
    ),
    backfill: str = typer.Option(
        "auto",
        help="auto: backfill versions with no instances yet; always: backfill every one; never.",
    ),
    horizon_ms: int | None = typer.Option(
        None, help="Label horizon for backfills (default: the featurizer's)."
    ),
    max_instances: int | None = typer.Option(
        None,
        help="Newest instances per version (default: the trainer's window, POOCH_TRAINER_WINDOW_MAX_COUNT).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON instead of a table."),
) -> None:
    """Train one model per extractor version on the same history; print their metrics side by side."""
    from libs.common.features.extractors import EXTRACTORS
    from services.trainer.settings import TrainerSettings
    from tooling.offline.compare import COLUMNS, compare_versions

    if len(set(extractor)) < 2:
        fail("give at least two different --extractor versions", hint="pooch trainer compare -e v1 -e v2")
    unknown = [e for e in extractor if e not in EXTRACTORS]
    if unknown:
        fail(f"unknown extractor version(s) {unknown}", hint=f"known: {', '.join(sorted(EXTRACTORS))}")
    if backfill not in ("auto", "always", "never"):
        fail(f"--backfill must be auto, always or never, not {backfill!r}")
    settings = TrainerSettings()
    horizon = horizon_ms
    if horizon is None and backfill != "never":
        from services.featurizer.settings import FeaturizerSettings

        horizon = FeaturizerSettings().horizon_ms
    try:
        result = compare_versions(
            settings,
            extractor,
            settings.train_params(),
            backfill=backfill,
            horizon_ms=horizon,
            max_count=max_instances or settings.window_max_count,
            max_age_ms=settings.window_max_age_ms,
            progress=progress,
        )
    except (ValueError, TimeoutError) as exc:
        fail(str(exc), hint="are the featurizer's instances (or the facts, to backfill) on Kafka?")
    except Exception as exc:  # shown as a message; the traceback is in the log
        fail(f"compare failed: {type(exc).__name__}: {exc}", hint="is Kafka up? `pooch stack status` tells")
    versions = result.versions
    if as_json:
        out = {
            "common_rows": result.common_rows,
            "read": result.read,
            "backfilled": result.backfilled,
            "best": result.best(settings.primary_metric),
            "metrics": {v: result.candidates[v].metrics for v in versions},
            "decision": {v: result.candidates[v].decision.reason for v in versions},
        }
        console.print_json(json.dumps(out))
        return
    table = Table(title=f"extractors on the same {result.common_rows:,} pupdates (newest slice validates)")
    table.add_column("metric")
    for v in versions:
        table.add_column(v, justify="right")
    for label, key, fmt in COLUMNS:
        table.add_row(label, *(fmt.format(result.metric(v, key)) for v in versions))
    table.add_row("instances read", *(f"{result.read[v]:,}" for v in versions))
    table.add_row(
        "backfilled", *(f"{result.backfilled[v]:,}" if v in result.backfilled else "-" for v in versions)
    )
    console.print(table)
    best = result.best(settings.primary_metric)
    others = [v for v in versions if v != best]
    ref = result.metric(best, settings.primary_metric)
    for v in others:
        gain = 1 - ref / result.metric(v, settings.primary_metric)
        console.print(f"{best} beats {v} on {settings.primary_metric} by {gain:.2%}")
