"""``pooch scorer``: predictions for every feature vector, and the what-if API."""

from __future__ import annotations

import typer

scorer_app = typer.Typer(
    help="Scorer: features -> predictions (exactly once), plus POST /v1/predict on port 8004.",
    invoke_without_command=True,
)


@scorer_app.callback()
def scorer(
    ctx: typer.Context,
    role: str = typer.Option(
        None, help="all (default), stream or whatif; the same as POOCH_SCORER_ROLE.", show_default=False
    ),
    instance_id: str = typer.Option(
        None, help="Instance id (transactional.id scorer-<id>); the same as POOCH_SCORER_INSTANCE_ID."
    ),
    port: int = typer.Option(None, help="HTTP port; the same as POOCH_SCORER_PORT."),
) -> None:
    """Run the scorer service (the same as `python -m services.scorer`)."""
    if ctx.invoked_subcommand is not None:
        return
    from services.scorer.service import main
    from services.scorer.settings import ScorerSettings

    overrides = {
        k: v for k, v in (("role", role), ("instance_id", instance_id), ("port", port)) if v is not None
    }
    main(ScorerSettings(**overrides))
