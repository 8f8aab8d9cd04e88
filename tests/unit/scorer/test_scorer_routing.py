"""Arms by a stable hash of dog_id: same in every process, proportional to weights, minimal moves."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.scorer.routing import Router, Weights, dog_point, normalise


def test_point_is_stable_across_processes():
    code = "from services.scorer.routing import dog_point; print(repr(dog_point('dog-00042', b'salt')))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(other.stdout) == dog_point("dog-00042", b"salt")
    assert dog_point(b"dog-00042", b"salt") == dog_point("dog-00042", b"salt")
    assert dog_point("dog-00042", b"other") != dog_point("dog-00042", b"salt")


def test_arms_follow_the_weights():
    router = Router("s")
    w = Weights.of({"champion": 0.7, "challenger": 0.2, "baseline": 0.1})
    counts = {"champion": 0, "challenger": 0, "baseline": 0}
    n = 20_000
    for i in range(n):
        counts[router.arm(f"dog-{i}", w)] += 1
    assert abs(counts["champion"] / n - 0.7) < 0.02
    assert abs(counts["challenger"] / n - 0.2) < 0.02
    assert abs(counts["baseline"] / n - 0.1) < 0.02


def test_a_dog_keeps_its_arm_and_a_weight_change_moves_only_the_boundary():
    router = Router("s")
    before = Weights.of({"champion": 0.9, "challenger": 0.1})
    after = Weights.of({"champion": 0.8, "challenger": 0.2})
    dogs = [f"dog-{i}" for i in range(5000)]
    first = [router.arm(d, before) for d in dogs]
    assert first == [Router("s").arm(d, before) for d in dogs]
    moved = [(a, router.arm(d, after)) for d, a in zip(dogs, first, strict=True) if a != router.arm(d, after)]
    assert moved and all(m == ("champion", "challenger") for m in moved)
    assert abs(len(moved) / len(dogs) - 0.1) < 0.02


def test_only_champion_means_everyone_is_champion():
    w = Weights.of({"champion": 1.0})
    assert {w.arm_at(u / 100) for u in range(100)} == {"champion"}
    assert w.arm_at(0.9999999999999999) == "champion"


@pytest.mark.parametrize(
    "weights",
    [{}, {"champion": 0.0}, {"champion": -1.0, "baseline": 2.0}, {"champion": float("nan")}],
)
def test_invalid_weights(weights):
    assert normalise(weights) is None
    with pytest.raises(ValueError):
        Weights.of(weights)


def test_unknown_arms_are_ignored_and_weights_normalised():
    assert normalise({"champion": 3, "challenger": 1, "bogus": 100}) == {
        "champion": 0.75,
        "challenger": 0.25,
        "baseline": 0.0,
    }
