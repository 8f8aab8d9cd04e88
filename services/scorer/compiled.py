"""Compiled trees: each model version's LightGBM text compiled to native code with lleaves.

LightGBM walks its trees through a general interpreter; lleaves (on llvmlite's bundled LLVM, so
no C compiler in the image) turns one model's trees into straight-line machine code, which
predicts several times faster on the small batches the scorer sees (measured in
``bench/scorer.py``, figures in ``docs/performance.md``).

* **Off the hot path**: a model is served by LightGBM the moment it is loaded. Compiling 300
  trees takes seconds of a core and holds the GIL, so it runs in a child process
  (``python -m services.scorer.compile_model``); this process only loads the finished shared
  object and swaps the predictor in with one reference assignment.
* **Once per version**: the shared object is cached on disk under the artifact's sha256 (plus the
  lleaves and llvmlite versions and the machine, since the code is built for this CPU), so a
  restart or a second scorer on the same volume loads it in milliseconds.
* **Trusted only when it agrees**: before the swap, the compiled model predicts a check batch
  (random rows with missing values and unseen categories) beside LightGBM; any relative
  difference over 1e-9 and the compiled model is thrown away, LightGBM stays.
* **Failure is not an outage**: a compile that fails or times out is logged and counted
  (``pooch_scorer_model_compiles_total{outcome}``), and that version keeps LightGBM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from services.scorer import metrics as m

log = logging.getLogger(__name__)

AGREEMENT_RTOL = 1e-9
CHECK_ROWS = 512
REPO = Path(__file__).resolve().parents[2]


def cache_key(sha256: str) -> str:
    versions = "-".join(metadata.version(p) for p in ("lleaves", "llvmlite"))
    return f"{sha256}-{versions}-{platform.machine()}.so"


def compile_to(model_file: Path, out: Path) -> None:
    """Compile one LightGBM text model into a shared object (what the child process runs)."""
    import lleaves

    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    lleaves.Model(model_file=str(model_file)).compile(cache=str(tmp))
    os.replace(tmp, out)  # never a half-written object under the final name


def load_compiled(model_file: Path, so: Path) -> Any:
    """The compiled model from its cached shared object (lleaves loads it instead of compiling)."""
    import lleaves

    model = lleaves.Model(model_file=str(model_file))
    model.compile(cache=str(so))
    return model


def check_batch(n_features: int, seed: int = 0) -> np.ndarray:
    """Rows that reach every kind of branch: ordinary values, missing ones and unseen codes."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 3.0, size=(CHECK_ROWS, n_features)) * rng.choice(
        [1.0, 10.0, 1000.0], size=(1, n_features)
    )
    x[rng.random(x.shape) < 0.1] = np.nan
    x[rng.random(x.shape) < 0.05] = -1.0
    x[rng.random(x.shape) < 0.02] = 10_000.0
    return x


def disagreement(compiled: Any, booster: Any, x: np.ndarray) -> float:
    """The largest relative difference between the compiled and the LightGBM predictions."""
    a = np.asarray(booster.predict(x, num_threads=1), dtype=np.float64).reshape(-1)
    b = np.asarray(compiled.predict(np.ascontiguousarray(x, dtype=np.float64), n_jobs=1)).reshape(-1)
    scale = np.maximum(np.abs(a), 1e-12)
    return float(np.max(np.abs(a - b) / scale)) if len(a) else 0.0


@dataclass
class _Job:
    model: Any  # services.scorer.model.LoadedModel
    text: str
    sha256: str


class Compiler(threading.Thread):
    """Compiles loaded models one at a time, in the background, and swaps each in when it agrees."""

    def __init__(self, cache_dir: Path, *, timeout_s: float = 300.0) -> None:
        super().__init__(name="model-compiler", daemon=True)
        self.cache_dir = cache_dir
        self.timeout_s = timeout_s
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.done: dict[str, str] = {}  # version -> outcome (for /v1/models and tests)

    def submit(self, model: Any, text: str, sha256: str) -> None:
        self.jobs.put(_Job(model, text, sha256))

    def stop(self) -> None:
        self.jobs.put(None)

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                outcome = self._compile(job)
            except Exception as exc:  # never let one model stop the compiler
                outcome = "failed"
                log.warning(
                    "model not compiled; LightGBM keeps predicting it",
                    extra={"model_version": job.model.version, "error": str(exc)[:500]},
                )
            self.done[job.model.version] = outcome
            m.MODEL_COMPILES.labels(outcome).inc()

    def _compile(self, job: _Job) -> str:
        started = time.perf_counter()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        so = self.cache_dir / cache_key(job.sha256)
        model_file = self.cache_dir / f"{job.sha256}.txt"
        if not model_file.exists():
            tmp = model_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(job.text)
            os.replace(tmp, model_file)
        outcome = "cached"
        if not so.exists():
            outcome = "compiled"
            result = subprocess.run(
                [sys.executable, "-m", "services.scorer.compile_model", str(model_file), str(so)],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
            )
            if result.returncode != 0:
                raise RuntimeError(f"compiler exited {result.returncode}: {result.stderr[-400:]}")
        compiled = load_compiled(model_file, so)
        worst = disagreement(compiled, job.model.booster, check_batch(len(job.model.feature_names)))
        if not worst <= AGREEMENT_RTOL:
            with contextlib.suppress(OSError):
                so.unlink()
            log.error(
                "compiled model disagrees with LightGBM; LightGBM keeps predicting it",
                extra={"model_version": job.model.version, "max_relative_difference": worst},
            )
            return "disagreed"
        job.model.compiled = compiled  # the swap: the next predict call uses native code
        seconds = time.perf_counter() - started
        m.MODEL_COMPILE_SECONDS.observe(seconds)
        log.info(
            "model compiled to native code",
            extra={"model_version": job.model.version, "outcome": outcome, "seconds": round(seconds, 3)},
        )
        return outcome
