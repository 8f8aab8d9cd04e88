"""Builds the Grafana dashboards and the Grafana alert rules of Pooch Predictor.

    python deploy/grafana/build.py           # (re)write the generated files
    python deploy/grafana/build.py --check   # exit 1 if a generated file differs (the suite runs it)

Dashboards are built with grafana-foundation-sdk (Grafana's own typed builders) instead of
hand-edited JSON, and checked against Grafana's dashboard schema by the strict decoder of the
SDK's Go module (deploy/grafana/schemacheck, built by `make tools`). The Grafana alert rules are
derived from the one Prometheus rules file, so both alerting paths fire on the same expressions.

Outputs live inside the Helm chart (deploy/k8s/pooch/files/), because a chart can only read its
own files; docker-compose mounts the same files.
"""

# PromQL reads best on one line, so long query strings are kept whole.
# ruff: noqa: E501

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml

warnings.filterwarnings("ignore", category=DeprecationWarning)  # v1 dashboards: what provisioning reads

from grafana_foundation_sdk.builders import common as common_builders  # noqa: E402
from grafana_foundation_sdk.builders import dashboard as dash  # noqa: E402
from grafana_foundation_sdk.builders import prometheus, stat, timeseries  # noqa: E402
from grafana_foundation_sdk.cog.encoder import JSONEncoder  # noqa: E402
from grafana_foundation_sdk.models import common  # noqa: E402
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FILES = REPO / "deploy" / "k8s" / "pooch" / "files"
DASHBOARDS = FILES / "dashboards"
GRAFANA_ALERTS = FILES / "grafana-alerts.yaml"
RULES = FILES / "alerts.yml"

SERVICES = ("collector", "featurizer", "trainer", "scorer", "supervisor")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# The data source Grafana's alert rules query: provisioned with this uid by compose and the chart.
ALERT_DATASOURCE_UID = "pooch-prometheus"
FOLDER = "Pooch Predictor"
TAGS = ["pooch", "generated"]


# -- panels ------------------------------------------------------------------------------------


def q(expr: str, legend: str = "") -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    return query.legend_format(legend) if legend else query


def ts(
    title: str, unit: str, *queries: prometheus.Dataquery, desc: str = "", w: int = 12
) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).datasource(DATASOURCE).height(8).span(w)
    panel = panel.fill_opacity(10)
    for query in queries:
        panel = panel.with_target(query)
    return panel.description(desc) if desc else panel


def st(title: str, unit: str, query: prometheus.Dataquery, desc: str = "", w: int = 4) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(4)
        .span(w)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .with_target(query)
    )
    return panel.description(desc) if desc else panel


def board(uid: str, title: str, description: str) -> dash.Dashboard:
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .refresh("30s")
        .time("now-1h", "now")
        .timezone(common.TimeZoneBrowser)
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(dash.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )


