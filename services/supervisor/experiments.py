"""Experiments ("possible worlds"): per arm, pupdates and realised likes per pupdate. Pure.

The scorer routes each dog to an arm (champion, challenger, historical baseline) by a stable
hash; every prediction names the arm that served it. An experiment, per extractor version, runs
from the last ACTIVATED record that changed its arms (or the arm weights) until the next one;
predictions of the first ``settle_ms`` after that record are left out (the scorer applies it
within a second). Per arm:

* ``pupdates``: predictions served on that arm in the experiment;
* ``labelled``: those whose realised likes are known (joined with ``instances`` by
  ``(pupdate_id, extractor_version)``);
* ``likes_per_pupdate``: the mean realised likes of the labelled ones, with a two-sided
  ``confidence`` **Student t interval** (mean +- t_{n-1} s / sqrt(n), s the sample standard
  deviation): likes are counts with a heavy right tail, but a mean of hundreds of them is close
  to normal, and a t interval is what a plain offline recomputation gives too;
* ``mae``: mean absolute error of the arm's predictions against the realised likes.

Always-valid statistics
-----------------------

The report is read continuously (``GET /v1/experiments``, ``pooch experiments``, the demo's
live view) and the supervisor judges the challenger at every evaluation, four times a second. A
fixed 95 % interval "clearing zero at any look" is then wrong far more often than 5 % of the
time (the A/A test in ``tests/unit/supervisor/test_always_valid.py``: a one-sided Welch rule
that errs 2.5 % of the time when judged once promotes in 9 % of 240 identical-arm experiments
when judged every 25 labels, against 0.4 % for the rule below). So every interval the decision
rests on is a **confidence sequence**: the mixture sequential probability ratio test (mSPRT) of
Robbins (1970), as used for online experiments by Johari, Pekelis and Walsh ("Always valid
inference", 2017/2022). With a normal mixing distribution of standard deviation ``tau``
(``mixture_sd`` in ``policies.toml``, in likes, fixed before the experiment; ``mean_mixture_sd``
for one arm's mean) over the true difference, and ``V`` the variance of the estimate
(``s_a^2/n_a + s_b^2/n_b`` for a difference, ``s^2/n`` for one arm's mean), the set

    estimate +- sqrt( V (V + tau^2) / tau^2 * ( log((V + tau^2) / V) + 2 log(1 / alpha) ) )

covers the truth at *every* n simultaneously with probability >= 1 - alpha (``alpha`` = 1 -
``confidence``), so stopping the first time it excludes zero keeps the false-promotion rate
under alpha. The variances are plug-in estimates, which is why the rule still waits for
``min_labelled_per_arm`` labelled pupdates per arm (the normal approximation of a mean of
heavy-tailed counts needs a few hundred). The intervals are wider than a fixed-n one (about 1.5x
to 2.5x at the sample sizes of the demo): that is the price of looking whenever one likes.

The fixed-n figures (Student t per arm, Welch t for the difference) are still reported as
``ci_low``/``ci_high``, because they are what a plain one-off offline recomputation gives and the
tests compare them with scipy; they are labelled as valid for one look at a fixed n only, and no
decision uses them.

**Promotion rule**: when a challenger version is activated and usable, both arms have at least
``min_labelled_per_arm`` labelled pupdates, most of the challenger arm's predictions were made by
that version, and the always-valid lower bound of the difference (``cs_low``) exceeds
``min_lift`` x the champion's mean, the challenger wins; with ``promote`` it becomes the champion
through an ACTIVATED record (which starts a new experiment, so a promotion is never repeated).
Integer sums keep the figures independent of arrival order.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from scipy.stats import t as student_t

from services.supervisor.catalog import ARMS, BASELINE, CHALLENGER, CHAMPION, Catalog
from services.supervisor.policies import ExperimentRule

SCALE = 1_000_000_000  # nano units: the MAE matches a float recomputation to ~1e-10
METHOD = (
    "always-valid: mSPRT normal-mixture confidence sequences (Robbins 1970; Johari et al. 2017) "
    "for each arm's mean likes per labelled pupdate (cs_low/cs_high) and for each arm's difference "
    "to the champion, plug-in variances, valid however often the report is looked at; "
    "ci_low/ci_high are fixed-n Student/Welch t intervals, valid for a single look only"
)


@dataclass
class ArmTally:
    pupdates: int = 0
    labelled: int = 0
    likes: int = 0
    likes2: int = 0
    abs_error: int = 0  # micro units
    versions: Counter[str] = field(default_factory=Counter)  # model_version (or "none") -> predictions

    def mean(self) -> float | None:
        return self.likes / self.labelled if self.labelled else None

    def var(self) -> float | None:
        n = self.labelled
        if n < 2:
            return None
        return max((self.likes2 - self.likes * self.likes / n) / (n - 1), 0.0)


@dataclass
class Experiment:
    extractor_version: str
    started_at: int
    arms: dict[str, ArmTally] = field(default_factory=lambda: {a: ArmTally() for a in ARMS})


def mean_interval(tally: ArmTally, confidence: float) -> tuple[float | None, float | None]:
    mean, var, n = tally.mean(), tally.var(), tally.labelled
    if mean is None or var is None:
        return None, None
    half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * math.sqrt(var / n)
    return mean - half, mean + half


def cs_half_width(variance: float, tau: float, alpha: float) -> float:
    """Half-width of the mSPRT confidence sequence for an estimate of variance ``variance``.

    Normal mixture N(0, tau^2) over the true value: the likelihood ratio crosses 1/alpha exactly
    when the estimate is this far from the value tested (Johari et al. 2017, eq. for the
    two-sided normal mSPRT, written in terms of V = sigma^2 / n).
    """
    if variance <= 0:
        return 0.0
    tau2 = tau * tau
    spread = variance * (variance + tau2) / tau2
    return math.sqrt(spread * (math.log((variance + tau2) / variance) + 2 * math.log(1 / alpha)))


def mean_sequence(tally: ArmTally, rule: ExperimentRule) -> tuple[float | None, float | None]:
    """Always-valid interval of an arm's mean likes per pupdate."""
    mean, var = tally.mean(), tally.var()
    if mean is None or var is None:
        return None, None
    half = cs_half_width(var / tally.labelled, rule.mean_mixture_sd, 1 - rule.confidence)
    return mean - half, mean + half


