"""The state features are computed from, with one rule: a pupdate only sees the past.

Per dog, per canonical hashtag and globally, the running sums of *matured* pupdates: those
whose label horizon closed at least the maturity lag before the pupdate being featurized was
posted (``close_j <= posted_at_i - lag``). The lag covers late-arriving events, so a
featurizer that applies closures in event-time order gets exactly these numbers, whatever
order Kafka delivered them in. Post counts and the last post time need no label and count
every earlier pupdate of the dog.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Stats:
    """Realised likes of matured pupdates."""

    n: int = 0
    likes: float = 0.0

    def add(self, likes: float) -> None:
        self.n += 1
        self.likes += likes

    def mean(self) -> float | None:
        return self.likes / self.n if self.n else None

    def to_dict(self) -> dict:
        return {"n": self.n, "likes": self.likes}

    @classmethod
    def from_dict(cls, d: dict | None) -> Stats:
        return cls(int(d["n"]), float(d["likes"])) if d else cls()


@dataclass
class DogState:
    posts: int = 0
    last_posted_at: int | None = None
    matured: Stats = field(default_factory=Stats)

    def posted(self, posted_at: int) -> None:
        self.posts += 1
        if self.last_posted_at is None or posted_at > self.last_posted_at:
            self.last_posted_at = posted_at

    def to_dict(self) -> dict:
        return {"posts": self.posts, "last_posted_at": self.last_posted_at, "matured": self.matured.to_dict()}

    @classmethod
    def from_dict(cls, d: dict | None) -> DogState:
        if not d:
            return cls()
        return cls(int(d["posts"]), d.get("last_posted_at"), Stats.from_dict(d.get("matured")))


@dataclass(frozen=True)
class StateView:
    """What one extraction may read: the dog's state, its hashtags' stats and the global stats,
    all as of the pupdate's posting time."""

    dog: DogState
    tags: dict[str, Stats]
    overall: Stats
    # True when some of it was unavailable (what-if with Redis down): defaults were used.
    degraded: bool = False
