"""Grafana: the dashboards are generated (never hand-edited), valid against Grafana's dashboard
schema, and the Grafana alert rules are exactly the Prometheus alerts."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.deploy.support import REPO, RULES, tool

BUILD = REPO / "deploy" / "grafana" / "build.py"
FILES = REPO / "deploy" / "k8s" / "pooch" / "files"
DASHBOARDS = sorted((FILES / "dashboards").glob("*.json"))
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"


def schemacheck(*paths) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("pooch-grafana-schemacheck"), *map(str, paths)], capture_output=True, text=True
    )


def test_generated_files_are_up_to_date():
    result = subprocess.run([sys.executable, str(BUILD), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_dashboards_issue_14_asks_for_exist():
    uids = {json.loads(p.read_text())["uid"] for p in DASHBOARDS}
    services = {f"pooch-{s}" for s in ("collector", "featurizer", "trainer", "scorer", "supervisor")}
    assert uids == {"pooch-overview", "pooch-models"} | services


def test_dashboards_match_grafanas_schema():
    result = schemacheck(*DASHBOARDS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": valid") == len(DASHBOARDS)


def test_the_schema_check_rejects_a_broken_dashboard(tmp_path):
    misspelt = json.loads(DASHBOARDS[0].read_text())
    misspelt["panels"][1]["gridPosition"] = {"h": 1}
    wrong_type = json.loads(DASHBOARDS[0].read_text())
    wrong_type["panels"][2]["options"]["textMode"] = 5  # an enum of strings
    (tmp_path / "misspelt.json").write_text(json.dumps(misspelt))
    (tmp_path / "wrong_type.json").write_text(json.dumps(wrong_type))
    result = schemacheck(tmp_path / "misspelt.json", tmp_path / "wrong_type.json")
    assert result.returncode == 1
    assert "misspelt.json: INVALID" in result.stdout and "unexpected field 'gridPosition'" in result.stdout
    assert "wrong_type.json: INVALID" in result.stdout and "textMode" in result.stdout


def test_every_panel_queries_the_datasource_variable():
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == "${datasource}" and target["expr"], path.name


def test_grafana_alert_rules_are_the_prometheus_alerts():
    prom = {
        r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r
    }
    grafana = {
        r["title"]: r
        for g in yaml.safe_load((FILES / "grafana-alerts.yaml").read_text())["groups"]
        for r in g["rules"]
    }
    assert set(grafana) == set(prom)
    for name, rule in grafana.items():
        query = rule["data"][0]["model"]["expr"]
        assert " ".join(prom[name]["expr"].split()) in query
        assert rule["for"] == prom[name].get("for", "0s")
        assert rule["annotations"]["runbook_url"] == prom[name]["annotations"]["runbook_url"]
        assert rule["labels"] == prom[name]["labels"]
        assert rule["data"][0]["datasourceUid"] == "pooch-prometheus"


def api_rules(provisioning: dict) -> list[dict]:
    # File provisioning names the folder and the group once per group; Grafana's rule model
    # carries them on every rule.
    return [
        dict(rule, folderUID="pooch", ruleGroup=group["name"], orgID=group["orgId"])
        for group in provisioning["groups"]
        for rule in group["rules"]
    ]


def test_grafana_alert_rules_match_grafanas_rule_schema(tmp_path):
    provisioning = yaml.safe_load((FILES / "grafana-alerts.yaml").read_text())
    assert provisioning["apiVersion"] == 1
    good = tmp_path / "rules.json"
    good.write_text(json.dumps(api_rules(provisioning)))
    result = subprocess.run(
        [tool("pooch-grafana-schemacheck"), "-alert-rules", str(good)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    broken = api_rules(provisioning)
    broken[0]["noDataStat"] = broken[0].pop("noDataState")  # misspelt (and so the required one missing)
    bad = tmp_path / "broken.json"
    bad.write_text(json.dumps(broken))
    result = subprocess.run(
        [tool("pooch-grafana-schemacheck"), "-alert-rules", str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 1 and "noDataStat" in result.stdout, result.stdout


def test_compose_provisioning_points_at_the_generated_files():
    ds = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    assert ds["datasources"][0]["uid"] == "pooch-prometheus"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.startswith("./deploy/k8s/pooch/files/dashboards:") for m in mounts)
    assert any(m.startswith("./deploy/k8s/pooch/files/grafana-alerts.yaml:") for m in mounts)
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "pooch.yaml").read_text())["providers"][0]
    assert any(m.endswith(":" + provider["options"]["path"] + ":ro") for m in mounts)
