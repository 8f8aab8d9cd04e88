"""Compiled trees predict what LightGBM predicts, for every shape of model the system publishes.

The trainer's models (Poisson and Tweedie, the categorical features as categories, v1 and v2
names, the trainer's own TrainParams) and the plain regression a careless release may bring
(the demo's rogue version) are compiled by lleaves, exactly as the scorer's child process does,
and compared with LightGBM on a few thousand rows: ordinary values from the simulated world,
missing values, unseen category codes and out-of-range numbers. Agreement is 1e-9 relative.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from services.scorer.compiled import (
    AGREEMENT_RTOL,
    Compiler,
    check_batch,
    compile_to,
    disagreement,
    load_compiled,
)
from services.scorer.fixtures import make_artifact, train_model_text
from services.scorer.model import load
from services.trainer.synthetic import SyntheticWorld
from services.trainer.train import TrainParams, train
from services.trainer.window import Windows

CATS = ("breed", "photo_filter", "country")


def world_rows(n: int, ev: str, seed: int):
    ws = Windows(max_count=100_000, max_age_ms=10**13, categorical_of={ev: CATS})
    for i, r in enumerate(SyntheticWorld(seed=seed, dogs=300).instances(n)):
        ws.add(r | {"extractor_version": ev}, i % 3, i)
    return ws[ev].snapshot()


def shapes():
    """(name, model text, rows from its own world) for every shape the system publishes."""
    snap = world_rows(2500, "v1", 7)
    world = np.asarray(snap.rows.X, dtype=float)
    yield "trainer poisson v1", train(snap, TrainParams(num_boost_round=100, num_threads=1)).model_text, world
    tweedie = TrainParams(objective="tweedie", num_boost_round=80, num_threads=1)
    yield "trainer tweedie v1", train(snap, tweedie).model_text, world
    snap2 = world_rows(2500, "v2", 8)
    v2 = train(snap2, TrainParams(num_boost_round=80, num_threads=1)).model_text
    yield "trainer poisson v2", v2, np.asarray(snap2.rows.X, dtype=float)
    rogue = train_model_text(objective="regression", negative=True, rounds=60)
    yield "regression (a careless release)", rogue, None


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = []
    folder = tmp_path_factory.mktemp("compiled")
    for i, (name, text, world) in enumerate(shapes()):
        txt, so = folder / f"{i}.txt", folder / f"{i}.so"
        txt.write_text(text)
        compile_to(txt, so)
        out.append((name, text, world, load_compiled(txt, so)))
    return out


def hostile_rows(n_features: int, n: int = 2000) -> np.ndarray:
    """Missing values, -1, unseen category codes and out-of-range numbers, plus integer codes."""
    x = np.vstack([check_batch(n_features, seed=s) for s in range(n // 512 + 1)])[:n]
    x[: n // 3] = np.abs(np.round(x[: n // 3]))
    return x


def test_compiled_and_lightgbm_agree_to_1e_9_on_every_published_shape(models):
    import lightgbm as lgb

    for name, text, world, compiled in models:
        booster = lgb.Booster(model_str=text)
        x = hostile_rows(booster.num_feature())
        if world is not None:
            x = np.vstack([world[:2000], x])
        assert len(x) >= 2000
        worst = disagreement(compiled, booster, x)
        assert worst <= AGREEMENT_RTOL, f"{name}: max relative difference {worst:.3g} over {len(x)} rows"


def outcome(
    compiler: Compiler, version: str, *, want: str | None = None, timeout: float = 60.0
) -> str | None:
    """The compiler's outcome for a version once it has one (``want``: once it is that one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = compiler.done.get(version)
        if got is not None and want in (None, got):
            return got
        time.sleep(0.05)
    return compiler.done.get(version)


def test_the_compiler_swaps_native_code_in_and_predictions_stay_the_same(tmp_path):
    art = make_artifact(train_model_text(rounds=40, seed=4), created_at=1)
    model = load(art, source="test")
    x = check_batch(len(model.feature_names), seed=2)
    before = model.predict(x)
    compiler = Compiler(tmp_path / "cache", timeout_s=120)
    compiler.start()
    try:
        compiler.submit(model, model.text, art.sha256)
        assert outcome(compiler, art.model_version) == "compiled"
        assert model.compiled is not None
        np.testing.assert_allclose(model.predict(x), before, rtol=AGREEMENT_RTOL)
        # A second load of the same artifact (a restart) finds the shared object: no compile.
        again = load(art, source="test")
        compiler.submit(again, again.text, art.sha256)
        assert outcome(compiler, art.model_version, want="cached", timeout=10) == "cached"
        assert again.compiled is not None
    finally:
        compiler.stop()


def test_a_compile_that_fails_leaves_lightgbm_predicting(tmp_path):
    art = make_artifact(train_model_text(rounds=40, seed=5), created_at=1)
    model = load(art, source="test")
    compiler = Compiler(tmp_path / "cache", timeout_s=0.01)  # no compile finishes in 10 ms
    compiler.start()
    try:
        compiler.submit(model, model.text, art.sha256)
        assert outcome(compiler, art.model_version, timeout=15) == "failed"
        assert model.compiled is None
        assert np.all(np.isfinite(model.predict(check_batch(len(model.feature_names)))))
    finally:
        compiler.stop()
