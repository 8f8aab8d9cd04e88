"""A simulated Sniffable: the app whose pupdates and likes Pooch Predictor learns from.

It behaves like the real one as far as the rest of the system can tell: several app versions
writing older raw schemas at once, heavy-tailed followers, hashtags spelt many ways, posters
all over the world, likes trickling in over the label horizon (some late, some out of order)
and a share of bad input of every kind the collector has to reject. Behind it is a hidden
ground truth (:mod:`sniffable.truth`) that models can be scored against.

The closed loop ("possible worlds"): with ``SimConfig(drafts=k)`` an owner about to post has
``k`` candidate drafts for the dog, drawn by the world (:mod:`sniffable.drafts`), and the app
asks Pooch Predictor's what-if API which to post (:mod:`sniffable.advisor`). The scorer decides
the owner's world by the dog's stable arm: the machine-learned one ranks the drafts by the
model, the historical one by the past average likes of their hashtags. The likes are drawn from
the hidden truth of the draft posted, never from the advice. A slow or down API means the first
draft is posted at once, counted.

Engagement: this simulation models none on purpose. Owners post exactly as often in both worlds
(a dog's posting rate is its own, whatever it was told), so the pupdates per world follow the
arm weights and the whole difference between the worlds is *which* draft gets posted. An
engagement effect (say, owners who got useful advice post more) would be behaviour of the
owners, added here, never a constant in the outcome.

    from sniffable import SimConfig, Simulation, run, KafkaSink

    for ev in Simulation(SimConfig(seed=7, max_events=1_000)).events():
        ...                                    # pure: no I/O, no sleeping
    report = run(SimConfig(seed=7, max_events=1_000), KafkaSink(settings))
"""

from .advisor import Choice, FirstDraft, WhatIfAdvisor
from .badinput import HTTP_KINDS, KAFKA_KINDS
from .config import SimConfig
from .events import DUPLICATE, LIKE, PUPDATE, SimEvent
from .report import BadRecord, SimulationReport
from .run import events_log_path, run
from .simulation import Simulation
from .sinks import HttpSink, KafkaSink, ListSink, NullSink, Sink, SinkUnavailableError
from .truth import expected_likes
from .world import Dog

__all__ = [
    "DUPLICATE",
    "HTTP_KINDS",
    "KAFKA_KINDS",
    "LIKE",
    "PUPDATE",
    "BadRecord",
    "Choice",
    "Dog",
    "FirstDraft",
    "HttpSink",
    "KafkaSink",
    "ListSink",
    "NullSink",
    "SimConfig",
    "SimEvent",
    "Simulation",
    "SimulationReport",
    "Sink",
    "SinkUnavailableError",
    "WhatIfAdvisor",
    "events_log_path",
    "expected_likes",
    "run",
]
