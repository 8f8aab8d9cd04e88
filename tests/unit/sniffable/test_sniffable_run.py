"""The runner: pacing on the virtual clock, stopping, and a report that says exactly what was sent."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
import typer
from typer.testing import CliRunner

from sniffable import (
    DUPLICATE,
    LIKE,
    PUPDATE,
    HttpSink,
    ListSink,
    NullSink,
    SimConfig,
    SimEvent,
    Simulation,
    SimulationReport,
    events_log_path,
    run,
)
from sniffable.clock import VirtualClock, diurnal_factor
from tooling.cli.simulate import simulate

START = 1_700_000_000_000


class FakeClock:
    """Wall time that only moves when the runner sleeps (plus a tick per reading)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        assert s > 0
        self.now += s
        self.slept += s


class TimedSink(ListSink):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.at: list[float] = []

    def send(self, event: SimEvent) -> None:
        super().send(event)
        self.at.append(self.clock.now)


def cfg(**kw) -> SimConfig:
    return SimConfig(**({"seed": 3, "start_ms": START, "max_events": 3_000, "bad_share": 0.05} | kw))


def test_report_lists_exactly_what_was_sent(tmp_path):
    sink = ListSink()
    report = run(cfg(), sink, report_path=tmp_path / "r.json")
    events = sink.events
    assert report.sent == len(events) == 3_000
    assert report.stopped_by == "events"
    assert report.good_pupdate_ids == [e.event_id for e in events if e.kind == PUPDATE]
    assert report.good_like_ids == [e.event_id for e in events if e.kind == LIKE]
    assert report.duplicate_ids == [e.event_id for e in events if e.kind == DUPLICATE]
    assert [(b.kind, b.event_id) for b in report.bad] == [(e.kind, e.event_id) for e in events if e.bad]
    assert report.bad_total + report.duplicates + report.good_pupdates + report.good_likes == 3_000
    assert sum(report.sent_by_topic.values()) == 3_000
    assert report.sent_by_kind[PUPDATE] == report.good_pupdates
    assert report.ids_complete
    assert report.virtual_span_s > 0
    assert set(report.sent_by_schema) == {
        "pupdate_raw.v1",
        "pupdate_raw.v2",
        "pupdate_raw.v3",
        "like_raw.v1",
        "like_raw.v2",
    }
    # the JSON report reads back, and the events log has one line per record
    again = SimulationReport.read(tmp_path / "r.json")
    assert again.good_like_ids == report.good_like_ids and again.bad == report.bad
    lines = events_log_path(tmp_path / "r.json").read_text().splitlines()
    assert len(lines) == 3_000
    first_pupdate = next(json.loads(x) for x in lines if json.loads(x)["kind"] == PUPDATE)
    assert first_pupdate["expected_likes"] > 0 and first_pupdate["dog_id"].startswith("dog_")
    assert all(
        "sha256" in json.loads(x)
        for x in lines
        if json.loads(x)["kind"] not in ("pupdate", "like", "duplicate")
    )


def test_id_lists_are_capped(tmp_path):
    report = run(cfg(), ListSink(), id_cap=10, report_path=tmp_path / "r.json")
    assert not report.ids_complete
    assert len(report.good_like_ids) == 10
    assert report.good_likes > 10
    assert len(events_log_path(tmp_path / "r.json").read_text().splitlines()) == 3_000


def test_paced_run_sends_each_event_when_the_virtual_clock_reaches_it():
    clock = FakeClock()
    config = cfg(rate=50.0, time_scale=600.0, max_events=500)
    sink = TimedSink(clock)
    sim = Simulation(config)
    report = run(config, sink, simulation=sim, sleep=clock.sleep, monotonic=clock.monotonic)
    vc = VirtualClock(sim.start_ms, 600.0)
    for e, at in zip(sink.events, sink.at, strict=True):
        assert at == pytest.approx(max(vc.wall_offset_s(e.send_ms), 0.0), abs=1e-6)
    assert clock.slept > 0
    assert report.sent == 500 and report.sink["max_lag_s"] == 0


def test_paced_rate_is_close_to_the_asked_rate_over_days():
    """Posting density is calibrated so the average rate is the one asked for (likes lag
    posts by hours and follow a heavy tail, so it takes simulated days to average out)."""
    clock = FakeClock()
    days = 15
    config = cfg(rate=20.0, time_scale=86_400 / 60, max_events=None, duration_s=60.0 * days, bad_share=0.0)
    report = run(config, NullSink(), sleep=clock.sleep, monotonic=clock.monotonic)
    assert report.stopped_by == "duration"
    assert report.sent / (60.0 * days) == pytest.approx(20.0, rel=0.25)
    assert report.virtual_span_s == pytest.approx(days * 86_400, rel=0.01)


