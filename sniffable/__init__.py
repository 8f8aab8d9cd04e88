"""A simulated Sniffable: the app whose pupdates and likes Pooch Predictor learns from.

It behaves like the real one as far as the rest of the system can tell: several app versions
writing older raw schemas at once, heavy-tailed followers, hashtags spelt many ways, posters
all over the world, likes trickling in over the label horizon (some late, some out of order)
and a share of bad input of every kind the collector has to reject. Behind it is a hidden
ground truth (:mod:`sniffable.truth`) that models can be scored against.

    from sniffable import SimConfig, Simulation, run, KafkaSink

    for ev in Simulation(SimConfig(seed=7, max_events=1_000)).events():
        ...                                    # pure: no I/O, no sleeping
    report = run(SimConfig(seed=7, max_events=1_000), KafkaSink(settings))
"""

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
    "Dog",
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
    "events_log_path",
    "expected_likes",
    "run",
]
