"""Series carrying a model_version stay bounded however many versions were ever published."""

from __future__ import annotations

from prometheus_client import REGISTRY

from services.scorer import metrics as scorer_m
from services.supervisor import metrics as supervisor_m


def series(name: str, **labels: str) -> list[dict]:
    return [
        s.labels
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def test_scorer_keeps_series_only_for_the_versions_serving():
    for i in range(50):
        v = f"bounded-v{i}"
        scorer_m.PREDICTIONS.labels("stream", "champion", v).inc()
        scorer_m.INVALID_OUTPUTS.labels(v).inc()
        scorer_m.SERVING.labels("v1", "champion", v).set(1)
        scorer_m.forget_versions({v})  # a swap: only this one serves now
    scorer_m.PREDICTIONS.labels("stream", "baseline", "none").inc()
    versions = {s["model_version"] for s in series("pooch_scorer_predictions_total")}
    assert versions == {"bounded-v49", "none"}
    assert {s["model_version"] for s in series("pooch_scorer_invalid_outputs_total")} == {"bounded-v49"}
    assert {s["model_version"] for s in series("pooch_scorer_serving_info")} == {"bounded-v49"}


def test_end_to_end_latency_decodes_posted_at():
    from services.scorer.codec import zigzag

    before = REGISTRY.get_sample_value("pooch_scorer_end_to_end_seconds_count") or 0.0
    slow = REGISTRY.get_sample_value("pooch_scorer_end_to_end_seconds_bucket", {"le": "2.5"}) or 0.0
    now = 1_800_000_000_000
    scorer_m.observe_end_to_end([zigzag(now - 2000), zigzag(now - 100_000)], now)
    assert REGISTRY.get_sample_value("pooch_scorer_end_to_end_seconds_count") == before + 2
    # 2 s lands at or under 2.5 s, 100 s does not.
    assert REGISTRY.get_sample_value("pooch_scorer_end_to_end_seconds_bucket", {"le": "2.5"}) == slow + 1


def test_end_to_end_latency_samples_large_batches():
    from services.scorer.codec import zigzag

    before = REGISTRY.get_sample_value("pooch_scorer_end_to_end_seconds_count") or 0.0
    now = 1_800_000_000_000
    scorer_m.observe_end_to_end([zigzag(now - 500)] * 5000, now)
    observed = REGISTRY.get_sample_value("pooch_scorer_end_to_end_seconds_count") - before
    assert scorer_m.E2E_SAMPLE <= observed <= 2 * scorer_m.E2E_SAMPLE


def test_supervisor_status_follows_the_versions_in_the_windows():
    exporter = supervisor_m.Exporter()
    statuses = {f"old-{i}": "retired" for i in range(100)} | {"live": "active", "bad": "paused"}
    exporter.versions_health({"live": {"predictions": 10}, "bad": {"predictions": 5}})
    exporter.status(statuses)
    exported = {(s["model_version"], s["status"]) for s in series("pooch_supervisor_model_status")}
    assert exported == {("live", "active"), ("bad", "paused")}
    assert REGISTRY.get_sample_value("pooch_supervisor_models", {"status": "retired"}) == 100
    assert REGISTRY.get_sample_value("pooch_supervisor_models", {"status": "paused"}) == 1
    exporter.versions_health({"live": {"predictions": 10}})  # "bad" left the windows
    exporter.status(statuses)
    assert {s["model_version"] for s in series("pooch_supervisor_model_status")} == {"live"}
