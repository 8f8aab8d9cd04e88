"""Experiment arms: each dog goes to one arm by a stable hash of its id.

A dog's point ``u`` in [0, 1) is the first 8 bytes of ``blake2b(salt + dog_id)``: the same in
every process, on every machine, across restarts (Python's ``hash`` is salted per process, so it
is never used). The arms own consecutive slices of [0, 1) in a fixed order (champion,
challenger, baseline) sized by their weights, so a dog keeps its arm while the weights stay the
same, and when they change only the dogs whose point lies in a slice that moved change arm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from libs.common.models_ledger import Arm
from libs.common.models_ledger import normalise_weights as normalise

__all__ = ["BASELINE", "CHALLENGER", "CHAMPION", "Router", "Weights", "dog_point", "normalise"]
CHAMPION, CHALLENGER, BASELINE = Arm.CHAMPION, Arm.CHALLENGER, Arm.BASELINE
_SCALE = float(1 << 64)


def dog_point(dog_id: bytes | str, salt: bytes = b"") -> float:
    """The dog's stable point in [0, 1)."""
    if isinstance(dog_id, str):
        dog_id = dog_id.encode()
    digest = hashlib.blake2b(dog_id, digest_size=8, key=salt[:64]).digest()
    return int.from_bytes(digest, "big") / _SCALE


@dataclass(frozen=True)
class Weights:
    champion: float
    challenger: float
    baseline: float

    @classmethod
    def of(cls, weights: Mapping[str, float]) -> Weights:
        w = normalise(weights)
        if w is None:
            raise ValueError(f"invalid arm weights {dict(weights)}")
        return cls(w[CHAMPION], w[CHALLENGER], w[BASELINE])

    def as_dict(self) -> dict[str, float]:
        return {CHAMPION: self.champion, CHALLENGER: self.challenger, BASELINE: self.baseline}

    def arm_at(self, u: float) -> str:
        if u < self.champion:
            return CHAMPION
        if u < self.champion + self.challenger:
            return CHALLENGER
        # Rounding can leave champion + challenger a hair under 1 with baseline 0.
        return BASELINE if self.baseline > 0 else (CHALLENGER if self.challenger > 0 else CHAMPION)


class Router:
    """dog_id -> arm under given weights; memoises each dog's point (bounded)."""

    def __init__(self, salt: str, *, max_cached: int = 1_000_000) -> None:
        self.salt = salt.encode()
        self.max_cached = max_cached
        self._points: dict[bytes, float] = {}

    def point(self, dog_id: bytes) -> float:
        u = self._points.get(dog_id)
        if u is None:
            if len(self._points) >= self.max_cached:
                self._points.clear()
            u = self._points[dog_id] = dog_point(dog_id, self.salt)
        return u

    def arm(self, dog_id: bytes | str, weights: Weights) -> str:
        if isinstance(dog_id, str):
            dog_id = dog_id.encode()
        return weights.arm_at(self.point(dog_id))
