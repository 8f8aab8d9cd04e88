"""Everything that decides a simulation; the same config and seed give the same bytes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from .badinput import HTTP_KINDS, KAFKA_KINDS

Transport = Literal["kafka", "http"]


@dataclass(frozen=True)
class SimConfig:
    """Knobs of one simulation.

    Time: ``start_ms`` is the virtual clock's first instant (``None``: the wall clock when the
    simulation is created, so events look live); ``time_scale`` simulated seconds pass per wall
    second when the runner paces (``rate`` > 0); ``horizon_s`` is the label horizon the like
    delays are built around. ``rate`` is the average events per wall second the runner aims at
    (over a simulated day: posting follows the time of day), 0 sends as fast as possible.

    Volume: ``max_events`` sends exactly that many records. With ``drain`` (the default when
    unpaced) the simulation stops posting new pupdates once that many good records are
    scheduled, so almost every pupdate gets all its likes (the tail of the stream is likes up
    to two horizons after the last post); without it (the default when paced, where a drain
    would take hours of wall time) posting goes on and the stream is cut like a live one.
    ``duration_s`` stops the runner after that many wall seconds. Neither: run until stopped.
    Paced runs reach ``rate`` once likes have caught up with posting: over the first horizon
    the rate ramps up, as the likes of the first pupdates are still to come.
    ``pupdates_per_hour`` (simulated) overrides how dense posting is in virtual time; by default
    it follows from ``rate`` and ``time_scale``, or, unpaced, from the dogs posting 1.5 a day.

    Closed loop: ``drafts`` candidate drafts per pupdate (1: the owner posts what they wrote,
    the simulation stays pure); with more, the simulation's advisor (:mod:`sniffable.advisor`)
    picks which one is posted. ``stream_seed`` seeds the events (ids, timing, likes) apart from
    the world, so a live run can continue the same world as a history run without repeating
    its pupdate ids; ``None`` uses ``seed``.
    """

    seed: int = 0
    start_ms: int | None = None
    time_scale: float = 1.0
    horizon_s: float = 86_400.0
    rate: float = 0.0
    duration_s: float | None = None
    max_events: int | None = None
    bad_share: float = 0.02
    bad_kinds: tuple[str, ...] | None = None
    transport: Transport = "kafka"
    n_dogs: int = 2_000
    n_owners: int | None = None
    n_sniffers: int = 50_000
    pupdates_per_hour: float | None = None
    late_share: float = 0.03
    jitter_share: float = 0.05
    max_jitter_s: float | None = None
    upgrade_share: float = 0.002
    drain: bool | None = None
    drafts: int = 1
    stream_seed: int | None = None

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if self.horizon_s <= 0:
            raise ValueError("horizon_s must be > 0")
        if self.rate < 0:
            raise ValueError("rate must be >= 0")
        if not 0.0 <= self.bad_share < 1.0:
            raise ValueError("bad_share must be in [0, 1)")
        if self.max_events is not None and self.max_events < 0:
            raise ValueError("max_events must be >= 0")
        if self.duration_s is not None and self.duration_s < 0:
            raise ValueError("duration_s must be >= 0")
        if not 0.0 <= self.late_share < 1.0 or not 0.0 <= self.jitter_share <= 1.0:
            raise ValueError("late_share must be in [0, 1) and jitter_share in [0, 1]")
        if not 1 <= self.drafts <= 32:
            raise ValueError("drafts must be in 1..32 (the what-if API takes at most 32 candidates)")
        if self.transport not in ("kafka", "http"):
            raise ValueError("transport must be kafka or http")
        allowed = self.allowed_bad_kinds
        unknown = set(self.bad_kinds or ()) - set(allowed)
        if unknown:
            raise ValueError(
                f"bad kinds {sorted(unknown)} not possible over {self.transport}; choose from {list(allowed)}"
            )
        if self.bad_kinds is not None and not self.bad_kinds and self.bad_share > 0:
            raise ValueError("bad_share > 0 needs at least one bad kind")

    @property
    def allowed_bad_kinds(self) -> tuple[str, ...]:
        return HTTP_KINDS if self.transport == "http" else KAFKA_KINDS

    @property
    def kinds(self) -> tuple[str, ...]:
        """Bad kinds this run injects."""
        return tuple(self.bad_kinds) if self.bad_kinds is not None else self.allowed_bad_kinds

    @property
    def draining(self) -> bool:
        """Whether posting stops early so the last pupdates' likes fit in ``max_events``."""
        return self.drain if self.drain is not None else self.rate == 0

    @property
    def horizon_ms(self) -> int:
        return int(self.horizon_s * 1000)

    @property
    def max_jitter_ms(self) -> int:
        s = self.max_jitter_s if self.max_jitter_s is not None else min(120.0, self.horizon_s / 50)
        return max(1, int(s * 1000))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bad_kinds"] = list(self.kinds)
        return d
