"""A real Prometheus (Debian's `prometheus`) scraping the five real services of this repository,
started on free ports against the real Kafka and Redis, with the project's one rules file:

- every expression of every dashboard panel, alert and recording rule evaluates without error;
- every metric they name is one the services export (a typo would be a panel that is always empty);
- after the scorer is SIGKILLed, PoochServiceDown fires for the scorer and only for it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import REPO
from tests.support.procs import ServiceProcess
from tooling.stack.processes import free_port

FILES = REPO / "deploy" / "k8s" / "pooch" / "files"
RULES = FILES / "alerts.yml"
SERVICES = ("collector", "featurizer", "trainer", "scorer", "supervisor")
# Grafana's built-in variables, as Grafana would substitute them for a 2 s scrape interval.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "5s", "$__range": "1h"}


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("prometheus is missing in CI: `make tools` installs Debian's prometheus package")
    pytest.skip("prometheus not installed (make tools)")
    raise AssertionError


def wait_for(check, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Prometheus:
    def __init__(self, folder: Path, targets: dict[str, int]) -> None:
        config = {
            # Fast scrapes and evaluations so the test takes about a minute, not five; the rules
            # themselves (their `for:`) are the project's, unchanged.
            # A 2 s timeout, so a slow scrape on a loaded machine is not a service down.
            "global": {"scrape_interval": "2s", "evaluation_interval": "1s", "scrape_timeout": "2s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "pooch",
                    "honor_labels": True,
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{port}"], "labels": {"service": name}}
                        for name, port in targets.items()
                    ],
                }
            ],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (folder / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=self.url, timeout=10)
        wait_for(lambda: self.http.get("/-/ready").status_code == 200, 60, "Prometheus ready")

    def query(self, expr: str) -> dict:
        return self.http.get("/api/v1/query", params={"query": expr}).json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.http.close()
        self.log.close()


@pytest.fixture
def running(topics, tmp_path) -> Iterator[tuple[dict[str, ServiceProcess], Prometheus]]:
    procs: dict[str, ServiceProcess] = {}
    prom = None
    try:
        for name in SERVICES:
            extra = {"POOCH_SUPERVISOR_OPERATOR_TOKEN": "live-test"} if name == "supervisor" else None
            procs[name] = ServiceProcess(name, topics, tmp_path, extra_env=extra)
        for proc in procs.values():
            proc.wait_ready(timeout=120)
        prom = Prometheus(tmp_path, {n: p.port for n, p in procs.items()})
        yield procs, prom
    finally:
        if prom is not None:
            prom.stop()
        for proc in procs.values():
            proc.stop()


def dashboard_expressions() -> list[tuple[str, str]]:
    out = []
    for path in sorted((FILES / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for var, value in GRAFANA_VARS.items():
                    expr = expr.replace(var, value)
                assert "$" not in expr, f"{path.name}: a variable Grafana would not fill: {expr}"
                out.append((f"{path.name}: {panel['title']}", expr))
    return out


def rule_expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(r.get("alert") or r["record"], r["expr"]) for g in groups for r in g["rules"]]


def grafana_alert_expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load((FILES / "grafana-alerts.yaml").read_text())["groups"]
    return [(f"grafana {r['title']}", r["data"][0]["model"]["expr"]) for g in groups for r in g["rules"]]


def metric_names(expr: str) -> set[str]:
    """Raw metric names an expression reads (recording-rule names, level:metric:ops, removed)."""
    raw = re.sub(r"[a-z_]*:[a-z0-9_:]+", " ", expr)
    return set(re.findall(r"\b(?:pooch_[a-z0-9_]+|process_[a-z0-9_]+)\b", raw))


def family(name: str) -> str:
    """The metric family a sample name belongs to (histogram and counter suffixes removed)."""
    return re.sub(r"_(bucket|count|sum|created|total)$", "", name)


@pytest.mark.timeout(420)
def test_live_prometheus_evaluates_everything_and_sees_a_service_die(running):
    procs, prom = running
    # Every target scraped and up, and the recording rules have evaluated at least once.
    wait_for(
        lambda: (
            {r["metric"]["service"]: r["value"][1] for r in prom.query("service:up:sum")["data"]["result"]}
            == dict.fromkeys(SERVICES, "1")
        ),
        60,
        "all five services scraped up",
    )

    expressions = dashboard_expressions() + rule_expressions() + grafana_alert_expressions()
    assert len(expressions) > 60
    failures = {}
    for where, expr in expressions:
        answer = prom.query(expr)
        if answer.get("status") != "success":
            failures[where] = (expr, answer.get("error"))
    assert not failures, failures

    # The names they use exist: Prometheus keeps each scraped family's metadata (HELP/TYPE),
    # also for labelled metrics that have no series yet.
    metadata = prom.http.get("/api/v1/metadata").json()["data"]
    exported = {family(n) for n in metadata}
    missing = {
        (where, name)
        for where, expr in expressions
        for name in metric_names(expr)
        if family(name) not in exported
    }
    assert not missing, sorted(missing)

    # Nothing is down yet: the alert is quiet.
    assert prom.query('ALERTS{alertname="PoochServiceDown", alertstate="firing"}')["data"]["result"] == []

    procs["scorer"].kill()
    started = time.monotonic()

    def firing():
        alerts = prom.http.get("/api/v1/alerts").json()["data"]["alerts"]
        return [
            a for a in alerts if a["labels"]["alertname"] == "PoochServiceDown" and a["state"] == "firing"
        ]

    fired = wait_for(firing, 150, "PoochServiceDown firing after SIGKILL", interval=1)
    assert [a["labels"]["service"] for a in fired] == ["scorer"]
    assert fired[0]["annotations"]["runbook_url"] == "docs/runbooks.md#poochservicedown"
    # `for: 1m` is honoured: it fired no sooner than a minute after the kill.
    assert time.monotonic() - started >= 55