def overview() -> dash.Dashboard:
    b = board(
        "pooch-overview",
        "Pooch / Overview",
        "Is the system up, is data flowing, are users getting model predictions? Start here.",
    )
    b = b.with_row(dash.Row("Health"))
    for service in SERVICES:
        b = b.with_panel(st(f"{service} up", "short", q(f'service:up:sum{{service="{service}"}}'), w=4))
    b = b.with_panel(
        st(
            "Alerts firing",
            "short",
            q('count(ALERTS{alertstate="firing", alertname=~"Pooch.*"}) or vector(0)'),
        )
    )
    b = b.with_row(dash.Row("Flow"))
    b = b.with_panel(
        ts(
            "Messages produced per topic",
            "ops",
            q("sum by (topic) (service_topic:pooch_messages_produced:rate5m)", "{{topic}}"),
            desc="Facts, features, instances and predictions written per second.",
        )
    )
    b = b.with_panel(
        ts(
            "Consumer lag per service and topic",
            "short",
            q("service_topic:pooch_consumer_lag_messages:sum", "{{service}} ← {{topic}}"),
            desc="Messages behind the end of each input topic. Growing lag: see PoochConsumerLagGrowing.",
        )
    )
    b = b.with_panel(
        ts(
            "End-to-end latency (posted → predicted)",
            "s",
            q(":pooch_scorer_end_to_end_seconds:p50_5m", "p50"),
            q(":pooch_scorer_end_to_end_seconds:p99_5m", "p99"),
            desc="From the pupdate's posted_at (app event time) to its prediction being written.",
        )
    )
    b = b.with_panel(
        ts(
            "Dead letters by service and reason",
            "ops",
            q("service_reason:pooch_deadletters:rate10m", "{{service}}: {{reason}}"),
        )
    )
    b = b.with_row(dash.Row("Predictions"))
    b = b.with_panel(
        ts(
            "Predictions by arm and model version",
            "ops",
            q("arm_model_version:pooch_scorer_predictions:rate5m", "{{arm}} {{model_version}}"),
            desc="model_version none: the historical baseline (its arm, or a fallback).",
        )
    )
    b = b.with_panel(
        ts(
            "Fallbacks by reason",
            "ops",
            q("reason:pooch_scorer_fallbacks:rate5m", "{{reason}}"),
            q(":pooch_scorer_fallback_ratio:rate5m", "share of all predictions"),
        )
    )
    b = b.with_panel(
        ts(
            "Supervisor decisions",
            "short",
            q(
                "sum by (kind, actor) (increase(pooch_supervisor_decisions_total[$__rate_interval]))",
                "{{kind}} by {{actor}}",
            ),
        )
    )
    b = b.with_panel(
        ts(
            "Age of the last training run",
            "s",
            q("extractor_version:pooch_trainer_last_success:age_seconds", "{{extractor_version}}"),
            desc="Training freshness: PoochTrainingStale fires past 6 h while instances wait.",
        )
    )
    b = b.with_panel(
        ts(
            "Model metrics: realised error ratio to the baseline, validation metrics",
            "short",
            q(
                "max by (model_version) (pooch_supervisor_error_ratio_to_baseline)",
                "realised {{model_version}}",
            ),
            q(
                "max by (extractor_version, metric) (pooch_trainer_validation_metric)",
                "validation {{extractor_version}} {{metric}}",
            ),
            desc="Realised (supervisor, on labelled predictions) and at validation (trainer). Below 1: better than the baseline.",
            w=24,
        )
    )
    return b


def common_service_panels(b: dash.Dashboard, service: str) -> dash.Dashboard:
    sel = f'service="{service}"'
    b = b.with_row(dash.Row("Process"))
    b = b.with_panel(st("Targets up", "short", q(f"service:up:sum{{{sel}}}")))
    b = b.with_panel(st("Ready", "short", q(f"min(pooch_ready{{{sel}}})")))
    b = b.with_panel(
        st("Last progress", "s", q(f"time() - max(pooch_last_progress_timestamp_seconds{{{sel}}})"), w=4)
    )
    b = b.with_panel(
        ts(
            "CPU",
            "percentunit",
            q(
                f'sum by (instance) (rate(process_cpu_seconds_total{{job="pooch", {sel}}}[$__rate_interval]))',
                "{{instance}}",
            ),
            w=6,
        )
    )
    b = b.with_panel(
        ts(
            "Resident memory",
            "bytes",
            q(f'sum by (instance) (process_resident_memory_bytes{{job="pooch", {sel}}})', "{{instance}}"),
            w=6,
        )
    )
    b = b.with_row(dash.Row("Kafka"))
    b = b.with_panel(
        ts(
            "Consumed and produced per topic",
            "ops",
            q(f"service_topic:pooch_messages_consumed:rate5m{{{sel}}}", "in {{topic}}"),
            q(f"service_topic:pooch_messages_produced:rate5m{{{sel}}}", "out {{topic}}"),
        )
    )
    b = b.with_panel(
        ts("Consumer lag", "short", q(f"service_topic:pooch_consumer_lag_messages:sum{{{sel}}}", "{{topic}}"))
    )
    b = b.with_panel(
        ts(
            "Batch duration",
            "s",
            q(
                f"histogram_quantile(0.5, sum by (le) (rate(pooch_batch_duration_seconds_bucket{{{sel}}}[$__rate_interval])))",
                "p50",
            ),
            q(
                f"histogram_quantile(0.99, sum by (le) (rate(pooch_batch_duration_seconds_bucket{{{sel}}}[$__rate_interval])))",
                "p99",
            ),
        )
    )
    b = b.with_panel(
        ts("Dead letters", "ops", q(f"service_reason:pooch_deadletters:rate10m{{{sel}}}", "{{reason}}"))
    )
    return b


