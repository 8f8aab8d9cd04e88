"""What one demo run does: every knob in one frozen object, written into report.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class DemoPlan:
    """Defaults: about five minutes on 2 cores.

    Warm start: ``history_pupdates`` simulated pupdates (and their likes) with event times in
    the past, sent as fast as the collector takes them, posted by the app of before (first
    draft, no advice). Live: ``live_seconds`` of real-time traffic at ``rate`` records/s; every
    owner has ``drafts`` candidates and asks the what-if API. The arm weights split the dogs
    between the historical world (baseline) and the machine-learned one (champion, and a
    challenger once the trainer publishes a newer version).
    """

    seed: int = 7
    horizon_s: float = 20.0
    history_pupdates: int = 5_000
    history_pupdates_per_hour: float = 20_000.0
    live_seconds: float = 180.0
    rate: float = 1_200.0
    drafts: int = 6
    bad_share: float = 0.02
    n_dogs: int = 4_000
    weights: dict[str, float] = field(
        default_factory=lambda: {"champion": 0.35, "challenger": 0.15, "baseline": 0.5}
    )
    rogue: bool = True
    rogue_country: str = "BR"
    rogue_at: float = 0.5  # share of the live phase
    chaos: bool = False
    chaos_service: str = "scorer"
    chaos_at: float = 0.3
    drain_s: float = 45.0
    warm_timeout_s: float = 120.0
    whatif_timeout_s: float = 0.15
    free_ports: bool = False
    retrain_every: int = 3_000
    retrain_interval_s: float = 60.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
