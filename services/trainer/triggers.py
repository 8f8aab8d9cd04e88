"""When an extractor version is due for a training run, and why: the pure rule the training
loop asks once per tick.

A version that has never had a model trains as soon as its window reaches ``min_instances``
(the scorer serves only the baseline until then, the worst state to linger in); after that,
a run is due on request, after a failed run's backoff, after ``retrain_every`` new instances,
or after ``retrain_interval_s`` when anything new arrived.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TriggerRules:
    retrain_every: int
    retrain_interval_s: float
    first_model_asap: bool = True


@dataclass(frozen=True)
class VersionState:
    pending: str | None  # why a run was asked for (a request, a new leadership term)
    retry_due: float | None  # backoff seconds when a failed run's retry is due now
    new_instances: int  # since the last run (or the rebuild)
    seconds_since_last_run: float  # or since the service started
    has_model: bool  # a version of this extractor was ever published
    ran_here: bool  # this process already ran it once


def due(rules: TriggerRules, s: VersionState) -> str | None:
    """The trigger's description when a run is due, else None."""
    if s.pending is not None:
        return s.pending
    if s.retry_due is not None:
        return f"retry {s.retry_due:.0f} s after a failed run"
    if rules.first_model_asap and not s.has_model and not s.ran_here and s.new_instances > 0:
        return f"first model ({s.new_instances} instances)"
    if s.new_instances >= rules.retrain_every:
        return f"{s.new_instances} new instances"
    if s.new_instances > 0 and s.seconds_since_last_run >= rules.retrain_interval_s:
        return f"{s.seconds_since_last_run:.0f} s since the last run ({s.new_instances} new instances)"
    return None