SPECIFIC: dict[str, list[tuple[str, str, list[tuple[str, str]]]]] = {
    "collector": [
        (
            "Accepted by kind and schema version",
            "ops",
            [
                (
                    "sum by (kind, schema_version) (rate(pooch_collector_accepted_total[$__rate_interval]))",
                    "{{kind}} {{schema_version}}",
                )
            ],
        ),
        (
            "Rejected by reason",
            "ops",
            [("sum by (reason) (rate(pooch_collector_rejected_total[$__rate_interval]))", "{{reason}}")],
        ),
        (
            "HTTP events by outcome",
            "ops",
            [
                (
                    "sum by (kind, outcome) (rate(pooch_collector_http_events_total[$__rate_interval]))",
                    "{{kind}} {{outcome}}",
                )
            ],
        ),
        (
            "HTTP p99 by route",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (le, route) (rate(pooch_collector_http_request_duration_seconds_bucket[$__rate_interval])))",
                    "{{route}}",
                )
            ],
        ),
        ("Kafka down", "short", [("max(pooch_collector_kafka_down)", "kafka down")]),
        (
            "Events waiting for their pupdate or dog",
            "short",
            [("sum(pooch_collector_waiting_events)", "waiting")],
        ),
    ],
    "featurizer": [
        (
            "Features and instances written",
            "ops",
            [
                (
                    "sum by (extractor_version) (rate(pooch_featurizer_features_total[$__rate_interval]))",
                    "features {{extractor_version}}",
                ),
                (
                    "sum by (extractor_version) (rate(pooch_featurizer_instances_total[$__rate_interval]))",
                    "instances {{extractor_version}}",
                ),
            ],
        ),
        (
            "Watermark behind now",
            "s",
            [("time() - max(pooch_featurizer_watermark_timestamp_seconds)", "watermark lag")],
        ),
        (
            "Extraction errors by reason",
            "ops",
            [
                (
                    "sum by (reason) (rate(pooch_featurizer_extraction_errors_total[$__rate_interval]))",
                    "{{reason}}",
                )
            ],
        ),
        (
            "Open horizons and buffered pupdates",
            "short",
            [
                ("sum(pooch_featurizer_open_horizons)", "open horizons"),
                ("sum(pooch_featurizer_buffered_pupdates)", "buffered"),
            ],
        ),
    ],
    "trainer": [
        (
            "Runs by outcome",
            "short",
            [
                (
                    "sum by (extractor_version, outcome) (increase(pooch_trainer_runs_total[$__rate_interval]))",
                    "{{extractor_version}} {{outcome}}",
                )
            ],
        ),
        (
            "Age of the last training run",
            "s",
            [("extractor_version:pooch_trainer_last_success:age_seconds", "{{extractor_version}}")],
        ),
        (
            "Run duration p99",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (le, extractor_version) (rate(pooch_trainer_run_duration_seconds_bucket[$__rate_interval])))",
                    "{{extractor_version}}",
                )
            ],
        ),
        (
            "Instances waiting for a run",
            "short",
            [("max by (extractor_version) (pooch_trainer_new_instances)", "{{extractor_version}}")],
        ),
        ("Leader", "short", [("max(pooch_trainer_leader)", "leader")]),
    ],
    "scorer": [
        (
            "Predict call p99",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (le, path) (rate(pooch_scorer_predict_seconds_bucket[$__rate_interval])))",
                    "{{path}}",
                )
            ],
        ),
        (
            "What-if requests by outcome",
            "ops",
            [
                (
                    "sum by (outcome) (rate(pooch_scorer_whatif_requests_total[$__rate_interval]))",
                    "{{outcome}}",
                )
            ],
        ),
        (
            "What-if p99",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (le) (rate(pooch_scorer_whatif_request_seconds_bucket[$__rate_interval])))",
                    "p99",
                )
            ],
        ),
        (
            "Model swaps",
            "short",
            [
                (
                    "sum by (extractor_version, arm) (increase(pooch_scorer_model_swaps_total[$__rate_interval]))",
                    "{{extractor_version}} {{arm}}",
                )
            ],
        ),
        ("Registry synced", "short", [("min(pooch_scorer_registry_synced)", "synced")]),
    ],
    "supervisor": [
        (
            "Since the last evaluation",
            "s",
            [("time() - max(pooch_supervisor_last_evaluation_timestamp_seconds)", "age")],
        ),
        ("Predictions waiting for labels", "short", [("sum(pooch_supervisor_pending_labels)", "pending")]),
        (
            "Operator requests by outcome",
            "ops",
            [
                (
                    "sum by (action, outcome) (rate(pooch_supervisor_operator_requests_total[$__rate_interval]))",
                    "{{action}} {{outcome}}",
                )
            ],
        ),
        (
            "Decision failures",
            "short",
            [("sum(increase(pooch_supervisor_decision_failures_total[$__rate_interval]))", "failures")],
        ),
    ],
}


