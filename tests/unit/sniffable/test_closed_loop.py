"""The closed loop of the simulation: owners with several drafts, an advisor picking one.

The likes always come from the hidden truth of the draft actually posted; the app never waits
on the what-if API (a slow or broken API means the first draft, counted by reason); the drafts
the app sends are requests the scorer's what-if API accepts.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from services.scorer.whatif import PredictRequest
from sniffable import PUPDATE, SimConfig, Simulation
from sniffable.advisor import ADVISED, COOLDOWN, TIMEOUT, UNAVAILABLE, Choice, WhatIfAdvisor
from sniffable.truth import expected_likes

BASE = {
    "seed": 11,
    "start_ms": 1_790_000_000_000,
    "max_events": 6_000,
    "bad_share": 0.0,
    "horizon_s": 20.0,
    "n_dogs": 300,
}


class Recorder:
    """Picks by a rule over the drafts' hidden truth, recording every request it saw."""

    def __init__(self, sim: Simulation, pick: str) -> None:
        self.sim, self.pick, self.requests = sim, pick, []

    def choose(self, drafts):
        self.requests.append(drafts)
        mus = [self.sim.expected_likes(d) for d in drafts]
        i = int(np.argmax(mus)) if self.pick == "best" else int(np.argmin(mus))
        return Choice(i, "champion", ADVISED)

    def stats(self):
        return {}


def _pupdates(sim: Simulation):
    return [e for e in sim.events() if e.kind == PUPDATE]


def test_one_draft_is_the_plain_simulation_and_needs_no_advisor():
    plain = [e.value for e in Simulation(SimConfig(**BASE)).events()]
    again = [e.value for e in Simulation(SimConfig(**BASE, drafts=1)).events()]
    assert plain == again


@pytest.mark.parametrize("drafts", [3, 5])
def test_the_posted_draft_is_the_chosen_one_and_its_likes_come_from_the_truth(drafts):
    best = Simulation(SimConfig(**BASE, drafts=drafts))
    best.advisor = rec = Recorder(best, "best")
    posted = _pupdates(best)
    assert len(rec.requests) == len(posted) > 50
    for ev, requests in zip(posted, rec.requests, strict=True):
        assert len(requests) == drafts
        # every draft is something the scorer's what-if API accepts, for the same dog
        PredictRequest.model_validate({"candidates": requests})
        assert {r["dog_id"] for r in requests} == {ev.json_payload["dog_id"]}
        chosen = max(requests, key=lambda r: best.expected_likes(r))
        assert ev.json_payload["hashtags"] == chosen["hashtags"]
        # the truth of the posted record is what the likes are drawn from
        dog = best.world.dog(ev.json_payload["dog_id"])
        assert ev.truth == pytest.approx(expected_likes(ev.json_payload, dog))
    worst = Simulation(SimConfig(**BASE, drafts=drafts))
    worst.advisor = Recorder(worst, "worst")
    mean_best = np.mean([e.truth for e in posted])
    mean_worst = np.mean([e.truth for e in _pupdates(worst)])
    # the drafts differ enough for the choice to matter (the world draws them, not the test)
    assert mean_best > 1.2 * mean_worst


def test_a_stream_seed_continues_the_same_world_with_new_pupdates():
    history = Simulation(SimConfig(**BASE))
    live = Simulation(SimConfig(**BASE, stream_seed=99))
    assert [d.dog_id for d in history.world.dogs] == [d.dog_id for d in live.world.dogs]
    ids_history = {e.key for e in _pupdates(history)}
    ids_live = {e.key for e in _pupdates(live)}
    assert ids_history and ids_live and not ids_history & ids_live


def _answer(best: int, arm: str):
    return {
        "predictions": [{"index": best, "arm": arm, "predicted_likes": 9.0}, {"index": 1 - best, "arm": arm}],
        "best_index": best,
    }


def test_the_advisor_posts_the_best_draft_and_names_the_world():
    transport = httpx.MockTransport(lambda req: httpx.Response(200, json=_answer(1, "baseline")))
    adv = WhatIfAdvisor("http://scorer", client=httpx.Client(transport=transport, base_url="http://scorer"))
    assert adv.choose([{"dog_id": "a"}, {"dog_id": "a"}]) == Choice(1, "baseline", ADVISED)
    s = adv.stats()
    assert s["advised"] == 1 and s["first_draft_posted"] == 0 and s["advised_by_arm"] == {"baseline": 1}


def test_a_slow_or_broken_api_means_the_first_draft_at_once_and_is_counted():
    clock = [0.0]

    def slow(req):
        raise httpx.ReadTimeout("too slow", request=req)

    adv = WhatIfAdvisor(
        "http://scorer",
        client=httpx.Client(transport=httpx.MockTransport(slow), base_url="http://scorer"),
        cooldown_s=1.0,
        monotonic=lambda: clock[0],
    )
    drafts = [{"dog_id": "a"}, {"dog_id": "a"}]
    assert adv.choose(drafts) == Choice(0, None, TIMEOUT)
    # within the cooldown the app does not even ask: the owner posts at once
    clock[0] = 0.5
    assert adv.choose(drafts) == Choice(0, None, COOLDOWN)
    clock[0] = 1.5
    assert adv.choose(drafts).outcome == TIMEOUT
    broken = WhatIfAdvisor(
        "http://scorer",
        client=httpx.Client(
            transport=httpx.MockTransport(lambda r: httpx.Response(503, json={})), base_url="http://scorer"
        ),
    )
    assert broken.choose(drafts) == Choice(0, None, UNAVAILABLE)
    nonsense = WhatIfAdvisor(
        "http://scorer",
        client=httpx.Client(
            transport=httpx.MockTransport(lambda r: httpx.Response(200, json=_answer(7, "champion"))),
            base_url="http://scorer",
        ),
    )
    assert nonsense.choose(drafts).index == 0
    s = adv.stats()
    assert s["posts"] == 3 and s["first_draft_posted"] == 3 and s["first_draft_share"] == 1.0
    assert s["first_draft_by_reason"] == {"timeout": 2, "cooldown": 1}


def test_refused_connections_cost_nothing():
    from tooling.stack.processes import free_port

    adv = WhatIfAdvisor(f"http://127.0.0.1:{free_port()}", timeout_s=0.5)
    assert adv.choose([{"dog_id": "a"}]) == Choice(0, None, UNAVAILABLE)


def test_closing_posting_ends_the_stream_once_the_last_likes_are_out():
    sim = Simulation(SimConfig(**(BASE | {"max_events": None})))
    posted: set[str] = set()
    likes_after_close = 0
    events = sim.events()
    for n, ev in enumerate(events):
        if ev.kind == PUPDATE:
            assert not sim.posting_closed
            posted.add(ev.key)
        elif sim.posting_closed and ev.kind == "like":
            likes_after_close += 1
            assert ev.key in posted
        if n == 3_000:
            sim.close_posting()
    assert sim.posting_closed and likes_after_close > 0  # the stream ended by itself
