"""Decisions about model versions: PAUSED, RESUMED, ACTIVATED, RETIRED records on ``models``.

A decision is a record with the reason in words (``reason``), the figures that triggered it
(``metrics``: the figure, the threshold, the evidence), where (``params``: policy, metric, slice,
country or arm), who (``actor``: ``supervisor`` or ``operator:<name>``) and a unique
``event_id`` = ``<actor kind>:<KIND>:<model_version>:<n>``, n being the number of status events
the version already had. Every reader applies an event_id once.

**Never the same decision twice.** What is decided is read from the ``models`` topic itself
(:class:`services.supervisor.catalog.Catalog`): a decision is only taken when the version's
state on the topic calls for it (pause an active version, resume a paused one, ...). A decision
is written in a Kafka transaction (stable ``transactional.id``, so a second supervisor process
fences the first) and applied to the local catalog at once, before anything else is evaluated;
after a restart the topic holds it and the state says it is done. A crash before the commit
leaves nothing written, and the same figures lead to the same decision, with the same event_id.

The status of every version is also mirrored to Redis (``P models:status``, a hash of
``model_version`` -> JSON ``{status, kind, reason, actor, event_id, at}``) for online readers;
the topic stays the record (the scorer follows the topic), and the hash is rewritten from it on
every start.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from libs.common.models_ledger import EventKind
from services.supervisor.catalog import (
    CHALLENGER,
    CHAMPION,
    STATUS_ACTIVE,
    STATUS_PAUSED,
    STATUS_RETIRED,
    Catalog,
)
from services.supervisor.policies import Breach

log = logging.getLogger(__name__)

KINDS = (EventKind.PAUSED, EventKind.RESUMED, EventKind.ACTIVATED, EventKind.RETIRED)


class DecisionError(Exception):
    status = 400
    code = "invalid"


class UnknownVersion(DecisionError):
    status = 404
    code = "unknown_version"


class Conflict(DecisionError):
    status = 409
    code = "conflict"


def now_ms() -> int:
    return int(time.time() * 1000)


def event(
    catalog: Catalog,
    kind: str,
    version: str,
    *,
    reason: str,
    actor: str,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, str] | None = None,
    arm: str | None = None,
    arm_weights: Mapping[str, float] | None = None,
    created_at: int | None = None,
    seq_offset: int = 0,
) -> dict[str, Any]:
    """A ``model_event`` record for a status decision about a known version."""
    if kind not in KINDS:
        raise ValueError(f"not a decision kind: {kind}")
    v = catalog.versions[version]
    who = actor.split(":", 1)[0] or "supervisor"
    return {
        "kind": kind,
        "event_id": f"{who}:{kind}:{version}:{v.events + seq_offset}",
        "model_version": version,
        "extractor_version": v.extractor_version,
        "feature_names": [],
        "categorical_features": [],
        "metrics": {k: float(x) for k, x in (metrics or {}).items()},
        "params": {k: str(x) for k, x in (params or {}).items()},
        "feature_importance": {},
        "validation_quantiles": [],
        "arm": arm,
        "arm_weights": {k: float(x) for k, x in (arm_weights or {}).items()},
        "reason": reason,
        "actor": actor,
        "artifact": None,
        "artifact_encoding": "zlib",
        "artifact_sha256": "",
        "created_at": now_ms() if created_at is None else created_at,
    }


# -- what may be decided (pure) ----------------------------------------------------------------


def _known(catalog: Catalog, version: str):
    v = catalog.versions.get(version)
    if v is None or not v.published:
        raise UnknownVersion(f"no published model version {version!r}")
    return v


def pause_events(
    catalog: Catalog, version: str, *, reason: str, actor: str, fallback: bool = False, **extra: Any
) -> list[dict[str, Any]]:
    v = _known(catalog, version)
    if v.status != STATUS_ACTIVE:
        raise Conflict(f"{version} is {v.status} already")
    events = [event(catalog, EventKind.PAUSED, version, reason=reason, actor=actor, **extra)]
    ev = v.extractor_version
    if fallback and catalog.activated.get(ev, {}).get(CHAMPION) == version:
        good = catalog.last_good(ev, excluding=version)
        if good is not None:
            events.append(
                event(
                    catalog,
                    EventKind.ACTIVATED,
                    good,
                    reason=f"last good version back as champion: {version} was paused ({reason})",
                    actor=actor,
                    arm=CHAMPION,
                    params={"replaces": version},
                )
            )
    return events


def resume_events(catalog: Catalog, version: str, *, reason: str, actor: str) -> list[dict[str, Any]]:
    v = _known(catalog, version)
    if v.status != STATUS_PAUSED:
        raise Conflict(f"{version} is {v.status}, not paused")
    return [event(catalog, EventKind.RESUMED, version, reason=reason, actor=actor)]


def activate_events(
    catalog: Catalog,
    version: str,
    *,
    reason: str,
    actor: str,
    arm: str = CHAMPION,
    arm_weights: Mapping[str, float] | None = None,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    v = _known(catalog, version)
    if arm not in (CHAMPION, CHALLENGER):
        raise DecisionError(f"arm must be {CHAMPION} or {CHALLENGER}, not {arm!r}")
    if v.status != STATUS_ACTIVE:
        raise Conflict(f"{version} is {v.status}: resume it before activating it")
    slot = catalog.activated.get(v.extractor_version, {}).get(arm)
    if slot == version and not arm_weights:
        raise Conflict(f"{version} is already activated on the {arm} arm")
    if arm_weights:
        bad = [k for k, w in arm_weights.items() if k not in (CHAMPION, CHALLENGER, "baseline") or not w >= 0]
        if bad or sum(arm_weights.values()) <= 0:
            raise DecisionError(
                f"invalid arm_weights {dict(arm_weights)}: arms champion/challenger/baseline, >= 0"
            )
    return [
        event(
            catalog,
            EventKind.ACTIVATED,
            version,
            reason=reason,
            actor=actor,
            arm=arm,
            arm_weights=arm_weights,
            metrics=metrics,
            params=params,
        )
    ]


def retire_events(
    catalog: Catalog, version: str, *, reason: str, actor: str, **extra: Any
) -> list[dict[str, Any]]:
    v = _known(catalog, version)
    if v.status == STATUS_RETIRED:
        raise Conflict(f"{version} is retired already")
    return [event(catalog, EventKind.RETIRED, version, reason=reason, actor=actor, **extra)]


def breach_events(catalog: Catalog, breach: Breach, others: list[Breach], actor: str) -> list[dict[str, Any]]:
    """The records a decisive breach calls for; [] when the topic says it is done already."""
    version = breach.subject
    v = catalog.versions.get(version)
    if v is None or not v.published:
        return []
    action = breach.policy.action
    if action == "retire" and v.status == STATUS_RETIRED:
        return []
    if action in ("pause", "pause_and_fallback") and v.status != STATUS_ACTIVE:
        return []
    also = [f"{b.slice}={b.figure:.4g}" for b in others if b is not breach]
    params = breach.params() | ({"also_breaching": ", ".join(also[:20])} if also else {})
    verb = {"pause": "paused", "pause_and_fallback": "paused", "retire": "retired"}[action]
    reason = f"{verb} by the supervisor: {breach.describe()}"
    extra = {"metrics": breach.metrics(), "params": params}
    if action == "retire":
        return retire_events(catalog, version, reason=reason, actor=actor, **extra)
    return pause_events(
        catalog, version, reason=reason, actor=actor, fallback=action == "pause_and_fallback", **extra
    )


# -- writing -----------------------------------------------------------------------------------


class RedisStatus:
    """Best-effort mirror of each version's status in Redis (module doc)."""

    def __init__(self, client: Any, prefix: str = "") -> None:
        self.client = client
        self.key = f"{prefix}models:status"
        self._warned = False

    def write(self, catalog: Catalog, versions: list[str] | None = None) -> bool:
        names = versions if versions is not None else list(catalog.versions)
        mapping = {}
        for name in names:
            v = catalog.versions.get(name)
            if v is None or not v.published:
                continue
            last = v.history[-1] if v.history else None
            mapping[name] = json.dumps(
                {
                    "status": v.status,
                    "extractor_version": v.extractor_version,
                    "kind": last.kind if last else EventKind.PUBLISHED,
                    "reason": last.reason if last else v.reason,
                    "actor": last.actor if last else v.actor,
                    "event_id": last.event_id if last else f"published:{name}",
                    "at": last.created_at if last else v.created_at,
                }
            )
        if not mapping:
            return True
        try:
            self.client.hset(self.key, mapping=mapping)
            self._warned = False
            return True
        except Exception as exc:  # Redis is a view: never let it stop supervision
            if not self._warned:
                log.warning("model status not written to Redis", extra={"error": str(exc)})
                self._warned = True
            return False

    def read(self) -> dict[str, dict[str, Any]]:
        raw = self.client.hgetall(self.key)
        return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in raw.items()}