def service_board(service: str) -> dash.Dashboard:
    b = board(
        f"pooch-{service}",
        f"Pooch / {service}",
        f"The {service}: process, Kafka flow, and what only the {service} measures.",
    )
    b = common_service_panels(b, service)
    b = b.with_row(dash.Row(service))
    for title, unit, queries in SPECIFIC[service]:
        b = b.with_panel(ts(title, unit, *(q(e, legend) for e, legend in queries)))
    return b


def models_board() -> dash.Dashboard:
    b = board(
        "pooch-models",
        "Pooch / Models and experiments",
        "Which versions serve, how each behaves, what the supervisor decided, how the arms compare.",
    )
    b = b.with_row(dash.Row("Serving"))
    b = b.with_panel(st("Active versions", "short", q('pooch_supervisor_models{status="active"}')))
    b = b.with_panel(st("Paused versions", "short", q('pooch_supervisor_models{status="paused"}')))
    b = b.with_panel(st("Fallback share", "percentunit", q(":pooch_scorer_fallback_ratio:rate5m")))
    b = b.with_panel(
        ts(
            "Serving (extractor version, arm → model version)",
            "short",
            q(
                "max by (extractor_version, arm, model_version) (pooch_scorer_serving_info) == 1",
                "{{extractor_version}} {{arm}}: {{model_version}}",
            ),
        )
    )
    b = b.with_panel(
        ts(
            "Predictions by arm and model version",
            "ops",
            q("arm_model_version:pooch_scorer_predictions:rate5m", "{{arm}} {{model_version}}"),
        )
    )
    b = b.with_row(dash.Row("Health per version (supervisor windows)"))
    for title, metric, unit in (
        ("Invalid output share", "pooch_supervisor_invalid_output_ratio", "percentunit"),
        ("Fallback share", "pooch_supervisor_version_fallback_ratio", "percentunit"),
        ("Error ratio to baseline", "pooch_supervisor_error_ratio_to_baseline", "short"),
        ("Labelled predictions", "pooch_supervisor_window_labelled", "short"),
        ("Output drift (PSI)", "pooch_supervisor_drift_psi", "short"),
        ("Latency p99", "pooch_supervisor_latency_p99_seconds", "s"),
    ):
        b = b.with_panel(ts(title, unit, q(f"max by (model_version) ({metric})", "{{model_version}}"), w=8))
    b = b.with_panel(
        ts(
            "Policies firing",
            "short",
            q(
                "max by (policy, subject, action) (pooch_supervisor_alerts_firing)",
                "{{policy}} {{subject}} ({{action}})",
            ),
        )
    )
    b = b.with_panel(
        ts(
            "Decisions",
            "short",
            q(
                "sum by (kind, actor) (increase(pooch_supervisor_decisions_total[$__rate_interval]))",
                "{{kind}} by {{actor}}",
            ),
        )
    )
    b = b.with_row(dash.Row("Experiments"))
    b = b.with_panel(
        ts(
            "Pupdates per arm",
            "short",
            q(
                "max by (extractor_version, arm) (pooch_supervisor_experiment_pupdates)",
                "{{extractor_version}} {{arm}}",
            ),
        )
    )
    b = b.with_panel(
        ts(
            "Likes per pupdate per arm",
            "short",
            q(
                "max by (extractor_version, arm) (pooch_supervisor_experiment_likes_per_pupdate)",
                "{{extractor_version}} {{arm}}",
            ),
        )
    )
    b = b.with_row(dash.Row("Training"))
    b = b.with_panel(
        ts(
            "Validation metrics of the last run",
            "short",
            q(
                "max by (extractor_version, metric) (pooch_trainer_validation_metric)",
                "{{extractor_version}} {{metric}}",
            ),
        )
    )
    b = b.with_panel(
        ts(
            "Versions published",
            "short",
            q(
                "sum by (extractor_version) (increase(pooch_trainer_published_versions_total[$__rate_interval]))",
                "{{extractor_version}}",
            ),
        )
    )
    return b


