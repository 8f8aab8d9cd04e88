"""A model version ready to predict: the verified LightGBM text parsed into a Booster.

Loading is the only expensive step (verify sha256, parse the text); it happens on the
registry's thread, never on the scoring path, and a model that fails it is refused (the last
good version serves instead). Predicting never changes a loaded model, so one instance is
shared by the stream and the what-if API.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np

from libs.common.artifacts import ModelArtifact
from libs.common.model_loading import load_usable

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    version: str
    extractor_version: str
    feature_names: tuple[str, ...]
    created_at: int
    booster: lgb.Booster
    predict_threads: int = 1
    load_seconds: float = 0.0
    sha256: str = ""
    text: str = field(default="", repr=False)  # the verified text, until the compiler takes it
    # lleaves' native code for these trees, set by the compiler once it agrees with the booster
    compiled: Any = field(default=None, repr=False)
    # record feature names -> column indices into them in model order (None: cannot serve them)
    _columns: dict[tuple[str, ...], np.ndarray | None] = field(default_factory=dict, repr=False)

    def columns_for(self, names: tuple[str, ...]) -> np.ndarray | None:
        """How to read this model's features out of a record's; None when the record lacks some.

        An identical name list (the usual case) maps to an identity slice; a record whose
        names are the same set in another order is reordered; anything else is a mismatch.
        """
        try:
            return self._columns[names]
        except KeyError:
            pass
        cols: np.ndarray | None
        if names == self.feature_names:
            cols = np.arange(len(names))
        else:
            index = {n: i for i, n in enumerate(names)}
            if len(index) == len(names) and all(n in index for n in self.feature_names):
                cols = np.array([index[n] for n in self.feature_names])
            else:
                cols = None
        if len(self._columns) < 64:  # bounded: name lists are few (one per extractor version)
            self._columns[names] = cols
        return cols

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Predicted likes per row (the response scale: exp(raw) for a count objective)."""
        compiled = self.compiled  # read once: the compiler may swap it in between calls
        if compiled is not None:
            out = compiled.predict(
                np.ascontiguousarray(matrix, dtype=np.float64), n_jobs=self.predict_threads
            )
        else:
            out = self.booster.predict(matrix, num_threads=self.predict_threads)
        out = np.asarray(out, dtype=np.float64).reshape(-1)
        if out.shape[0] != matrix.shape[0]:
            raise ValueError(f"{self.version}: {out.shape[0]} outputs for {matrix.shape[0]} rows")
        return out


def load(art: ModelArtifact, *, source: str, predict_threads: int = 1, probe: bool = True) -> LoadedModel:
    """Verify and parse an artifact by the shared rule (raises ArtifactIntegrityError or ModelLoadError)."""
    started = time.perf_counter()
    usable = load_usable(art, service="scorer", source=source, probe=probe)
    model = LoadedModel(
        version=art.model_version,
        extractor_version=art.extractor_version,
        feature_names=usable.feature_names,
        created_at=art.created_at,
        booster=usable.booster,
        predict_threads=predict_threads,
        sha256=art.sha256,
        text=usable.text,
    )
    model.load_seconds = time.perf_counter() - started
    return model
