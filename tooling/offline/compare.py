"""Judge a feature change before it goes live: train one model per extractor version on the
same history and put their validation metrics side by side.

"The same history" is meant strictly: both versions are restricted to the pupdates that have an
instance in every version, so the rows, the labels, the time split and the validation slice are
identical, and only the feature values differ. A version with no instances on the topic yet is
backfilled first (the featurizer replays the fact topics through it), unless told not to.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from libs.common.features.extractors import CATEGORICAL, EXTRACTORS
from libs.common.kafka.replay import ReplayReader
from libs.common.serde import SerdeError, serde
from libs.common.settings import CommonSettings
from libs.common.topics import INSTANCES
from services.trainer.train import Candidate, TrainParams, train
from services.trainer.window import BadInstance, Snapshot, Windows

log = logging.getLogger(__name__)


@dataclass
class Comparison:
    versions: list[str]
    read: dict[str, int]  # instances read per version
    common_rows: int  # pupdates present in every version
    candidates: dict[str, Candidate]
    backfilled: dict[str, int] = field(default_factory=dict)  # version -> instances written
    seconds: float = 0.0

    def metric(self, version: str, name: str) -> float:
        return self.candidates[version].metrics.get(name, float("nan"))

    def best(self, primary: str = "poisson_deviance") -> str:
        return min(self.versions, key=lambda v: self.metric(v, primary))


def read_windows(
    settings: CommonSettings,
    versions: Sequence[str],
    *,
    max_count: int,
    max_age_ms: int,
    timeout_s: float = 600.0,
) -> tuple[Windows, dict[str, int]]:
    """Every instance of ``versions`` on the topic, up to its end as of now."""
    windows = Windows(
        max_count=max_count,
        max_age_ms=max_age_ms,
        categorical_of={v: e.categorical for v, e in EXTRACTORS.items()},
        default_categorical=CATEGORICAL,
        versions=versions,
    )
    reader = ReplayReader(settings, [settings.topic(INSTANCES)], name="trainer-compare")
    read = dict.fromkeys(versions, 0)
    inst = serde("instance")
    started = time.monotonic()
    try:
        while not reader.rebuilt():
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"instances not read to their end within {timeout_s:.0f}s")
            for msg in reader.poll(5000, 0.5):
                try:
                    v = windows.add(inst.decode(msg.value()), msg.partition(), msg.offset())
                except (SerdeError, BadInstance, KeyError, TypeError, ValueError):
                    continue
                if v is not None:
                    read[v] += 1
    finally:
        reader.close()
    return windows, read


def align(snapshots: dict[str, Snapshot]) -> dict[str, Snapshot]:
    """Each snapshot restricted to the pupdates every one of them has (same rows, same order)."""
    keys = None
    for snap in snapshots.values():
        keys = snap.rows.key if keys is None else np.intersect1d(keys, snap.rows.key)
    out = {}
    for v, snap in snapshots.items():
        idx = np.flatnonzero(np.isin(snap.rows.key, keys))
        out[v] = Snapshot(snap.extractor_version, snap.names, snap.categorical, snap.rows.take(idx))
    return out


def compare_versions(
    settings: CommonSettings,
    versions: Sequence[str],
    params: TrainParams,
    *,
    backfill: str = "auto",
    horizon_ms: int | None = None,
    max_count: int = 1_000_000,
    max_age_ms: int = 10**13,
    progress: Callable[[str], None] = lambda _msg: None,
) -> Comparison:
    """Train every version on the same pupdates; ``backfill``: auto (versions with no
    instances), always, or never."""
    started = time.monotonic()
    versions = list(dict.fromkeys(versions))
    for v in versions:
        if v not in EXTRACTORS:
            raise ValueError(f"unknown extractor version {v!r}; known: {sorted(EXTRACTORS)}")
    backfilled: dict[str, int] = {}
    progress("reading instances")
    windows, read = read_windows(settings, versions, max_count=max_count, max_age_ms=max_age_ms)
    if backfill != "never":
        todo = [v for v in versions if backfill == "always" or read[v] == 0]
        if todo:
            if horizon_ms is None:
                raise ValueError("horizon_ms is needed to backfill")
            from tooling.offline.backfill import backfill as run_backfill

            for v in todo:
                progress(f"backfilling extractor {v} from the fact topics")
                backfilled[v] = run_backfill(settings, v, horizon_ms=horizon_ms).instances
            progress("reading instances again")
            windows, read = read_windows(settings, versions, max_count=max_count, max_age_ms=max_age_ms)
    missing = [v for v in versions if v not in windows]
    if missing:
        raise ValueError(f"no instances of {missing} on {settings.topic(INSTANCES)}")
    snaps = align({v: windows[v].snapshot() for v in versions})
    common = len(next(iter(snaps.values())))
    candidates = {}
    for v in versions:
        progress(f"training {v} on {common:,} pupdates")
        candidates[v] = train(snaps[v], params, topic=settings.topic(INSTANCES))
    return Comparison(versions, read, common, candidates, backfilled, time.monotonic() - started)


COLUMNS = (
    ("validation rows", "validation_rows", "{:,.0f}"),
    ("train rows", "train_rows", "{:,.0f}"),
    ("rounds", "rounds", "{:.0f}"),
    ("MAE", "mae", "{:.4f}"),
    ("RMSE", "rmse", "{:.4f}"),
    ("Poisson deviance", "poisson_deviance", "{:.4f}"),
    ("baseline MAE", "baseline_mae", "{:.4f}"),
    ("baseline RMSE", "baseline_rmse", "{:.4f}"),
    ("baseline Poisson deviance", "baseline_poisson_deviance", "{:.4f}"),
    ("MAE / baseline", "mae_ratio_to_baseline", "{:.3f}"),
    ("RMSE / baseline", "rmse_ratio_to_baseline", "{:.3f}"),
    ("deviance / baseline", "poisson_deviance_ratio_to_baseline", "{:.3f}"),
    ("improvement vs baseline", "improvement_vs_baseline", "{:+.2%}"),
    ("fit seconds", "fit_seconds", "{:.2f}"),
)