def dashboards() -> dict[str, dict[str, Any]]:
    boards = [overview(), models_board(), *(service_board(s) for s in SERVICES)]
    out = {}
    for b in boards:
        built = json.loads(json.dumps(b.build(), cls=JSONEncoder))
        # Stable panel ids and query refIds: Grafana keys links, alerts and edits by them.
        for i, panel in enumerate(built["panels"], start=1):
            panel["id"] = i
            for j, target in enumerate(panel.get("targets", [])):
                target["refId"] = chr(ord("A") + j)
        out[f"{built['uid']}.json"] = built
    return out


# -- Grafana alerting, from the Prometheus rules ---------------------------------------------


def grafana_alerts() -> dict[str, Any]:
    """The Prometheus alerts as Grafana-managed rules (file provisioning format).

    Each rule queries the alert's own expression, which returns one series per firing subject;
    `(expr) * 0 + 1` keeps the labels and makes every such series 1, so the threshold "> 0"
    means "the Prometheus expression returned this series". `for`, labels and annotations are
    the Prometheus rule's; no series at all means OK, not "no data".
    """
    groups = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        rules = []
        for r in group["rules"]:
            if "alert" not in r:
                continue
            expr = " ".join(r["expr"].split())
            rules.append(
                {
                    "uid": r["alert"].lower()[:40],
                    "title": r["alert"],
                    "condition": "C",
                    "data": [
                        {
                            "refId": "A",
                            "datasourceUid": ALERT_DATASOURCE_UID,
                            "relativeTimeRange": {"from": 900, "to": 0},
                            "model": {"refId": "A", "expr": f"({expr}) * 0 + 1", "instant": True},
                        },
                        {
                            "refId": "C",
                            "datasourceUid": "__expr__",
                            "model": {
                                "refId": "C",
                                "datasource": {"type": "__expr__", "uid": "__expr__"},
                                "type": "threshold",
                                "expression": "A",
                                "conditions": [{"evaluator": {"type": "gt", "params": [0]}}],
                            },
                        },
                    ],
                    "for": r.get("for", "0s"),
                    "noDataState": "OK",
                    "execErrState": "Error",
                    "labels": r.get("labels", {}),
                    "annotations": r.get("annotations", {}),
                }
            )
        if rules:
            groups.append(
                {"orgId": 1, "name": group["name"], "folder": FOLDER, "interval": "1m", "rules": rules}
            )
    return {"apiVersion": 1, "groups": groups}


# -- files -------------------------------------------------------------------------------------


def rendered() -> dict[Path, str]:
    files = {
        DASHBOARDS / name: json.dumps(d, indent=2, sort_keys=True) + "\n" for name, d in dashboards().items()
    }
    header = "# Generated by deploy/grafana/build.py from deploy/k8s/pooch/files/alerts.yml: do not edit.\n"
    files[GRAFANA_ALERTS] = header + yaml.safe_dump(grafana_alerts(), sort_keys=False, width=1000)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a generated file is out of date")
    args = parser.parse_args(argv)
    files = rendered()
    stale = [p for p, text in files.items() if not p.is_file() or p.read_text() != text]
    extra = sorted(set(DASHBOARDS.glob("*.json")) - set(files))
    if args.check:
        for p in [*stale, *extra]:
            print(f"out of date: {p.relative_to(REPO)} (run python deploy/grafana/build.py)", file=sys.stderr)
        return 1 if stale or extra else 0
    DASHBOARDS.mkdir(parents=True, exist_ok=True)
    for p in extra:
        p.unlink()
    for p, text in files.items():
        p.write_text(text)
    print(f"wrote {len(files)} files under {FILES.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
