"""``pooch featurizer [run|backfill|flink]``: the feature and label stream, and its history replays."""

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
def flink(
    parallelism: int = typer.Option(2, help="Parallelism of the keyed stages."),
    resume: bool = typer.Option(
        True, help="Resume from the newest retained checkpoint in POOCH_FLINK_CHECKPOINT_DIR, if any."
    ),
) -> None:
    """Run the featurizer as a Flink job in a local MiniCluster (docs/flink.md): the same outputs
    as `pooch featurizer`; run one of the two, not both. Needs `make venv-flink` once."""
    import os
    import subprocess

    from services.featurizer.flink.settings import FlinkSettings
    from tooling.stack import flink as flink_stack
    from tooling.stack.config import REPO_ROOT, StackSettings
    from tooling.stack.errors import StackError

    try:
        jar = flink_stack.connector_jar(StackSettings(), progress)
        command = flink_stack.job_command()
    except StackError as exc:
        fail(str(exc), hint=exc.hint)
    extra = {"parallelism": str(parallelism)}
    checkpoint = flink_stack.latest_checkpoint(FlinkSettings().checkpoint_dir) if resume else None
    if checkpoint is not None:
        progress(f"resuming from {checkpoint}")
        extra["restore_from"] = str(checkpoint)
    env = os.environ | flink_stack.job_env(jar, **extra)
    raise typer.Exit(subprocess.call(command, cwd=REPO_ROOT, env=env))


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
