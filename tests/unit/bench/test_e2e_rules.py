"""The pure parts of bench/e2e.py: percentiles, the sustained-load rule and the rate search."""

from __future__ import annotations

import math

import pytest

from bench.e2e import best_sustained, next_rate, percentile, slope, sustained


def test_percentile_is_nearest_rank_of_measured_values() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([3, 1, 2], 50) == 2  # unsorted input
    assert math.isnan(percentile([], 50))


def test_p99_of_a_tail_is_the_tail() -> None:
    # 2 % of the values are slow: the p99 must be one of them, not an average towards them
    values = [10.0] * 98 + [500.0, 900.0]
    assert percentile(values, 99) == 500.0
    assert percentile(values, 50) == 10.0


def test_slope() -> None:
    assert slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert slope([(0, 4), (1, 4)]) == 0.0
    assert slope([(1, 4)]) == 0.0


def _samples(seconds: float, backlog) -> list[tuple[float, int]]:
    return [(t / 4, int(backlog(t / 4))) for t in range(int(seconds * 4) + 1)]


def test_a_bounded_backlog_is_sustained() -> None:
    # 1,000/s at ~80 ms of latency holds ~80 in flight, with noise
    samples = _samples(20, lambda t: 80 + (15 if int(t * 4) % 2 else -15))
    v = sustained(samples, 1000, offered=20_000, seconds=20)
    assert v.ok, v.why


def test_scheduling_noise_at_a_low_rate_is_sustained() -> None:
    # 100/s on a busy machine: the backlog wanders between 10 and 40, ~6/s of slope over 2.5 s
    samples = _samples(5, lambda t: 10 + 6 * t + (8 if int(t * 4) % 3 else 0))
    assert sustained(samples, 100, offered=500, seconds=5).ok


def test_a_slow_system_at_a_low_rate_is_not_sustained() -> None:
    # serves 60 of 100/s: the backlog grows 40/s
    samples = _samples(20, lambda t: 10 + 40 * t)
    assert not sustained(samples, 100, offered=2000, seconds=20).ok


def test_a_growing_backlog_is_not_sustained() -> None:
    # served 900 of 1,000/s: the backlog grows by 100/s, 10 % of the offered rate
    samples = _samples(20, lambda t: 80 + 100 * t)
    v = sustained(samples, 1000, offered=20_000, seconds=20)
    assert not v.ok and "grew" in v.why


def test_a_large_but_flat_backlog_is_not_sustained() -> None:
    # flat, but 8 s of load waiting: the system fell behind early and never caught up
    samples = _samples(20, lambda t: 8000)
    v = sustained(samples, 1000, offered=20_000, seconds=20)
    assert not v.ok and "reached" in v.why


def test_an_app_that_could_not_offer_the_load_is_not_sustained() -> None:
    samples = _samples(20, lambda t: 50)
    v = sustained(samples, 1000, offered=15_000, seconds=20)
    assert not v.ok and "sent only" in v.why


def test_search_doubles_until_a_failure_then_bisects() -> None:
    tried = {100.0: True, 1000.0: True}
    assert next_rate(tried, max_rate=16_000) == 2000
    tried[2000.0] = True
    assert next_rate(tried, max_rate=16_000) == 4000
    tried[4000.0] = False
    assert next_rate(tried, max_rate=16_000) == 3000
    tried[3000.0] = True
    assert next_rate(tried, max_rate=16_000) == 3500
    tried[3500.0] = False
    # 3,000 and 3,500 are within 17 %; with a 15 % resolution one more bisection
    assert next_rate(tried, max_rate=16_000) == 3250
    tried[3250.0] = True
    assert next_rate(tried, max_rate=16_000) is None
    assert best_sustained(tried) == 3250


def test_search_stops_at_the_max_rate_and_when_even_the_first_rate_failed() -> None:
    assert next_rate({1000.0: True, 2000.0: True}, max_rate=2000) is None
    assert next_rate({1000.0: True}, max_rate=1500) == 1500
    assert next_rate({100.0: False, 1000.0: False}, max_rate=16_000) is None
    assert next_rate({}, max_rate=16_000) is None


def test_search_bisects_below_the_second_fixed_rate() -> None:
    assert next_rate({100.0: True, 1000.0: False}, max_rate=16_000) == 550


def test_a_pass_above_a_failure_does_not_count() -> None:
    assert best_sustained({1000.0: True, 2000.0: False, 3000.0: True}) == 1000
    assert best_sustained({100.0: False}) is None


def test_top_frames_reads_the_loop_thread_of_py_spy_raw_output(tmp_path) -> None:
    from bench.e2e import top_frames

    raw = tmp_path / "profile.txt"
    raw.write_text(
        "thread (11): Thread-1 (serve);Server.run (uvicorn/server.py:60);"
        "EpollSelector.select (selectors.py:468) 90\n"
        "thread (12): Thread-2 (loop);Restarting.run (libs/common/retry.py:158);"
        "CollectorStream.run_once (services/collector/stream.py:169);"
        "Serde.encode (libs/common/serde.py:150) 30\n"
        "thread (12): Thread-2 (loop);Restarting.run (libs/common/retry.py:158);"
        "CollectorStream.run_once (services/collector/stream.py:160);"
        "consume_batch (libs/common/kafka/clients.py:105) 10\n"
    )
    # the HTTP thread has more samples, but the loop is the thread in the service's own code
    assert top_frames(raw) == [
        ("Serde.encode (libs/common/serde.py)", 0.75),
        ("consume_batch (libs/common/kafka/clients.py)", 0.25),
    ]
    assert top_frames(tmp_path / "absent.txt") == []


def test_top_frames_passes_over_a_main_thread_that_only_waits_for_the_loop(tmp_path) -> None:
    # The collector's main thread waits in services/collector/__main__.py for the stream's
    # thread: as many samples, all in its own code, and the profile read it (Condition.wait 100%).
    from bench.e2e import top_frames

    raw = tmp_path / "profile.txt"
    raw.write_text(
        "thread (10): MainThread;<module> (services/collector/__main__.py:9);"
        "main (services/collector/app.py:80);Condition.wait (threading.py:327) 40\n"
        "thread (12): Thread-2 (loop);CollectorStream.run_once (services/collector/stream.py:169);"
        "Serde.encode (libs/common/serde.py:150) 30\n"
        "thread (12): Thread-2 (loop);CollectorStream.run_once (services/collector/stream.py:160);"
        "consume_batch (libs/common/kafka/clients.py:105) 10\n"
    )
    assert top_frames(raw)[0] == ("Serde.encode (libs/common/serde.py)", 0.75)


def test_reconcile_counts_the_whole_run_by_id() -> None:
    import threading
    from types import SimpleNamespace

    from bench.e2e import reconcile

    app = SimpleNamespace(due={"a": 1, "b": 2, "c": 3})
    arrived = {"a": 5.0, "b": 6.0}
    reader = SimpleNamespace(lock=threading.Lock(), doubled=1, delivered=lambda: len(arrived))
    said: list[str] = []
    out = reconcile(app, reader, 0.1, said.append)
    assert out == {"sent": 3, "predicted": 2, "never_predicted": 1, "doubled": 1}
    assert said and "never_predicted" in said[0]
