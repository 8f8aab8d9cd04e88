"""One training run, as pure functions: window snapshot in, candidate model and its verdict out.

* LightGBM with a count objective (``poisson`` or ``tweedie``, both with a log link): every
  prediction is ``exp(raw score) > 0``, so a negative like count is impossible by construction.
* Categorical features (integer codes from the extractor) are declared as categories; negative
  codes (the ``-1`` missing sentinel) are LightGBM's "missing". Values are used exactly as the
  extractor wrote them: no preprocessing the scorer would have to mirror.
* The split is by time, never random: the newest ``validation_fraction`` of the window (by
  posted_at) is held out; the newest ``early_stopping_fraction`` of what remains picks the
  number of rounds, then the model is refit on everything before the validation slice. The
  model never sees its validation slice.
* On the validation slice, the model, the historical baseline (the ``baseline`` field) and the
  current champion are scored with MAE, RMSE and mean Poisson deviance. The candidate is
  published only when it beats the baseline by ``margin_vs_baseline`` and the champion by
  ``margin_vs_champion`` on the primary metric, as ``1 - metric / reference_metric``.
* Deterministic: fixed seed, ``deterministic=true``, row-wise histograms, a fixed thread count.
  The same window gives the same model text, hence the same content-addressed version.
* The fit is pluggable (``Fitter``): :func:`fit` in this process, or
  ``services.trainer.distributed.DaskFitter`` on a Dask cluster (``POOCH_TRAINER_ENGINE=dask``).
  Everything around it (split, validation, decision, artifact) is the same code for both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import lightgbm as lgb
import numpy as np

from services.trainer.window import Snapshot

EPS = 1e-9
METRICS = ("mae", "rmse", "poisson_deviance")


class NotEnoughData(ValueError):
    """The window is too small for a train/validation split."""


@dataclass(frozen=True)
class TrainParams:
    objective: str = "poisson"
    tweedie_variance_power: float = 1.3
    num_boost_round: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 20
    feature_fraction: float = 0.9
    lambda_l2: float = 1.0
    max_bin: int = 255
    early_stopping_rounds: int = 30
    num_threads: int = 1
    seed: int = 20240601
    validation_fraction: float = 0.2
    min_validation_rows: int = 50
    early_stopping_fraction: float = 0.1
    quantiles: int = 21
    primary_metric: str = "poisson_deviance"
    margin_vs_baseline: float = 0.02
    margin_vs_champion: float = 0.0

    def lgb_params(self) -> dict:
        if self.objective not in ("poisson", "tweedie"):
            raise ValueError(f"objective must be poisson or tweedie (a count model), not {self.objective!r}")
        params = {
            "objective": self.objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "feature_fraction_seed": self.seed,
            "lambda_l2": self.lambda_l2,
            "max_bin": self.max_bin,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "data_random_seed": self.seed,
            "verbosity": -1,
            "max_cat_to_onehot": 4,
            "cat_smooth": 10.0,
            "min_data_per_group": 20,
        }
        if self.objective == "tweedie":
            params["tweedie_variance_power"] = self.tweedie_variance_power
        return params


@dataclass(frozen=True)
class Split:
    """Row ranges of a time-sorted snapshot: [0, fit_end) fit, [fit_end, train_end) early stopping,
    [train_end, n) validation."""

    fit_end: int
    train_end: int
    n: int


def time_split(n: int, p: TrainParams) -> Split:
    n_val = max(round(n * p.validation_fraction), p.min_validation_rows)
    train_end = n - n_val
    if train_end < max(2 * p.min_data_in_leaf, 10):
        raise NotEnoughData(
            f"{n} instances: too few for {n_val} validation rows and a training part "
            f"(need at least {n_val + max(2 * p.min_data_in_leaf, 10)})"
        )
    n_es = round(train_end * p.early_stopping_fraction) if p.early_stopping_rounds else 0
    if n_es and train_end - n_es < max(2 * p.min_data_in_leaf, 10):
        n_es = 0
    return Split(train_end - n_es, train_end, n)


# -- metrics -------------------------------------------------------------------------------------


def poisson_deviance(y: np.ndarray, mu: np.ndarray) -> float:
    """Mean Poisson deviance 2 * (y log(y/mu) - (y - mu)); mu is floored at 1e-9 (a zero
    prediction for a positive count is a huge but finite loss)."""
    y = np.asarray(y, dtype=np.float64)
    mu = np.maximum(np.asarray(mu, dtype=np.float64), EPS)
    ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return float(np.mean(2.0 * (ylogy - (y - mu))))


def scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    err = np.asarray(pred, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err * err))),
        "poisson_deviance": poisson_deviance(y, pred),
    }


def _ratio(a: float, b: float) -> float:
    if b <= 0:
        return 0.0 if a <= 0 else math.inf
    return a / b


def compare(
    y: np.ndarray,
    pred: np.ndarray,
    baseline: np.ndarray,
    champion: np.ndarray | None = None,
) -> dict[str, float]:
    """Model, baseline (and champion) on the same rows; ratios and improvements per metric.

    ``improvement_vs_baseline_<m>`` = 1 - m(model) / m(baseline): the margin the model wins by
    (negative when it loses).
    """
    out: dict[str, float] = {}
    model_s = scores(y, pred)
    base_s = scores(y, baseline)
    for m in METRICS:
        out[m] = model_s[m]
        out[f"baseline_{m}"] = base_s[m]
        out[f"{m}_ratio_to_baseline"] = _ratio(model_s[m], base_s[m])
        out[f"improvement_vs_baseline_{m}"] = 1.0 - out[f"{m}_ratio_to_baseline"]
    if champion is not None:
        champ_s = scores(y, champion)
        for m in METRICS:
            out[f"champion_{m}"] = champ_s[m]
            out[f"champion_{m}_ratio_to_baseline"] = _ratio(champ_s[m], base_s[m])
            out[f"{m}_ratio_to_champion"] = _ratio(model_s[m], champ_s[m])
            out[f"improvement_vs_champion_{m}"] = 1.0 - out[f"{m}_ratio_to_champion"]
    out["mean_prediction"] = float(np.mean(pred)) if len(pred) else 0.0
    out["mean_label"] = float(np.mean(y)) if len(y) else 0.0
    out["mean_baseline"] = float(np.mean(baseline)) if len(baseline) else 0.0
    return out


@dataclass(frozen=True)
class Decision:
    publish: bool
    reason: str


def decide(
    metrics: Mapping[str, float],
    p: TrainParams,
    *,
    has_champion: bool,
    predictions_valid: bool = True,
) -> Decision:
    """Publish only a valid model that beats the baseline, and the champion when there is one,
    by the configured margins on the primary metric."""
    m = p.primary_metric
    if not predictions_valid:
        return Decision(False, "invalid predictions (negative or non-finite) on the validation slice")
    vs_base = metrics[f"improvement_vs_baseline_{m}"]
    if not vs_base >= p.margin_vs_baseline:
        return Decision(
            False,
            f"{m} {metrics[m]:.4f} does not beat the baseline {metrics[f'baseline_{m}']:.4f} "
            f"by {p.margin_vs_baseline:.1%} (improvement {vs_base:.2%})",
        )
    if has_champion:
        vs_champ = metrics.get(f"improvement_vs_champion_{m}", -math.inf)
        if not vs_champ >= p.margin_vs_champion:
            champ = metrics.get(f"champion_{m}", math.nan)
            return Decision(
                False,
                f"{m} {metrics[m]:.4f} does not beat the champion {champ:.4f} "
                f"by {p.margin_vs_champion:.1%} (improvement {vs_champ:.2%})",
            )
        return Decision(
            True,
            f"{m} {metrics[m]:.4f} beats the baseline by {vs_base:.2%} "
            f"and the champion by {vs_champ:.2%} on the newest {int(metrics['validation_rows'])} instances",
        )
    return Decision(
        True,
        f"{m} {metrics[m]:.4f} beats the baseline by {vs_base:.2%} "
        f"on the newest {int(metrics['validation_rows'])} instances (no champion yet)",
    )


def prediction_quantiles(pred: np.ndarray, k: int) -> list[float]:
    if len(pred) == 0:
        return []
    return [float(q) for q in np.quantile(pred, np.linspace(0.0, 1.0, k))]


# -- fitting ------------------------------------------------------------------------------------


def _dataset(snap: Snapshot, end: int) -> lgb.Dataset:
    return lgb.Dataset(
        snap.rows.X[:end],
        label=snap.rows.likes[:end],
        feature_name=list(snap.names),
        categorical_feature=snap.categorical_indices,
        free_raw_data=True,
    )


def fit(snap: Snapshot, p: TrainParams, split: Split) -> tuple[str, int]:
    """Pick the number of rounds by early stopping ([0, fit_end) fits, [fit_end, train_end)
    judges), then refit on all of [0, train_end) with that many rounds: under drift the newest
    training rows are the most valuable ones, so the final model must not lose them.
    Returns (model text, rounds)."""
    r = snap.rows
    params = p.lgb_params()
    rounds = p.num_boost_round
    if split.train_end > split.fit_end:
        probe_set = _dataset(snap, split.fit_end)
        es_set = lgb.Dataset(
            r.X[split.fit_end : split.train_end],
            label=r.likes[split.fit_end : split.train_end],
            reference=probe_set,
            free_raw_data=True,
        )
        probe = lgb.train(
            params | {"metric": p.objective},
            probe_set,
            num_boost_round=p.num_boost_round,
            valid_sets=[es_set],
            callbacks=[lgb.early_stopping(p.early_stopping_rounds, first_metric_only=True, verbose=False)],
        )
        rounds = probe.best_iteration if probe.best_iteration > 0 else probe.current_iteration()
        del probe, probe_set, es_set
    booster = lgb.train(params, _dataset(snap, split.train_end), num_boost_round=rounds)
    return booster.model_to_string(), rounds


Fitter = Callable[[Snapshot, TrainParams, Split], tuple[str, int]]


def count_loss(y: np.ndarray, mu: np.ndarray, p: TrainParams) -> float:
    """LightGBM's own ``poisson`` / ``tweedie`` metric (the one :func:`fit` early-stops on), so
    a fitter that early-stops from a curve picks the round LightGBM's callback would pick."""
    y = np.asarray(y, dtype=np.float64)
    mu = np.maximum(np.asarray(mu, dtype=np.float64), 1e-10)
    if p.objective == "poisson":
        return float(np.mean(mu - y * np.log(mu)))
    rho = p.tweedie_variance_power
    a = y * np.exp((1 - rho) * np.log(mu)) / (1 - rho)
    b = np.exp((2 - rho) * np.log(mu)) / (2 - rho)
    return float(np.mean(b - a))


