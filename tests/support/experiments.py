"""A champion-against-challenger experiment as the supervisor sees it, for its unit tests."""

from __future__ import annotations

from services.supervisor.catalog import Catalog
from services.supervisor.experiments import Experiments
from services.supervisor.policies import ExperimentRule

T0 = 1_800_000_000_000


def model_event(kind: str, version: str, created_at: int, **kw) -> dict:
    base = {
        "kind": kind,
        "event_id": f"{kind}:{version}:{created_at}",
        "model_version": version,
        "extractor_version": "v1",
        "created_at": created_at,
        "validation_quantiles": [0, 1, 2],
    }
    return base | kw


def champion_against_challenger(rule: ExperimentRule) -> tuple[Catalog, Experiments]:
    """v1-c the champion, v1-x the challenger, half the traffic each, from before T0."""
    cat = Catalog()
    cat.apply(model_event("PUBLISHED", "v1-c", T0 - 100_000))
    cat.apply(model_event("PUBLISHED", "v1-x", T0 - 90_000))
    cat.apply(model_event("ACTIVATED", "v1-c", T0 - 80_000, arm="champion"))
    cat.apply(
        model_event(
            "ACTIVATED",
            "v1-x",
            T0 - 70_000,
            arm="challenger",
            arm_weights={"champion": 0.5, "challenger": 0.5},
        )
    )
    return cat, Experiments(rule, cat)
