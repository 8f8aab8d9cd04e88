"""The one rule for whether a published model can be used, shared by the trainer and the scorer.

A version is usable only when its artifact passes its sha256 check *and* LightGBM can use it:
the text parses into a Booster, the Booster has as many features as the record names, and a
probe row of missing values goes through ``predict``. The scorer serves only such versions and
the trainer compares candidates only against such a champion; with one rule the two can never
disagree about which version is the champion (a version the scorer refused used to become the
trainer's champion, and every later comparison against it raised).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
from prometheus_client import Counter

from libs.common.artifacts import ModelArtifact

log = logging.getLogger(__name__)

UNLOADABLE = Counter(
    "pooch_model_unloadable_total",
    "Published model versions refused because LightGBM cannot use them (their sha256 was fine).",
    ["service"],
)


class ModelLoadError(ValueError):
    """The artifact is intact but no usable model: it does not parse or cannot predict."""

    reason = "unloadable"


@dataclass(frozen=True)
class UsableModel:
    text: str  # the verified LightGBM text
    booster: lgb.Booster
    feature_names: tuple[str, ...]
    probe_output: float  # the prediction on the probe row (NaN when not probed)


def load_usable(art: ModelArtifact, *, service: str, source: str, probe: bool = True) -> UsableModel:
    """Verify and parse ``art``; raises ArtifactIntegrityError or ModelLoadError (logged, counted)."""
    text = art.model_text(service=service, source=source)
    try:
        return _parse(art, text, probe)
    except ModelLoadError as exc:
        UNLOADABLE.labels(service).inc()
        log.error(
            "model version REFUSED: LightGBM cannot use it",
            extra={"model_version": art.model_version, "reason": exc.reason, "error": str(exc)[:500]},
        )
        raise


def _parse(art: ModelArtifact, text: str, probe: bool) -> UsableModel:
    try:
        booster = lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as exc:
        raise ModelLoadError(f"{art.model_version}: not a LightGBM text model: {exc}") from exc
    names = tuple(art.feature_names) or tuple(booster.feature_name())
    out = float("nan")
    if probe:
        # One row of missing values through predict: a model whose trees expect another number
        # of features (or that LightGBM cannot evaluate) is refused here, not on every batch.
        try:
            out = float(np.asarray(booster.predict(np.full((1, len(names)), -1.0))).reshape(-1)[0])
        except Exception as exc:
            raise ModelLoadError(f"{art.model_version}: predict fails on a probe row: {exc}") from exc
        if booster.num_feature() != len(names):
            raise ModelLoadError(
                f"{art.model_version}: the model has {booster.num_feature()} features, "
                f"its record names {len(names)}"
            )
        if not math.isfinite(out):
            log.warning(
                "model predicts a non-finite value on a probe row", extra={"model_version": art.model_version}
            )
    return UsableModel(text, booster, names, out)
