"""How an owner picks which draft to post: the closed loop of the online experiment.

The app asks Pooch Predictor's what-if API (``POST /v1/predict`` with the candidates) and posts
the draft the answer ranks first. Which world the owner lives in is not the app's decision: the
scorer routes the dog to an arm by its stable hash, and answers in that arm's way:

* ``champion`` / ``challenger`` (the machine-learned world): drafts ranked by the model;
* ``baseline`` (the historical world): drafts ranked by the historical predictor, the past
  average likes of pupdates with the draft's hashtags (as the first Pooch Predictor did).

The answer names the arm, which is the arm the dog's stream predictions carry, so the
experiment's arms are the worlds owners lived in.

The app never waits on the predictive system: a request has a short timeout, and when the API
is slow, down or answers nonsense the owner posts their first draft at once. After a failure
the app does not ask again for ``cooldown_s`` (a down API then costs nothing at all), and every
such post is counted by reason (``stats()``), so the demo can report how often it happened.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, NamedTuple, Protocol

ADVISED = "advised"
NO_ADVICE = "no_advice"
TIMEOUT = "timeout"
UNAVAILABLE = "unavailable"
BAD_ANSWER = "bad_answer"
COOLDOWN = "cooldown"
FIRST_DRAFT_REASONS = (TIMEOUT, UNAVAILABLE, BAD_ANSWER, COOLDOWN)


class Choice(NamedTuple):
    index: int
    arm: str | None  # the world the answer came from; None when the app posted without advice
    outcome: str  # ADVISED, NO_ADVICE, or why the first draft was posted


class Advisor(Protocol):
    def choose(self, drafts: list[dict[str, Any]]) -> Choice: ...

    def stats(self) -> dict[str, Any]: ...


class FirstDraft:
    """The app without Pooch Predictor: the owner posts what they drafted first."""

    def choose(self, drafts: list[dict[str, Any]]) -> Choice:
        return Choice(0, None, NO_ADVICE)

    def stats(self) -> dict[str, Any]:
        return {}


class WhatIfAdvisor:
    """Asks the scorer's what-if API; falls back to the first draft at once on any trouble."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.15,
        cooldown_s: float = 1.0,
        client: Any = None,
        monotonic=time.monotonic,
    ) -> None:
        import httpx

        self._httpx = httpx
        self._client = client or httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s)
        self._cooldown_s = cooldown_s
        self._monotonic = monotonic
        self._quiet_until = 0.0
        self._lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self.arms: Counter[str] = Counter()
        self.latencies_ms: list[float] = []

    def choose(self, drafts: list[dict[str, Any]]) -> Choice:
        now = self._monotonic()
        if now < self._quiet_until:
            return self._first(COOLDOWN)
        t0 = time.perf_counter()
        try:
            resp = self._client.post("/v1/predict", json={"candidates": drafts})
        except self._httpx.TimeoutException:
            return self._first(TIMEOUT, cool=True)
        except self._httpx.HTTPError:
            return self._first(UNAVAILABLE, cool=True)
        took = (time.perf_counter() - t0) * 1000
        try:
            body = resp.json() if resp.status_code == 200 else None
            best = int(body["best_index"]) if body else -1
            arm = next(p["arm"] for p in body["predictions"] if p["index"] == best) if body else None
        except (ValueError, KeyError, TypeError, StopIteration):
            best, arm = -1, None
        if not 0 <= best < len(drafts) or arm is None:
            return self._first(UNAVAILABLE if resp.status_code >= 500 else BAD_ANSWER, cool=True)
        with self._lock:
            self.outcomes[ADVISED] += 1
            self.arms[arm] += 1
            if len(self.latencies_ms) < 200_000:
                self.latencies_ms.append(took)
        return Choice(best, arm, ADVISED)

    def _first(self, reason: str, *, cool: bool = False) -> Choice:
        with self._lock:
            self.outcomes[reason] += 1
            if cool:
                self._quiet_until = self._monotonic() + self._cooldown_s
        return Choice(0, None, reason)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            asked = sum(self.outcomes.values())
            first = sum(self.outcomes[r] for r in FIRST_DRAFT_REASONS)
            lat = sorted(self.latencies_ms)
        return {
            "posts": asked,
            "advised": self.outcomes[ADVISED],
            "first_draft_posted": first,
            "first_draft_share": first / asked if asked else 0.0,
            "first_draft_by_reason": {r: self.outcomes[r] for r in FIRST_DRAFT_REASONS if self.outcomes[r]},
            "advised_by_arm": dict(self.arms),
            "latency_ms_p50": lat[len(lat) // 2] if lat else None,
            "latency_ms_p99": lat[int(len(lat) * 0.99)] if lat else None,
        }

    def close(self) -> None:
        self._client.close()