def rounds_from_curve(losses: np.ndarray, stopping_rounds: int) -> int:
    """The number of rounds ``lgb.early_stopping(stopping_rounds)`` keeps, given the validation
    loss after each round: the best round so far (strictly lower wins), stopping once
    ``stopping_rounds`` rounds in a row have not beaten it."""
    best, best_i = math.inf, -1
    for i, loss in enumerate(losses):
        if loss < best:
            best, best_i = float(loss), i
        elif i - best_i >= stopping_rounds:
            break
    return best_i + 1 if best_i >= 0 else len(losses)


def loss_curve(model_text: str, X: np.ndarray, y: np.ndarray, p: TrainParams) -> np.ndarray:
    """The validation loss after each round of a model, tree by tree (one pass per tree, not
    one prediction per prefix: linear in the rounds)."""
    booster = lgb.Booster(model_str=model_text)
    raw = np.zeros(len(y))
    out = np.empty(booster.current_iteration())
    for k in range(len(out)):
        raw += booster.predict(X, raw_score=True, start_iteration=k, num_iteration=1, num_threads=1)
        out[k] = count_loss(y, np.exp(raw), p)
    return out


def predict(model_text: str, X: np.ndarray, *, num_threads: int = 1) -> np.ndarray:
    """Predictions of a LightGBM text model, exactly as a scorer loading that text gets them."""
    booster = lgb.Booster(model_str=model_text)
    return np.asarray(booster.predict(X, num_threads=num_threads), dtype=np.float64)


