"""docker-compose.yml: valid against the Compose Specification's JSON schema (vendored by the
check-jsonschema package) and loadable by compose-go (the loader of Docker Compose itself:
merge keys, interpolation, references between services); every service, port and POOCH_*
variable in it, as Compose sees them, is one the code knows, with the values the contract
(DESIGN.md) and the settings classes give."""

from __future__ import annotations

import importlib
import json
import re
import subprocess

import jsonschema
import pytest
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema

from libs.common.settings import CommonSettings
from tests.deploy.support import REPO, tool

COMPOSE = REPO / "docker-compose.yml"
PORTS = {"collector": 8001, "featurizer": 8002, "trainer": 8003, "scorer": 8004, "supervisor": 8005}
SETTINGS = {
    "collector": "services.collector.settings:CollectorSettings",
    "featurizer": "services.featurizer.settings:FeaturizerSettings",
    "trainer": "services.trainer.settings:TrainerSettings",
    "scorer": "services.scorer.settings:ScorerSettings",
    "supervisor": "services.supervisor.settings:SupervisorSettings",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def composecheck(path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("pooch-composecheck"), str(path)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def normalised() -> dict:
    """The project as Docker Compose would run it (anchors merged, defaults interpolated)."""
    result = composecheck(COMPOSE)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def settings_class(service: str):
    module, name = SETTINGS[service].split(":")
    return getattr(importlib.import_module(module), name)


def env_names(cls) -> set[str]:
    """Every environment variable a settings class reads."""
    prefix = cls.model_config.get("env_prefix", "")
    names = set()
    for field, info in cls.model_fields.items():
        alias = info.validation_alias
        choices = getattr(alias, "choices", None) or ([alias] if isinstance(alias, str) else [])
        names |= {c.upper() for c in choices if isinstance(c, str) and c.upper().startswith("POOCH_")}
        names.add(f"{prefix}{field}".upper())
    return names


def test_valid_against_the_compose_specification(compose):
    schema = get_builtin_schema("vendor.compose-spec")
    jsonschema.validate(compose, schema, cls=jsonschema.Draft7Validator)


def test_the_schema_check_can_fail(compose):
    bad = {**compose, "services": {**compose["services"], "scorer": {**compose["services"]["scorer"]}}}
    bad["services"]["scorer"]["depends_on"] = {"kafka": {"condition": "service_ready"}}  # not a condition
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, get_builtin_schema("vendor.compose-spec"), cls=jsonschema.Draft7Validator)


def test_compose_go_loads_it_and_rejects_a_dangling_dependency(tmp_path):
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(
        COMPOSE.read_text().replace("\n    redis:\n      condition", "\n    rediss:\n      condition")
    )
    result = composecheck(bad)
    assert result.returncode == 1
    assert 'depends on undefined service "rediss"' in result.stderr


def test_infrastructure_kafka_is_the_official_image_in_kraft_mode(compose):
    kafka = compose["services"]["kafka"]
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", kafka["image"])
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert {"kafka", "redis", "topics", "prometheus", "grafana", *PORTS} <= set(compose["services"])
    for name, svc in compose["services"].items():
        if "image" in svc and not svc["image"].startswith("pooch-predictor:"):
            assert not svc["image"].endswith(":latest") and ":" in svc["image"], name


def test_the_topics_job_creates_the_contract_topics_once(compose):
    job = compose["services"]["topics"]
    assert job["command"][:3] == ["pooch", "topics", "--create"]
    assert job["restart"] == "no"
    assert job["depends_on"]["kafka"]["condition"] == "service_healthy"
    from typer.testing import CliRunner

    from tooling.cli.main import app

    # The command the job runs exists, with that option (the image's `pooch` entry point).
    result = CliRunner().invoke(app, ["topics", "--help"])
    assert result.exit_code == 0 and "--create" in result.output and "--timeout" in result.output


@pytest.mark.parametrize("service", list(PORTS))
def test_service_matches_the_code(normalised, service):
    svc = normalised["services"][service]
    cls = settings_class(service)
    port = PORTS[service]
    # The contract's port is the settings' default, and compose publishes and probes that port.
    assert cls.model_fields["port"].default == port
    env = svc["environment"]
    assert env[f"POOCH_{service.upper()}_PORT"] == str(port)
    assert [(p["target"], p["published"]) for p in svc["ports"]] == [(port, str(port))]
    assert svc["command"] == ["python", "-m", f"services.{service}"]
    assert svc["image"] == normalised["services"]["topics"]["image"]  # one image for everything
    assert (REPO / "services" / service / "__main__.py").is_file()
    probe = " ".join(svc["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/readyz" in probe
    for dep in ("kafka", "redis"):
        assert svc["depends_on"][dep]["condition"] == "service_healthy"
    assert svc["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
    # Every POOCH_* variable is one the service's settings (or the shared ones) actually read.
    known = env_names(cls) | env_names(CommonSettings)
    unknown = {k for k in env if k.startswith("POOCH_")} - known
    assert not unknown, f"{service} sets variables no setting reads: {unknown}"
    assert env["POOCH_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["POOCH_REDIS_URL"].startswith("redis://redis:6379/")
    assert "POOCH_TOPIC_PREFIX" in env


def test_env_name_reader_would_catch_a_typo():
    assert "POOCH_SCORER_PORT" in env_names(settings_class("scorer"))
    assert "POOCH_SCORER_PROT" not in env_names(settings_class("scorer"))
    assert "POOCH_KAFKA_BOOTSTRAP" in env_names(CommonSettings)


def test_prometheus_loads_the_one_rules_file_and_scrapes_every_service(compose, tmp_path):
    prom = compose["services"]["prometheus"]
    assert "./deploy/k8s/pooch/files/alerts.yml:/etc/prometheus/rules/alerts.yml:ro" in prom["volumes"]
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    targets = {c["labels"]["service"]: c["targets"][0] for c in job["static_configs"]}
    assert targets == {s: f"{s}:{p}" for s, p in PORTS.items()}
    assert job["job_name"] == "pooch" and job["honor_labels"] is True
    # promtool checks the config with the rules path pointed at the real file.
    config["rule_files"] = [str(REPO / "deploy" / "k8s" / "pooch" / "files" / "alerts.yml")]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    result = subprocess.run([tool("promtool"), "check", "config", str(local)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
