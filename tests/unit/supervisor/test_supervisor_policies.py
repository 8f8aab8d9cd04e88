"""Policies: the default file, validation with reasons, breaches with evidence and significance."""

from __future__ import annotations

import pytest

from services.supervisor import policies as pol
from services.supervisor.catalog import Catalog
from services.supervisor.settings import DEFAULT_POLICIES
from services.supervisor.windows import LabelTally, Obs, Windows

T0 = 1_800_000_000_000


def test_the_default_policy_file_is_valid_and_documented():
    ps = pol.load(DEFAULT_POLICIES)
    names = {p.name for p in ps.policies}
    assert {"invalid_outputs", "implausible_outputs", "realised_error", "prediction_drift"} <= names
    by = {p.name: p for p in ps.policies}
    assert by["invalid_outputs"].action == "pause_and_fallback" and by["invalid_outputs"].threshold == 0.02
    assert "country" in by["invalid_outputs"].slices
    assert by["realised_error"].threshold == 1.10 and by["realised_error"].min_predictions == 300
    assert by["prediction_drift"].action == "alert"
    assert all(p.description for p in ps.policies)
    assert ps.windows.window_seconds == 300 and ps.experiments.confidence == 0.95


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[[policy]]\nname='x'\nmetric='nope'\nthreshold=1", "metric"),
        ("[[policy]]\nname='x'\nmetric='invalid_rate'\nthreshold=1\ntypo=3", "typo"),
        ("[[policy]]\nname='x'\nmetric='invalid_rate'\nthreshold=1\naction='explode'", "action"),
        (
            "[[policy]]\nname='x'\nmetric='fallback_rate'\nscope='extractor'\nthreshold=1\naction='pause'",
            "only alert",
        ),
        ("[windows]\nloss='hinge'", "loss"),
        ("[windows]\nwindow_seconds=1\nbucket_seconds=5", "bucket_seconds"),
        (
            "[[policy]]\nname='x'\nmetric='invalid_rate'\nthreshold=1\n[[policy]]\nname='x'\nmetric='invalid_rate'"
            "\nthreshold=2",
            "repeat",
        ),
        ("this is = not toml [", "TOML"),
    ],
)
def test_an_invalid_policy_file_is_refused_with_the_reason(text, says):
    with pytest.raises(pol.PolicyError, match=says):
        pol.parse(text, "test.toml")


def _windows(policies: pol.PolicySet) -> Windows:
    cat = Catalog()
    cat.apply(
        {
            "kind": "PUBLISHED",
            "event_id": "published:v1-a",
            "model_version": "v1-a",
            "extractor_version": "v1",
            "validation_quantiles": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            "created_at": T0 - 10_000,
        }
    )
    return Windows(policies.windows, cat)


def _obs(i: int, raw: float, country: str) -> Obs:
    bad = raw < 0
    return Obs(
        f"p{i}",
        "v1",
        "champion",
        country,
        None if bad else "v1-a",
        raw,
        max(raw, 0),
        "invalid_output" if bad else None,
        T0 + i,
        10.0,
    )


def test_the_breach_names_the_worst_slice_and_needs_enough_evidence():
    ps = pol.load(DEFAULT_POLICIES)
    w = _windows(ps)
    for i in range(4):  # 4 bad in DE: under min_events (5)
        w.observe(_obs(i, -1.0, "DE"))
    for i in range(4, 200):
        w.observe(_obs(i, 3.0, ("US", "GB")[i % 2]))
    w.resolve(flush=True)
    assert not [b for b in pol.evaluate(ps.policies, w) if b.policy.name == "invalid_outputs"]
    for i in range(200, 220):
        w.observe(_obs(i, -1.0, "DE"))
    w.resolve(flush=True)
    grouped = pol.strongest(pol.evaluate(ps.policies, w))
    [best, *others] = grouped[("invalid_outputs", "v1-a")]
    assert best.slice == "country=DE" and best.figure == 1.0 and best.evidence == 24 and best.offending == 24
    assert {b.slice for b in others} == {"all", "arm=champion"}
    assert "country=DE" in best.describe() and "0.02" in best.describe()
    assert best.params()["country"] == "DE" and best.metrics()["threshold"] == 0.02


def _labels(n: int, m: float, b: float, spread: float) -> LabelTally:
    lt = LabelTally()
    scale = 1_000_000
    for i in range(n):
        mm = round((m + spread * ((i % 7) - 3)) * scale)
        bb = round(b * scale)
        lt.n += 1
        lt.m += mm
        lt.b += bb
        lt.m2 += mm * mm
        lt.b2 += bb * bb
        lt.mb += mm * bb
    return lt


def test_error_ratio_needs_evidence_the_margin_and_significance():
    policy = pol.Policy(
        name="e", metric="error_ratio", threshold=1.1, min_predictions=300, significance=0.01, action="pause"
    )
    # clearly worse, plenty of labels: breach, with its p-value
    b = pol.check(policy, "v1-a", "all", {}, _labels(400, 2.0, 1.0, 0.5))
    assert b is not None and b.figure == pytest.approx(2.0, abs=0.01) and b.p_value < 1e-10
    # as bad but too few labels: nothing
    assert pol.check(policy, "v1-a", "all", {}, _labels(100, 2.0, 1.0, 0.5)) is None
    # 12% worse but too noisy to be sure it is worse than 1.1 x the baseline: nothing
    assert pol.check(policy, "v1-a", "all", {}, _labels(400, 1.12, 1.0, 3.0)) is None
    # better than the baseline: nothing
    assert pol.check(policy, "v1-a", "all", {}, _labels(400, 0.8, 1.0, 0.1)) is None


def test_a_breach_on_all_still_says_where_the_fault_is():
    """The whole version has the evidence before any one country: the decision is taken on all,
    and names the country holding the offending outputs."""
    ps = pol.load(DEFAULT_POLICIES)
    w = _windows(ps)
    for i in range(8):
        w.observe(_obs(i, -1.0, "DE"))
    for i in range(8, 30):
        w.observe(_obs(i, 3.0, ("US", "GB", "FR")[i % 3]))
    w.resolve(flush=True)
    [best, *_] = pol.strongest(pol.evaluate(ps.policies, w))[("invalid_outputs", "v1-a")]
    assert best.slice in ("all", "arm=champion") and best.evidence == 30 and best.offending == 8
    assert best.params()["country"] == "DE" and best.params()["country_breakdown"].startswith("DE 8/8")
    assert best.metrics()["country_invalid_rate"] == 1.0 and best.metrics()["country_offending"] == 8
    assert "concentrated in country=DE" in best.describe()
    # spread over countries: no country is named
    w2 = _windows(ps)
    for i in range(30):
        w2.observe(_obs(i, -1.0 if i % 3 == 0 else 3.0, ("US", "GB", "FR", "DE")[i % 4]))
    w2.resolve(flush=True)
    [b2, *_] = pol.strongest(pol.evaluate(ps.policies, w2))[("invalid_outputs", "v1-a")]
    assert "country" not in b2.params()