def gain_importance(model_text: str) -> dict[str, float]:
    booster = lgb.Booster(model_str=model_text)
    gains = booster.feature_importance(importance_type="gain")
    return {n: float(g) for n, g in zip(booster.feature_name(), gains, strict=True)}


@dataclass(frozen=True)
class Champion:
    """The model the candidate must beat: its version, text and feature names."""

    model_version: str
    model_text: str
    feature_names: tuple[str, ...]


@dataclass
class Candidate:
    extractor_version: str
    model_text: str
    metrics: dict[str, float]
    params: dict[str, str]
    feature_importance: dict[str, float]
    validation_quantiles: list[float]
    decision: Decision
    champion_version: str | None
    seconds: float
    notes: list[str] = field(default_factory=list)


def train(
    snap: Snapshot,
    p: TrainParams,
    *,
    champion: Champion | None = None,
    topic: str = "instances",
    fitter: Fitter = fit,
) -> Candidate:
    """Fit on the window, validate on its newest slice against the baseline and the champion."""
    started = time.perf_counter()
    split = time_split(len(snap), p)
    model_text, rounds = fitter(snap, p, split)
    fitted = time.perf_counter()
    r = snap.rows
    val = slice(split.train_end, split.n)
    X_val, y_val = r.X[val], r.likes[val]
    pred = predict(model_text, X_val, num_threads=p.num_threads)
    valid = bool(np.all(np.isfinite(pred)) and np.all(pred >= 0))
    notes: list[str] = []
    champ_pred = None
    if champion is not None:
        if tuple(champion.feature_names) != snap.names:
            notes.append(f"champion {champion.model_version} has other features: not comparable, ignored")
            champion = None
        else:
            champ_pred = predict(champion.model_text, X_val, num_threads=p.num_threads)
    metrics = compare(y_val, pred, r.baseline[val], champ_pred)
    metrics |= {
        "validation_rows": float(split.n - split.train_end),
        "train_rows": float(split.fit_end),
        "early_stopping_rows": float(split.train_end - split.fit_end),
        "rounds": float(rounds),
        "fit_seconds": fitted - started,
        "required_margin_vs_baseline": p.margin_vs_baseline,
        "improvement_vs_baseline": metrics[f"improvement_vs_baseline_{p.primary_metric}"],
    }
    if champion is not None:
        metrics["required_margin_vs_champion"] = p.margin_vs_champion
        metrics["improvement_vs_champion"] = metrics[f"improvement_vs_champion_{p.primary_metric}"]
    decision = decide(metrics, p, has_champion=champion is not None, predictions_valid=valid)
    params = {f"lgb.{k}": str(v) for k, v in sorted(p.lgb_params().items())}
    params |= {f"train.{k}": str(v) for k, v in sorted(asdict(p).items())}
    params |= snap.data_range(topic)
    params |= {
        "data.train_rows": str(split.fit_end),
        "data.early_stopping_rows": str(split.train_end - split.fit_end),
        "data.validation_rows": str(split.n - split.train_end),
        "data.validation_posted_at_min": str(int(r.posted_at[split.train_end])),
        "lightgbm.version": lgb.__version__,
    }
    if champion is not None:
        params["champion.model_version"] = champion.model_version
    metrics["run_seconds"] = time.perf_counter() - started
    return Candidate(
        extractor_version=snap.extractor_version,
        model_text=model_text,
        metrics=metrics,
        params=params,
        feature_importance=gain_importance(model_text),
        validation_quantiles=prediction_quantiles(pred, p.quantiles),
        decision=decision,
        champion_version=champion.model_version if champion else None,
        seconds=metrics["run_seconds"],
        notes=notes,
    )