def difference_sequence(a: ArmTally, b: ArmTally, rule: ExperimentRule) -> dict[str, float] | None:
    """Always-valid interval of mean(a) - mean(b) (None without two labelled pupdates in each)."""
    ma, mb, va, vb = a.mean(), b.mean(), a.var(), b.var()
    if ma is None or mb is None or va is None or vb is None:
        return None
    variance = va / a.labelled + vb / b.labelled
    half = cs_half_width(variance, rule.mixture_sd, 1 - rule.confidence)
    diff = ma - mb
    return {"difference": diff, "cs_low": diff - half, "cs_high": diff + half, "se": math.sqrt(variance)}


def welch(a: ArmTally, b: ArmTally, confidence: float) -> dict[str, float] | None:
    """Interval of mean(a) - mean(b) by Welch's t (None without two labelled pupdates in each)."""
    ma, mb, va, vb = a.mean(), b.mean(), a.var(), b.var()
    if ma is None or mb is None or va is None or vb is None:
        return None
    sa, sb = va / a.labelled, vb / b.labelled
    se = math.sqrt(sa + sb)
    diff = ma - mb
    if se == 0:
        return {"difference": diff, "ci_low": diff, "ci_high": diff, "df": math.inf, "se": 0.0}
    df = (sa + sb) ** 2 / (sa * sa / (a.labelled - 1) + sb * sb / (b.labelled - 1))
    half = float(student_t.ppf(0.5 + confidence / 2, df)) * se
    return {"difference": diff, "ci_low": diff - half, "ci_high": diff + half, "df": df, "se": se}


@dataclass(frozen=True)
class Promotion:
    extractor_version: str
    challenger: str
    champion: str | None
    started_at: int
    figures: dict[str, float]
    reason: str