def test_duration_and_stop_end_the_run():
    clock = FakeClock()
    config = cfg(rate=10.0, max_events=None, duration_s=5.0)
    sink = TimedSink(clock)
    report = run(config, sink, sleep=clock.sleep, monotonic=clock.monotonic)
    assert report.stopped_by == "duration"
    assert all(at < 5.0 for at in sink.at)

    stop = threading.Event()
    stop.set()
    assert run(cfg(max_events=None), ListSink(), stop=stop).stopped_by == "stopped"


def test_unpaced_duration_stops_an_endless_run():
    report = run(cfg(max_events=None, duration_s=0.3), ListSink())
    assert report.stopped_by == "duration"
    assert report.sent > 1_000


def test_virtual_clock_and_diurnal_rate():
    vc = VirtualClock(START, 3600.0)
    assert vc.wall_offset_s(START + 3_600_000) == 1.0
    assert vc.virtual_ms(2.0) == START + 7_200_000
    day = [diurnal_factor(h * 3_600_000) for h in range(24)]
    assert sum(day) / 24 == pytest.approx(1.0)
    assert max(day) > 1.3 and min(day) < 0.7
    with pytest.raises(ValueError):
        VirtualClock(START, 0)


def test_http_sink_posts_json_with_the_key_and_batches_good_events():
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        body = request.content
        try:
            payload = json.loads(body)
        except ValueError:
            return httpx.Response(400, json={"reason": "undecodable"})
        items = payload if isinstance(payload, list) else [payload]
        if any(not isinstance(p, dict) or p.get("schema_version", 0) > 3 for p in items):
            return httpx.Response(400, json={"reason": "unknown_schema"})
        return httpx.Response(202)

    client = httpx.Client(base_url="http://collector", transport=httpx.MockTransport(handler))
    sink = HttpSink("http://collector", api_key="sekrit", batch=10, client=client)
    config = cfg(
        transport="http",
        max_events=400,
        bad_kinds=("undecodable", "unknown_schema", "duplicate"),
        bad_share=0.1,
    )
    report = run(config, sink)
    assert all(r.headers["X-API-Key"] == "sekrit" for r in requests)
    assert {r.url.path for r in requests} == {"/v1/pupdates", "/v1/likes"}
    posted = []
    for r in requests:
        try:
            payload = json.loads(r.content)
        except ValueError:
            continue
        posted.extend(payload if isinstance(payload, list) else [payload])
    sent_good = {e for e in report.good_like_ids + report.good_pupdate_ids}
    assert sent_good <= {p["event_id"] for p in posted}
    assert any(isinstance(json.loads(r.content), list) for r in requests if r.content.startswith(b"["))
    assert sink.stats()["unexpected"] == 0
    assert report.sink["requests"] == len(requests) < report.sent


def test_http_sink_retries_unavailable_and_counts_unexpected_answers():
    answers = iter([503, 503, 202, 202])
    sleeps: list[float] = []
    client = httpx.Client(
        base_url="http://c", transport=httpx.MockTransport(lambda _: httpx.Response(next(answers)))
    )
    sink = HttpSink("http://c", client=client, sleep=sleeps.append)
    events = list(Simulation(cfg(transport="http", max_events=2, bad_share=0.0)).events())
    sink.send(events[0])
    assert len(sleeps) == 2 and sink.status == {"202": 1}
    bad = events[0]._replace(kind="negative_followers")
    sink.send(bad)  # answered 202 where a 4xx was due
    assert sink.stats()["unexpected"] == 1


def test_cli_runs_into_the_null_sink(tmp_path):
    app = typer.Typer()
    app.command()(simulate)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app,
        [
            "--sink",
            "null",
            "--events",
            "2000",
            "--seed",
            "9",
            "--start-ms",
            str(START),
            "--report",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "records sent" in result.output
    report = json.loads(out.read_text())
    assert report["sent"] == 2000 and report["seed"] == 9
    assert report["config"]["start_ms"] == START

    bad = CliRunner().invoke(app, ["--sink", "null", "--bad-kinds", "missing_field", "--events", "1"])
    assert bad.exit_code == 1
