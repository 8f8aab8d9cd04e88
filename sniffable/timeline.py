"""Send order: the posting process merged with every pupdate's pending likes, in event time.

Memory stays proportional to the pupdates still collecting likes, not to their likes: each
pupdate holds one heap entry, a :class:`LikeStream` that draws its like times lazily in
increasing order (sequential order statistics of uniforms through the monotone inverse CDF of
:class:`~sniffable.truth.LikeTiming`) and its sniffers as ``a + k*b mod n`` with ``b``
coprime to ``n``, so no sniffer likes one pupdate twice without keeping a set per pupdate.

A share of likes arrives late in *send* order (``jitter``): the phone was offline, a retry
came later. They are re-queued at ``liked_at + jitter``, so the stream is in event-time order
except for those, and a like is never sent before its pupdate.
"""

from __future__ import annotations

import heapq
import math
import random
from itertools import count

from .truth import LikeTiming

_READY = 0
_STREAM = 1


class LikeStream:
    """The likes one pupdate still has to receive."""

    __slots__ = ("a", "b", "k", "left", "posted_at", "pupdate_id", "u")

    def __init__(self, pupdate_id: str, posted_at: int, n: int, a: int, b: int) -> None:
        self.pupdate_id = pupdate_id
        self.posted_at = posted_at
        self.left = n
        self.u = 0.0
        self.a = a
        self.b = b
        self.k = 0


class Timeline:
    """Pending likes in the order they are to be sent; see the module docstring."""

    def __init__(
        self,
        rng: random.Random,
        timing: LikeTiming,
        n_sniffers: int,
        jitter_share: float,
        max_jitter_ms: int,
    ) -> None:
        self._rng = rng
        self._timing = timing
        self._n = n_sniffers
        self._jitter_share = jitter_share
        self._max_jitter_ms = max_jitter_ms
        self._heap: list[tuple[int, int, int, object]] = []
        self._seq = count()
        self.pending_pupdates = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, pupdate_id: str, posted_at: int, n_likes: int) -> int:
        """Schedule ``n_likes`` likes of a pupdate just sent; returns how many (capped)."""
        n = min(n_likes, self._n)
        if n <= 0:
            return 0
        rng = self._rng
        a = int(rng.random() * self._n)
        b = 1
        if self._n > 2:
            b = 1 + int(rng.random() * (self._n - 1))
            while math.gcd(b, self._n) != 1:
                b = 1 + int(rng.random() * (self._n - 1))
        stream = LikeStream(pupdate_id, posted_at, n, a, b)
        heapq.heappush(self._heap, (self._advance(stream), next(self._seq), _STREAM, stream))
        self.pending_pupdates += 1
        return n

    def _advance(self, s: LikeStream) -> int:
        # the smallest of `left` uniforms on (u, 1): 1 - (1 - u) * W ** (1 / left)
        w = 1.0 - self._rng.random()
        s.u = 1.0 - (1.0 - s.u) * w ** (1.0 / s.left)
        s.left -= 1
        return s.posted_at + self._timing.delay_ms(min(s.u, 0.999999999999))

    def pop_until(self, limit_ms: float) -> tuple[int, int, str, int] | None:
        """The next like due at or before ``limit_ms``: (send_ms, liked_at, pupdate_id, sniffer).

        ``None`` when nothing is due by then.
        """
        heap = self._heap
        rng = self._rng
        while heap and heap[0][0] <= limit_ms:
            send_ms, seq, tag, item = heap[0]
            if tag == _READY:
                heapq.heappop(heap)
                liked_at, pupdate_id, sniffer = item  # type: ignore[misc]
                return send_ms, liked_at, pupdate_id, sniffer
            s: LikeStream = item  # type: ignore[assignment]
            sniffer = (s.a + s.k * s.b) % self._n
            s.k += 1
            if s.left:
                heapq.heapreplace(heap, (self._advance(s), seq, _STREAM, s))
            else:
                heapq.heappop(heap)
                self.pending_pupdates -= 1
            if self._jitter_share and rng.random() < self._jitter_share:
                late = send_ms + 1 + int(rng.random() * self._max_jitter_ms)
                heapq.heappush(heap, (late, next(self._seq), _READY, (send_ms, s.pupdate_id, sniffer)))
                continue
            return send_ms, send_ms, s.pupdate_id, sniffer
        return None