class Experiments:
    def __init__(self, rule: ExperimentRule, catalog: Catalog) -> None:
        self.rule = rule
        self.catalog = catalog
        self.by_ev: dict[str, Experiment] = {}

    def _current(self, ev: str) -> Experiment:
        start = self.catalog.experiment_start(ev)
        exp = self.by_ev.get(ev)
        if exp is None or exp.started_at != start:
            exp = self.by_ev[ev] = Experiment(ev, start)
        return exp

    def counts(self, ev: str, predicted_at: int) -> bool:
        """Is a prediction of ``ev`` made at ``predicted_at`` part of the current experiment?"""
        return predicted_at >= self.catalog.experiment_start(ev) + self.rule.settle_ms

    def prediction(self, ev: str, arm: str, model_version: str | None, predicted_at: int) -> bool:
        if arm not in ARMS or not self.counts(ev, predicted_at):
            return False
        tally = self._current(ev).arms[arm]
        tally.pupdates += 1
        tally.versions[model_version or "none"] += 1
        return True

    def label(self, ev: str, arm: str, predicted_at: int, likes: int, predicted: float) -> bool:
        if arm not in ARMS or not self.counts(ev, predicted_at):
            return False
        tally = self._current(ev).arms[arm]
        tally.labelled += 1
        tally.likes += likes
        tally.likes2 += likes * likes
        tally.abs_error += round(abs(predicted - likes) * SCALE)
        return True

    # -- reading -----------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        rule = self.rule
        out = []
        for ev in sorted(self.by_ev):
            exp = self._current(ev)
            arms = {}
            for arm, t in exp.arms.items():
                low, high = mean_interval(t, rule.confidence)
                cs_low, cs_high = mean_sequence(t, rule)
                var = t.var()
                arms[arm] = {
                    "pupdates": t.pupdates,
                    "labelled": t.labelled,
                    "likes": t.likes,
                    "likes_per_pupdate": t.mean(),
                    "ci_low": low,
                    "ci_high": high,
                    "cs_low": cs_low,
                    "cs_high": cs_high,
                    "std": math.sqrt(var) if var is not None else None,
                    "mae": t.abs_error / SCALE / t.labelled if t.labelled else None,
                    "versions": dict(sorted(t.versions.items())),
                }
            comparisons = {}
            for arm in (CHALLENGER, BASELINE):
                w = welch(exp.arms[arm], exp.arms[CHAMPION], rule.confidence)
                cs = difference_sequence(exp.arms[arm], exp.arms[CHAMPION], rule)
                if w is not None and cs is not None:
                    w |= {"cs_low": cs["cs_low"], "cs_high": cs["cs_high"]}
                    champ = exp.arms[CHAMPION].mean() or 0.0
                    w["relative_lift"] = w["difference"] / champ if champ else math.inf
                    w["relative_cs_low"] = cs["cs_low"] / champ if champ else math.inf
                    w["relative_cs_high"] = cs["cs_high"] / champ if champ else math.inf
                comparisons[arm] = w
            promotion, why = self.judge(ev)
            out.append(
                {
                    "extractor_version": ev,
                    "started_at": exp.started_at,
                    "champion": self.catalog.champion(ev),
                    "challenger": self.catalog.challenger(ev),
                    "weights": self.catalog.weights or None,
                    "arms": arms,
                    "vs_champion": comparisons,
                    "winner": CHALLENGER if promotion is not None else None,
                    "verdict": why,
                }
            )
        return {
            "metric": rule.metric,
            "confidence": rule.confidence,
            "method": METHOD,
            "alpha": 1 - rule.confidence,
            "mixture_sd": rule.mixture_sd,
            "mean_mixture_sd": rule.mean_mixture_sd,
            "min_labelled_per_arm": rule.min_labelled_per_arm,
            "rule": rule.model_dump(),
            "experiments": out,
        }

    def judge(self, ev: str) -> tuple[Promotion | None, str]:
        """(a promotion when the challenger wins, the verdict in words)."""
        rule = self.rule
        exp = self._current(ev)
        challenger = self.catalog.challenger(ev)
        champion = self.catalog.champion(ev)
        if challenger is None:
            return None, "no challenger is activated and usable"
        ch, c = exp.arms[CHALLENGER], exp.arms[CHAMPION]
        if min(ch.labelled, c.labelled) < rule.min_labelled_per_arm:
            return None, (
                f"not enough evidence yet: {ch.labelled} challenger and {c.labelled} champion labelled "
                f"pupdates, {rule.min_labelled_per_arm} needed in each"
            )
        share = ch.versions.get(challenger, 0) / ch.pupdates if ch.pupdates else 0.0
        if share < 0.5:
            return None, f"only {share:.0%} of the challenger arm was served by {challenger}"
        w = welch(ch, c, rule.confidence)
        cs = difference_sequence(ch, c, rule)
        assert w is not None and cs is not None
        mean_c, mean_ch = c.mean() or 0.0, ch.mean() or 0.0
        needed = rule.min_lift * mean_c
        figures = {
            "challenger_likes_per_pupdate": mean_ch,
            "champion_likes_per_pupdate": mean_c,
            "difference": w["difference"],
            "ci_low": w["ci_low"],
            "ci_high": w["ci_high"],
            "df": w["df"],
            "cs_low": cs["cs_low"],
            "cs_high": cs["cs_high"],
            "mixture_sd": rule.mixture_sd,
            "confidence": rule.confidence,
            "challenger_labelled": float(ch.labelled),
            "champion_labelled": float(c.labelled),
            "min_lift": rule.min_lift,
        }
        text = (
            f"likes per pupdate {mean_ch:.3f} (challenger {challenger}) vs {mean_c:.3f} (champion "
            f"{champion}): difference {w['difference']:+.3f}, {rule.confidence:.0%} always-valid "
            f"interval (mSPRT, tau={rule.mixture_sd:g}) [{cs['cs_low']:+.3f}, {cs['cs_high']:+.3f}], "
            f"n={ch.labelled}/{c.labelled}"
        )
        if cs["cs_low"] > needed:
            return Promotion(ev, challenger, champion, exp.started_at, figures, f"challenger wins: {text}"), (
                f"challenger wins: {text}"
            )
        return None, f"no winner yet: {text}"

    def promotions(self) -> list[Promotion]:
        if not self.rule.promote:
            return []
        out = []
        for ev in sorted(self.by_ev):
            p, _ = self.judge(ev)
            if p is not None:
                out.append(p)
        return out
