"""``pooch demo``: the main job. The local stack, every service, the Sniffable simulation in real
time with a label horizon of seconds, and a report read back from the topics.

Each run uses its own topic prefix (``demo<time>.``), so its report counts only its own
events and the topics stay behind for inspection (``POOCH_TOPIC_PREFIX=<prefix> pooch topics``).
"""

from __future__ import annotations

import collections
import time

import typer
from rich.table import Table

from libs.common.kafka.replay import read_topic
from libs.common.serde import SerdeError, serde
from libs.common.topics import (
    DEADLETTERS,
    FEATURES,
    INSTANCES,
    LIKES,
    LIKES_RAW,
    MODELS,
    PREDICTIONS,
    PUPDATES,
    PUPDATES_RAW,
)
from sniffable import KafkaSink, SimConfig, run
from tooling.cli.output import console, expected_errors, progress
from tooling.stack.manager import INFRA, SERVICES, LocalStack


def demo_environment(prefix: str, config: SimConfig) -> dict[str, str]:
    """Service settings for a run where a simulated horizon passes in wall seconds."""
    return {
        "POOCH_TOPIC_PREFIX": prefix,
        "POOCH_LOG_FORMAT": "json",
        "POOCH_FEATURIZER_HORIZON_MS": str(config.horizon_ms),
        # The simulation delays some likes by up to this much event time (phones offline).
        "POOCH_FEATURIZER_LATENESS_MS": str(config.max_jitter_ms),
        "POOCH_FEATURIZER_IDLE_FLUSH_MS": "3000",
        "POOCH_FEATURIZER_VERSIONS": '["v1","v2"]',
        "POOCH_TRAINER_MIN_INSTANCES": "150",
        "POOCH_TRAINER_RETRAIN_EVERY": "400",
        "POOCH_TRAINER_RETRAIN_INTERVAL_S": "20",
        "POOCH_SUPERVISOR_LABEL_HORIZON_S": str(int(config.horizon_s)),
    }


@expected_errors
def demo(
    seconds: float = typer.Option(90.0, "--seconds", min=5, help="Wall seconds of simulated traffic."),
    rate: float = typer.Option(150.0, "--rate", min=1, help="Average records per wall second."),
    horizon: float = typer.Option(
        20.0, "--horizon", min=1, help="Label horizon in seconds (24 h in production)."
    ),
    seed: int = typer.Option(7, "--seed", help="Simulation seed."),
    bad_share: float = typer.Option(0.02, "--bad-share", min=0, max=0.9, help="Share of bad input."),
    drain: float = typer.Option(30.0, "--drain", min=0, help="Seconds to let the services catch up."),
    keep: bool = typer.Option(False, "--keep", help="Leave the services running afterwards."),
) -> None:
    """Run the whole system on a simulated Sniffable and report what happened."""
    prefix = f"demo{time.strftime('%Y%m%d%H%M%S')}."
    # Real time: the collector rejects events from the future, so the simulated clock runs at
    # wall speed and the label horizon is what shrinks (seconds instead of 24 h).
    config = SimConfig(
        seed=seed,
        rate=rate,
        time_scale=1.0,
        horizon_s=horizon,
        duration_s=seconds,
        bad_share=bad_share,
    )
    stack = LocalStack(report=progress)
    stack.up(components=INFRA, topic_prefix=prefix)
    stack.service_env = demo_environment(prefix, config)
    started = []
    try:
        for name in SERVICES:
            stack.stop_service(name)  # a service running with other settings is restarted
            if stack.start_service(name):
                started.append(name)
        settings = stack.common_settings(prefix)
        progress(
            f"simulating {seconds:.0f} s at {rate:.0f} records/s, horizon {horizon:g} s, prefix {prefix}"
        )
        sink = KafkaSink(settings)
        try:
            report = run(config, sink, progress=True, console=console)
        finally:
            sink.close()
        console.print(report.table())
        progress(f"letting the services catch up for up to {drain:.0f} s")
        _wait_for_features(settings, report, drain)
        _print_report(settings)
    finally:
        if not keep:
            for name in reversed(started):
                stack.stop_service(name)
    console.print(f"topics of this run: POOCH_TOPIC_PREFIX={prefix} pooch topics")


