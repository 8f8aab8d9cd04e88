"""A simulated Sniffable run written straight to the fact topics, as the collector would write
its good events: for tests of what comes after the collector."""

from __future__ import annotations

from libs.common.kafka.producer import Producer
from libs.common.serde import serde
from libs.common.topics import LIKES, PUPDATES
from sniffable import SimConfig, Simulation

START_MS = 1_795_000_000_000


def facts_from_simulation(settings, n_events: int, seed: int, *, write: bool = True):
    """Good simulated events as the collector would write them, on the facts topics (or, with
    ``write=False``, only returned: a test writing them in parts)."""
    sim = Simulation(SimConfig(seed=seed, start_ms=START_MS, max_events=n_events, bad_share=0.0))
    producer = Producer(settings, name="sim-facts")
    pupdates, likes = [], []
    for ev in sim.events():
        payload = {k: v for k, v in ev.json_payload.items() if k != "schema_version"}
        if ev.kind == "pupdate":
            if payload.get("dog") is None:  # app 1.x: the collector fills the profile it knows
                dog = sim.world.dog(payload["dog_id"])
                payload["dog"] = {"breed": dog.breed_entered, "size": dog.size, "age_months": None}
            fact = {
                "caption": None,
                "photo_filter": None,
                "country": None,
                **payload,
                "raw_schema": "",
                "collected_at": ev.event_time_ms,
            }
            fact["dog"].setdefault("age_months", None)
            pupdates.append(fact)
            if write:
                producer.produce(
                    settings.topic(PUPDATES), serde("pupdate").encode(fact), key=fact["pupdate_id"]
                )
        elif ev.kind == "like":
            fact = {"app_version": "unknown", **payload, "collected_at": ev.event_time_ms}
            likes.append(fact)
            if write:
                producer.produce(settings.topic(LIKES), serde("like").encode(fact), key=fact["pupdate_id"])
    producer.flush(60)
    return pupdates, likes
