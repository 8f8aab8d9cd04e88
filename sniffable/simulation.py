"""The simulated Sniffable as a pure generator of events in send order.

``Simulation(config).events()`` does no I/O, never sleeps and never reads the wall clock
(except once, for a default ``start_ms``): pacing is the runner's business. Each call of
``events()`` starts from scratch with fresh rngs and state, so it can be replayed, and the
same seed and config give the same events, byte for byte.

The one exception to purity is the closed loop: with ``drafts`` > 1 each owner draws several
candidate drafts (:mod:`sniffable.drafts`) and an injected advisor (:mod:`sniffable.advisor`:
the app asking the what-if API) picks the one posted; the likes still come from the hidden
truth of the draft actually posted. Without an advisor the owner posts the first draft.

Randomness: the world comes from ``numpy.random.default_rng([seed, 0])`` (vectorised), the
event loop from ``random.Random`` seeded from the seed (fast scalar draws) plus
``default_rng([seed, 1])`` for the per-pupdate negative-binomial draw. No global rng is used.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator

import numpy as np

from libs.common.topics import LIKES_RAW, PUPDATES_RAW

from . import truth
from .advisor import Advisor, FirstDraft
from .app import ALL_APPS, APP_VERSIONS, APP_WEIGHTS, WEB, WEB_INDEX, Codec, like_record, pupdate_record
from .badinput import BadInput, History
from .clock import DAY_MS, diurnal_factor
from .config import SimConfig
from .drafts import DraftOption, what_if_request
from .events import LIKE, PUPDATE, SimEvent
from .ids import Ids
from .timeline import Timeline
from .truth import LikeTiming
from .world import POSTS_PER_DOG_PER_DAY, World

_INF = float("inf")
_CAPTION_SHARE = 0.7
_FOLLOW_BACK = 0.03  # new followers per like received
_MAX_TAGS = 30


def _poisson_small(rng: random.Random, lam: float) -> int:
    """Knuth's method: fine for the handful of hashtags a post has."""
    limit = math.exp(-lam)
    k = 0
    p = rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class Simulation:
    """A deterministic Sniffable; see the module docstring."""

    def __init__(self, config: SimConfig, *, advisor: Advisor | None = None) -> None:
        self.config = config
        self.advisor: Advisor = advisor or FirstDraft()
        self.posting_closed = False  # set from another thread: owners stop posting, likes still come
        self.start_ms = config.start_ms if config.start_ms is not None else int(time.time() * 1000)
        self.world = World(
            np.random.default_rng([config.seed, 0]),
            n_dogs=config.n_dogs,
            n_owners=config.n_owners or max(1, config.n_dogs * 3 // 4),
            n_sniffers=config.n_sniffers,
            app_weights=APP_WEIGHTS,
        )
        self.codec = Codec()
        self.timing = LikeTiming(config.horizon_ms, config.late_share)
        self._dog_eta = [truth.dog_effect(d) for d in self.world.dogs]
        self.mean_likes = self._estimate_mean_likes()
        self.pupdates_per_ms = self._posting_density()

    # -- calibration ------------------------------------------------------------------------

    def _estimate_mean_likes(self, n: int = 4_000) -> float:
        """Mean likes (late ones too) per pupdate, by Monte Carlo on a throwaway rng.

        Posts are spread over a day so the hour-of-day effect averages out.
        """
        rng = random.Random(f"calibrate:{self.config.seed}")
        world = self.world
        total = 0.0
        for i in range(n):
            d = world.pick_dog(rng.random())
            dog = world.dogs[d]
            app = ALL_APPS[world.owners[dog.owner].app]
            at = self.start_ms + i * DAY_MS // n
            *_, mu = self._compose(rng, d, app.pupdate_schema, at, world.followers[d])
            total += self.timing.total_mean(mu)
        return total / n

    def _posting_density(self) -> float:
        c = self.config
        if c.pupdates_per_hour:
            return c.pupdates_per_hour / 3_600_000
        if c.rate > 0:
            events_per_pupdate = (1.0 + self.mean_likes) / (1.0 - c.bad_share)
            return c.rate / (c.time_scale * events_per_pupdate) / 1000
        return c.n_dogs * POSTS_PER_DOG_PER_DAY / 86_400_000

    def expected_likes(self, pupdate: dict, dog_id: str | None = None) -> float:
        """Ground-truth expected likes within the horizon of a pupdate from this world."""
        return truth.expected_likes(pupdate, self.world.dog(dog_id or pupdate["dog_id"]))

    # -- one pupdate ------------------------------------------------------------------------

    def _compose(self, rng: random.Random, d: int, schema: int, posted_at: int, followers: int):
        """What an owner posts: hashtags, caption, filter, and its true expected likes."""
        world = self.world
        dog = world.dogs[d]
        owner = world.owners[dog.owner]
        n_tags = min(_poisson_small(rng, owner.tag_mean), _MAX_TAGS)
        hashtags = world.pick_hashtags(rng, owner, n_tags)
        caption = photo_filter = None
        if schema >= 2:
            if rng.random() < _CAPTION_SHARE:
                caption = world.make_caption(rng, dog)
            photo_filter = world.pick_filter(rng.random())
        eta = self._dog_eta[d] + truth.post_effect(
            followers, hashtags, photo_filter, posted_at, dog.country, caption
        )
        return dog, hashtags, caption, photo_filter, truth.mu_from_eta(eta)

    # -- the stream -------------------------------------------------------------------------

    def close_posting(self) -> None:
        """No new pupdates from now on; the likes of those posted keep coming until the last one.

        A live run ended this way (instead of cut) gives every pupdate its whole label horizon.
        """
        self.posting_closed = True

    def events(self) -> Iterator[SimEvent]:
        """Every record the app sends, in send order; finite with ``max_events`` or once
        :meth:`close_posting` was called and the last likes are out."""
        c = self.config
        world = self.world
        codec = self.codec
        stream_seed = c.seed if c.stream_seed is None else c.stream_seed
        rng = random.Random(f"sniffable:{stream_seed}")
        nprng = np.random.default_rng([stream_seed, 1])
        n_drafts = c.drafts
        advisor = self.advisor
        ids = Ids(rng)
        followers = list(world.followers)
        history = History(len(world.dogs), followers)
        bad = BadInput(c.kinds, rng, ids, world, codec, history, c.transport)
        timeline = Timeline(rng, self.timing, len(world.sniffer_ids), c.jitter_share, c.max_jitter_ms)
        owner_app = list(world.owner_app)
        sniffer_ids = world.sniffer_ids
        sniffer_app = world.sniffer_app
        like_apps = [(a.like_schema, a.version) for a in ALL_APPS]
        top_app = len(APP_VERSIONS) - 1
        bad_share = c.bad_share if bad.kinds else 0.0
        upgrade = c.upgrade_share
        density = self.pupdates_per_ms
        budget = c.max_events
        drain = budget is not None and c.draining
        shape = truth.DISPERSION
        recent_sent = history.recent_sent
        recent_pupdates = history.recent_pupdates
        encode_like = codec.encode_like
        encode_pupdate = codec.encode_pupdate
        event_id = ids.event

        def gap(at: int) -> int:
            return int(-math.log(1.0 - rng.random()) / (density * diurnal_factor(at)))

        now = self.start_ms
        next_post = now + gap(now)
        scheduled = 0
        emitted = 0
        posting = budget is None or budget > 0
        while budget is None or emitted < budget:
            if bad_share and rng.random() < bad_share:
                ev = bad.make(now)
                if ev is not None:
                    emitted += 1
                    yield ev
                    continue
            if posting and self.posting_closed:
                posting = False
            like = timeline.pop_until(next_post if posting else _INF)
            if like is not None:
                send_ms, liked_at, pid, sniffer = like
                schema, version = like_apps[sniffer_app[sniffer]]
                rec = like_record(
                    schema,
                    event_id=event_id(),
                    pupdate_id=pid,
                    sniffer_id=sniffer_ids[sniffer],
                    liked_at=liked_at,
                    app_version=version,
                )
                ev = SimEvent(
                    LIKES_RAW, pid, encode_like(rec), LIKE, rec["event_id"], liked_at, rec, schema, send_ms
                )
                now = send_ms
            elif posting:
                now = posted_at = next_post
                next_post = posted_at + gap(posted_at)
                d = world.pick_dog(rng.random())
                o = world.dogs[d].owner
                app_i = owner_app[o]
                if upgrade and app_i < top_app and rng.random() < upgrade:
                    app_i = owner_app[o] = app_i + 1
                app = ALL_APPS[app_i] if app_i != WEB_INDEX else WEB
                if app.pupdate_schema == 1 and not history.known[d]:
                    app = WEB
                schema = app.pupdate_schema
                f = followers[d]
                dog, hashtags, caption, photo_filter, mu = self._compose(rng, d, schema, posted_at, f)
                if n_drafts > 1:
                    options = [DraftOption(hashtags, caption, photo_filter, mu)]
                    for _ in range(n_drafts - 1):
                        _, tags_k, caption_k, filter_k, mu_k = self._compose(rng, d, schema, posted_at, f)
                        options.append(DraftOption(tags_k, caption_k, filter_k, mu_k))
                    requests = [
                        what_if_request(dog, o, schema=schema, posted_at=posted_at, followers=f)
                        for o in options
                    ]
                    chosen = options[advisor.choose(requests).index]
                    hashtags, caption, photo_filter, mu = (
                        chosen.hashtags,
                        chosen.caption,
                        chosen.photo_filter,
                        chosen.mu,
                    )
                lam = self.timing.total_mean(mu) * nprng.gamma(shape, 1.0 / shape)
                n_likes = int(nprng.poisson(lam))
                pid = ids.pupdate()
                rec = pupdate_record(
                    schema,
                    event_id=event_id(),
                    pupdate_id=pid,
                    dog=dog,
                    posted_at=posted_at,
                    hashtags=hashtags,
                    followers=f,
                    app_version=app.version,
                    caption=caption,
                    photo_filter=photo_filter,
                )
                ev = SimEvent(
                    PUPDATES_RAW,
                    pid,
                    encode_pupdate(rec),
                    PUPDATE,
                    rec["event_id"],
                    posted_at,
                    rec,
                    schema,
                    posted_at,
                    truth=mu,
                )
                n_likes = timeline.add(pid, posted_at, n_likes)
                followers[d] = f + int(n_likes * _FOLLOW_BACK + rng.random())
                if schema >= 2:
                    history.profile_sent(d)
                recent_pupdates.append((pid, posted_at))
                scheduled += 1 + n_likes
                if drain and scheduled >= (budget or 0):
                    posting = False
            else:
                return
            recent_sent.append(ev)
            emitted += 1
            yield ev