def _count(settings, topic: str) -> int:
    """Records, not offsets: transactional topics also hold commit markers."""
    return len(read_topic(settings, settings.topic(topic), timeout=60))


def _wait_for_features(settings, report, drain: float) -> None:
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline:
        facts = _count(settings, PUPDATES)
        features = len({m.key() for m in read_topic(settings, settings.topic(FEATURES))})
        if facts and features >= facts:
            return
        time.sleep(2)


def _decoded(settings, topic: str, stem: str) -> list[dict]:
    out = []
    for m in read_topic(settings, settings.topic(topic), timeout=60):
        try:
            out.append(serde(stem).decode(m.value()))
        except SerdeError:
            continue
    return out


def _print_report(settings) -> None:
    flow = Table(title="what flowed through the system")
    flow.add_column("topic")
    flow.add_column("records", justify="right")
    flow.add_column("notes")
    dead = _decoded(settings, DEADLETTERS, "dead_letter")
    reasons = collections.Counter(d["reason"] for d in dead)
    features = _decoded(settings, FEATURES, "feature_vector")
    instances = _decoded(settings, INSTANCES, "instance")
    models = _decoded(settings, MODELS, "model_event")
    predictions = _decoded(settings, PREDICTIONS, "prediction")
    for topic in (PUPDATES_RAW, LIKES_RAW, PUPDATES, LIKES):
        flow.add_row(topic, f"{_count(settings, topic):,}", "")
    flow.add_row(DEADLETTERS, f"{len(dead):,}", ", ".join(f"{r} {n}" for r, n in reasons.most_common()))
    by_version = collections.Counter(f["extractor_version"] for f in features)
    flow.add_row(
        FEATURES, f"{len(features):,}", ", ".join(f"{v}: {n}" for v, n in sorted(by_version.items()))
    )
    labelled = [i for i in instances if i["extractor_version"] == "v1"]
    mean_likes = sum(i["likes"] for i in labelled) / len(labelled) if labelled else 0.0
    flow.add_row(INSTANCES, f"{len(instances):,}", f"v1 mean likes {mean_likes:.1f}")
    kinds = collections.Counter(m["kind"] for m in models)
    flow.add_row(MODELS, f"{len(models):,}", ", ".join(f"{k} {n}" for k, n in kinds.items()))
    fallbacks = collections.Counter(p["fallback_reason"] for p in predictions if p["fallback"])
    flow.add_row(PREDICTIONS, f"{len(predictions):,}", ", ".join(f"{r} {n}" for r, n in fallbacks.items()))
    console.print(flow)

    published = [m for m in models if m["kind"] == "PUBLISHED"]
    if published:
        table = Table(title="models published (validation on the newest slice)")
        for col in ("version", "extractor", "MAE", "MAE / baseline", "Poisson deviance"):
            table.add_column(col)
        for m in published:
            metrics = m["metrics"]
            table.add_row(
                m["model_version"],
                m["extractor_version"],
                f"{metrics.get('mae', float('nan')):.2f}",
                f"{metrics.get('mae_ratio_to_baseline', float('nan')):.3f}",
                f"{metrics.get('poisson_deviance', float('nan')):.3f}",
            )
        console.print(table)
    decisions = [m for m in models if m["kind"] != "PUBLISHED"]
    if decisions:
        table = Table(title="decisions on models (supervisor and operators)")
        for col in ("kind", "version", "by", "reason"):
            table.add_column(col)
        for m in decisions:
            table.add_row(m["kind"], m["model_version"], m["actor"], m["reason"][:120])
        console.print(table)
    if predictions:
        arms = Table(title="predictions by arm")
        for col in ("arm", "predictions", "fallbacks", "mean predicted likes"):
            arms.add_column(col)
        by_arm = collections.defaultdict(list)
        for p in predictions:
            by_arm[p["arm"]].append(p)
        for arm, ps in sorted(by_arm.items()):
            arms.add_row(
                arm,
                f"{len(ps):,}",
                f"{sum(p['fallback'] for p in ps):,}",
                f"{sum(p['predicted_likes'] for p in ps) / len(ps):.1f}",
            )
        console.print(arms)
