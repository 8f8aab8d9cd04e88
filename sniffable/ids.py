"""Identifiers drawn from the simulation's own rng, so a seed reproduces them exactly.

``uuid4`` would make every run different; 128 random bits from a seeded ``random.Random``
look the same to every consumer and collide just as rarely.
"""

from __future__ import annotations

import random


class Ids:
    __slots__ = ("_bits",)

    def __init__(self, rng: random.Random) -> None:
        self._bits = rng.getrandbits

    def event(self) -> str:
        return f"{self._bits(128):032x}"

    def pupdate(self) -> str:
        return f"pup_{self._bits(80):020x}"

    def dog(self) -> str:
        return f"dog_{self._bits(62):015x}"

    def sniffer(self) -> str:
        return f"snf_{self._bits(62):015x}"
