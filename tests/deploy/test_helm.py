"""The Helm chart: helm lint, helm template with the default and the production-like values
(deploy/k8s/ci/*.yaml), kubeconform -strict offline on the output, values.schema.json rejecting
bad values, and what the rendered manifests promise (probes, security, secrets, monitoring)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from libs.common.settings import CommonSettings
from tests.deploy import kube_schemas
from tests.deploy.support import CHART, REPO, RULES, tool
from tests.deploy.test_compose import PORTS, env_names, settings_class

CI_VALUES = sorted((REPO / "deploy" / "k8s" / "ci").glob("*.yaml"))
CRDS = ["monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule"]
KUBE = kube_schemas.KUBE_VERSION
VARIANTS = [None, *CI_VALUES]
SCHEMAS = Path(__file__).parent / "schemas"
FLINK_API = "flink.apache.org/v1beta1/FlinkDeployment"
FLINK_ON = (
    "featurizer.enabled=false",
    "featurizer.flink.enabled=true",
    "featurizer.flink.image=pooch-flink:0.1.0",
    "featurizer.flink.checkpointDir=s3://pooch/flink",
)


def ids(v):
    return "default" if v is None else v.name


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("helm"), *args], capture_output=True, text=True, timeout=120)


def render(values: Path | None = None, *, crds: bool = True, sets: tuple[str, ...] = ()) -> str:
    args = ["template", "pooch", str(CHART), "--namespace", "pooch", "--kube-version", KUBE]
    if values is not None:
        args += ["-f", str(values)]
    for api in [*CRDS, FLINK_API] if crds else []:
        args += ["--api-versions", api]
    for s in sets:
        args += ["--set", s]
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def kinds(manifests: list[dict], kind: str) -> list[dict]:
    return [m for m in manifests if m["kind"] == kind]


@pytest.fixture(scope="session")
def schema_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kube-schemas")
    kube_schemas.kubernetes_schemas(out)
    try:
        crd_dir = kube_schemas.prometheus_operator_dir() / "example" / "prometheus-operator-crd"
    except (FileNotFoundError, OSError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"prometheus-operator CRDs missing in CI: {exc}")
        pytest.skip(str(exc))
    kube_schemas.crd_schemas(out, crd_dir)
    for kept in SCHEMAS.glob("*.json"):  # CRDs no registry ships: schemas written from them
        shutil.copy(kept, out / kept.name)
    return out


def kubeconform(schema_dir: Path, manifest: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            tool("kubeconform"),
            "-strict",
            "-summary",
            "-output",
            "text",
            # Local files only: no schema is fetched from the network.
            "-schema-location",
            str(schema_dir) + "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- helm lint, helm template, kubeconform ---------------------------------------------------


@pytest.mark.parametrize("values", VARIANTS, ids=ids)
def test_helm_lint(values):
    args = ["lint", str(CHART), "--strict", "--kube-version", KUBE]
    if values is not None:
        args += ["-f", str(values)]
    result = helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("crds", [True, False], ids=["with-crds", "without-crds"])
@pytest.mark.parametrize("values", VARIANTS, ids=ids)
def test_template_passes_kubeconform_strict(values, crds, schema_dir, tmp_path):
    manifest = tmp_path / "out.yaml"
    manifest.write_text(render(values, crds=crds))
    result = kubeconform(schema_dir, manifest)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every resource was checked against a schema: none skipped for want of one.
    assert "Invalid: 0, Errors: 0, Skipped: 0" in result.stdout, result.stdout


def test_kubeconform_rejects_what_kubernetes_would(schema_dir, tmp_path):
    manifests = docs(render(CI_VALUES[-1]))
    deploy = kinds(manifests, "Deployment")[0]
    deploy["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/x"
    monitor = kinds(manifests, "ServiceMonitor")[0]
    monitor["spec"]["endpoints"][0]["honourLabels"] = True
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump_all([deploy, monitor]))
    result = kubeconform(schema_dir, manifest)
    assert result.returncode == 1
    assert "'pathh' not allowed" in result.stdout and "'honourLabels' not allowed" in result.stdout


def test_notes_render(tmp_path):
    # `helm template` never renders NOTES.txt and `helm install --dry-run` needs a cluster: a copy
    # of the chart renders the same text through a ConfigMap instead.
    chart = tmp_path / "pooch"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes.tpl").write_text('{{- define "test.notes" -}}' + notes + "{{- end -}}")
    (chart / "templates" / "notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ include "test.notes" . | toJson }}}\n'
    )
    result = helm("template", "pooch", str(chart), "-n", "pooch", "--show-only", "templates/notes.yaml")
    assert result.returncode == 0, result.stderr
    text = yaml.safe_load(result.stdout)["data"]["notes"]
    assert "helm test pooch -n pooch" in text and "pooch models pause" in text
    assert "http://pooch-scorer:8004" in text and "docs/runbooks.md" in text
    assert "the models API is read-only" in text  # no operator token in the default values
    assert "model events are not authenticated" in text  # nor signing keys


# -- values.schema.json ----------------------------------------------------------------------

BAD_VALUES = {
    "negative replicas": ["scorer.replicas=-1"],
    "a moving image tag": ["image.tag=latest"],
    "an unknown log level": ["logLevel=LOUD"],
    "a bootstrap without a port": ["kafka.bootstrap=kafka"],
    "two supervisors": ["supervisor.replicas=2"],
    "a misspelt key": ["scorer.autoscalling.enabled=true"],
    "SASL without its Secret": ["kafka.sasl.enabled=true"],
    "production without secrets": ["production=true"],
    "a password in values": ["redis.password=hunter2"],
    "CPU target over 100%": ["scorer.autoscaling.targetCPUUtilizationPercentage=150"],
    "a trusted key that is no Ed25519 public key": ["modelSigning.trustedKeys={not-a-key}"],
    "the trainer on Dask without a scheduler": ["trainer.dask.enabled=true"],
    "a Dask scheduler that is no address": ["trainer.dask.enabled=true", "trainer.dask.scheduler=dask:8786"],
    "a private key in values": ["modelSigning.trainer.privateKey=secret"],
}


@pytest.mark.parametrize("sets", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_values_schema_rejects_bad_values(sets):
    args = ["template", "pooch", str(CHART), "--kube-version", KUBE]
    for s in sets:
        args += ["--set", s]
    result = helm(*args)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr


def test_values_schema_is_valid_json_schema_and_accepts_the_defaults():
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)


def test_every_value_is_documented():
    """Every key has a comment above it or at its end. A `# --` comment documents a value as a
    whole, so the keys inside it (resources.requests, a peer's namespaceSelector) need none."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys = []  # (indent, line index) of the keys above the current one
    for i, line in enumerate(lines):
        key = re.match(r"^(\s*)(- )?([A-Za-z][\w.-]*):", line)
        if not key:
            continue
        indent = len(key.group(1))
        while keys and keys[-1][0] >= indent:
            keys.pop()
        covered = any(_doc(lines, j).startswith("# --") for _, j in keys)
        keys.append((indent, i))
        if key.group(2) or covered:
            continue
        assert _doc(lines, i), f"values.yaml line {i + 1}: {key.group(3)} has no comment"


def _doc(lines: list[str], i: int) -> str:
    """The comment documenting the key on line i: at its end, or on the lines above it."""
    if "  # " in lines[i]:
        return "# " + lines[i].split("  # ", 1)[1]
    j = i - 1
    while j >= 0 and lines[j].lstrip().startswith("#"):
        j -= 1
    return lines[j + 1].strip() if j + 1 < i else ""


def test_flink_featurizer_renders_a_flink_deployment_that_passes_kubeconform(schema_dir, tmp_path):
    manifests = docs(render(sets=FLINK_ON))
    [job] = kinds(manifests, "FlinkDeployment")
    assert "featurizer" not in {
        d["metadata"]["labels"]["app.kubernetes.io/component"] for d in kinds(manifests, "Deployment")
    }
    assert job["spec"]["flinkVersion"] == "v2_2" and job["spec"]["job"]["upgradeMode"] == "last-state"
    env = {e["name"]: e.get("value") for e in job["spec"]["podTemplate"]["spec"]["containers"][0]["env"]}
    assert (
        int(env["POOCH_FLINK_TRANSACTION_TIMEOUT_MS"])
        > int(env["POOCH_FLINK_CHECKPOINT_INTERVAL_MS"]) + 60_000
    )
    manifest = tmp_path / "flink.yaml"
    manifest.write_text(yaml.safe_dump_all(manifests))
    result = kubeconform(schema_dir, manifest)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Invalid: 0, Errors: 0, Skipped: 0" in result.stdout, result.stdout
    # The kept schema is strict, down into the pod template: misspelt fields are refused.
    job["spec"]["job"]["upgradeMod"] = "savepoint"
    manifest.write_text(yaml.safe_dump_all([job]))
    result = kubeconform(schema_dir, manifest)
    assert result.returncode == 1 and "upgradeMod" in result.stdout, result.stdout
    del job["spec"]["job"]["upgradeMod"]
    job["spec"]["podTemplate"]["spec"]["containers"][0]["envv"] = []
    manifest.write_text(yaml.safe_dump_all([job]))
    result = kubeconform(schema_dir, manifest)
    assert result.returncode == 1 and "envv" in result.stdout, result.stdout


def test_flink_featurizer_is_off_by_default_and_never_beside_the_python_engine():
    assert not kinds(docs(render()), "FlinkDeployment")
    base = ["template", "pooch", str(CHART), "--kube-version", KUBE, "--api-versions", FLINK_API]
    both = helm(*base, *[a for s in FLINK_ON[1:] for a in ("--set", s)])
    assert both.returncode != 0 and "featurizer.enabled: false" in both.stderr
    no_crd = helm(
        "template", "pooch", str(CHART), "--kube-version", KUBE, *[a for s in FLINK_ON for a in ("--set", s)]
    )
    assert no_crd.returncode != 0 and "CRDs" in no_crd.stderr


# -- what the manifests promise ---------------------------------------------------------------


@pytest.fixture(scope="module")
def production() -> list[dict]:
    return docs(render(REPO / "deploy" / "k8s" / "ci" / "production.yaml"))


@pytest.fixture(scope="module")
def default() -> list[dict]:
    return docs(render())


def test_one_deployment_service_and_configmap_per_service(default):
    for name, port in PORTS.items():
        full = f"pooch-{name}"
        deploy = next(d for d in kinds(default, "Deployment") if d["metadata"]["name"] == full)
        service = next(s for s in kinds(default, "Service") if s["metadata"]["name"] == full)
        config = next(c for c in kinds(default, "ConfigMap") if c["metadata"]["name"] == full)
        (c,) = deploy["spec"]["template"]["spec"]["containers"]
        assert c["command"] == ["python", "-m", f"services.{name}"]
        assert c["ports"][0]["containerPort"] == port and service["spec"]["ports"][0]["port"] == port
        assert config["data"][f"POOCH_{name.upper()}_PORT"] == str(port)
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["resources"]["requests"] and c["resources"]["limits"]


@pytest.mark.parametrize("variant", ["default", "production"])
def test_pods_are_locked_down(variant, default, production):
    manifests = default if variant == "default" else production
    sa = kinds(manifests, "ServiceAccount")
    assert len(sa) == 1 and sa[0]["automountServiceAccountToken"] is False
    pods = [d["spec"]["template"]["spec"] for d in manifests if d["kind"] in ("Deployment", "Job")]
    pods += [p["spec"] for p in kinds(manifests, "Pod")]
    images = set()
    for pod in pods:
        assert pod["serviceAccountName"] == sa[0]["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            images.add(c["image"])
    assert len(images) == 1  # one image serves everything


def test_secrets_only_ever_come_from_existing_secrets(production):
    assert not kinds(production, "Secret")
    secret_like = ("PASSWORD", "TOKEN", "API_KEYS", "SASL_USERNAME", "SIGNING_KEY")
    seen = set()
    for d in production:
        if d["kind"] not in ("Deployment", "Job"):
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                if any(s in e["name"] for s in secret_like):
                    assert "secretKeyRef" in e.get("valueFrom", {}), e
                    seen.add(e["name"])
                if e["name"] == "POOCH_REDIS_URL":
                    # The password is interpolated by Kubernetes, never written here.
                    assert e["value"] == "rediss://:$(POOCH_REDIS_PASSWORD)@redis.cache.internal:6380/0"
    assert seen == {
        "POOCH_KAFKA_SASL_USERNAME",
        "POOCH_KAFKA_SASL_PASSWORD",
        "POOCH_REDIS_PASSWORD",
        "POOCH_SUPERVISOR_OPERATOR_TOKEN",
        "POOCH_COLLECTOR_API_KEYS",
        "POOCH_SCORER_API_KEYS",
        "POOCH_TRAINER_API_KEYS",
        "POOCH_MODELS_SIGNING_KEY",
    }


def test_model_events_are_signed_by_the_two_writers_and_trusted_by_every_service(production):
    signing, trusted = {}, {}
    for d in kinds(production, "Deployment"):
        name = d["metadata"]["labels"]["app.kubernetes.io/component"]
        env = {e["name"]: e for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        trusted[name] = json.loads(env["POOCH_MODELS_TRUSTED_KEYS"]["value"])
        if "POOCH_MODELS_SIGNING_KEY" in env:
            signing[name] = env["POOCH_MODELS_SIGNING_KEY"]["valueFrom"]["secretKeyRef"]["name"]
    assert signing == {"trainer": "pooch-trainer-signing-key", "supervisor": "pooch-supervisor-signing-key"}
    assert len(trusted) == 5 and all(len(keys) == 2 for keys in trusted.values())


def test_every_pooch_variable_is_one_the_code_reads(production):
    for d in production:
        if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("app.kubernetes.io/component") in PORTS:
            name = d["metadata"]["labels"]["app.kubernetes.io/component"]
            known = env_names(settings_class(name)) | env_names(CommonSettings)
            unknown = {k for k in d["data"] if k.startswith("POOCH_")} - known
            assert not unknown, f"{name}: {unknown}"
        if d["kind"] == "Deployment":
            name = d["metadata"]["labels"]["app.kubernetes.io/component"]
            known = env_names(settings_class(name)) | env_names(CommonSettings) | {"POOCH_REDIS_PASSWORD"}
            env = {e["name"] for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert not {k for k in env if k.startswith("POOCH_")} - known, name


def test_scorer_autoscales_on_cpu_and_lag(default, production):
    (hpa,) = kinds(default, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "pooch-scorer"
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"]
    (hpa,) = kinds(production, "HorizontalPodAutoscaler")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "External"]
    scorer = next(d for d in kinds(production, "Deployment") if d["metadata"]["name"] == "pooch-scorer")
    assert "replicas" not in scorer["spec"]  # the HPA owns it


def test_disruption_budgets_for_replicated_services(default):
    budgets = {p["metadata"]["name"] for p in kinds(default, "PodDisruptionBudget")}
    # The supervisor runs alone (one decides), so a budget would block every node drain.
    assert budgets == {"pooch-collector", "pooch-featurizer", "pooch-trainer", "pooch-scorer"}


def test_network_policy_denies_by_default_and_opens_the_needed_flows(production):
    policies = {p["metadata"]["name"]: p["spec"] for p in kinds(production, "NetworkPolicy")}
    deny = policies["pooch-default-deny"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    egress_ports = {p["port"] for rule in policies["pooch-egress"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 9096, 6380}  # DNS, Kafka, Redis: services never call each other
    test_egress = policies["pooch-test-egress"]
    assert test_egress["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "test"
    assert {p["port"] for p in test_egress["egress"][0]["ports"]} == set(PORTS.values())
    for name, port in PORTS.items():
        rule = policies[f"pooch-{name}-ingress"]["ingress"][0]
        assert rule["ports"] == [{"protocol": "TCP", "port": port}]
        sources = json.dumps(rule["from"])
        assert "monitoring" in sources and '"app.kubernetes.io/component": "test"' in sources
        assert ("sniffable" in sources) == (name in ("collector", "scorer"))
        assert ("ops" in sources) == (name in ("supervisor", "trainer"))


def test_the_trainer_fits_on_dask_only_behind_its_switch(default, production):
    def trainer_config(manifests):
        return next(c for c in kinds(manifests, "ConfigMap") if c["metadata"]["name"] == "pooch-trainer")[
            "data"
        ]

    assert "POOCH_TRAINER_ENGINE" not in trainer_config(default)
    assert "pooch-trainer-dask-egress" not in {p["metadata"]["name"] for p in kinds(default, "NetworkPolicy")}
    config = trainer_config(production)
    assert config["POOCH_TRAINER_ENGINE"] == "dask"
    assert config["POOCH_TRAINER_DASK_SCHEDULER"] == "tcp://pooch-dask-scheduler.dask.svc:8786"
    policy = next(
        p for p in kinds(production, "NetworkPolicy") if p["metadata"]["name"] == "pooch-trainer-dask-egress"
    )
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "trainer"
    (rule,) = policy["spec"]["egress"]
    assert {p["port"] for p in rule["ports"]} == {8786, 8788}
    assert rule["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dask"}}}]


def test_monitoring_objects_are_gated_on_their_crds():
    without = docs(render(crds=False))
    assert not kinds(without, "ServiceMonitor") and not kinds(without, "PrometheusRule")
    off = docs(render(sets=("monitoring.serviceMonitor.enabled=false",)))
    assert not kinds(off, "ServiceMonitor") and kinds(off, "PrometheusRule")


def test_prometheus_rule_is_the_one_rules_file(default, production):
    (rule,) = kinds(default, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    (rule,) = kinds(production, "PrometheusRule")
    urls = [
        r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r
    ]
    assert urls and all(
        u.startswith("https://git.example.com/pooch/blob/main/docs/runbooks.md#") for u in urls
    )


def test_service_monitor_scrapes_as_the_rules_expect(default):
    (monitor,) = kinds(default, "ServiceMonitor")
    assert monitor["spec"]["jobLabel"] == "pooch.dev/job"
    for service in kinds(default, "Service"):
        assert service["metadata"]["labels"]["pooch.dev/job"] == "pooch"
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics" and endpoint["honorLabels"] is True
    assert endpoint["relabelings"][0]["targetLabel"] == "service"


def test_dashboards_are_configmaps_for_grafanas_sidecar(default, production):
    files = {p.name: p.read_text() for p in (CHART / "files" / "dashboards").glob("*.json")}
    maps = [m for m in kinds(default, "ConfigMap") if "grafana_dashboard" in m["metadata"]["labels"]]
    assert {k: v for m in maps for k, v in m["data"].items()} == {k: v.rstrip("\n") for k, v in files.items()}
    assert all(m["metadata"]["labels"]["grafana_dashboard"] == "1" for m in maps)
    alerts = [m for m in kinds(production, "ConfigMap") if "grafana_alert" in m["metadata"]["labels"]]
    assert len(alerts) == 1 and "PoochServiceDown" in alerts[0]["data"]["pooch-alerts.yaml"]


def test_topics_hook_job_and_helm_test(default):
    (job,) = kinds(default, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][:3] == ["pooch", "topics", "--create"]
    (test,) = kinds(default, "Pod")
    assert test["metadata"]["annotations"]["helm.sh/hook"] == "test"
    urls = test["spec"]["containers"][0]["command"][3:]
    assert urls == [f"http://pooch-{n}:{p}/readyz" for n, p in sorted(PORTS.items())]


def test_production_requires_the_operator_token_and_api_keys():
    base = ["template", "pooch", str(CHART), "--kube-version", KUBE, "--set", "production=true"]
    only_token = helm(*base, "--set", "supervisor.operatorToken.existingSecret=tok")
    assert only_token.returncode != 0 and "collector/apiKeys/existingSecret" in only_token.stderr
    both = helm(
        *base,
        "--set",
        "supervisor.operatorToken.existingSecret=tok",
        "--set",
        "collector.apiKeys.existingSecret=keys",
    )
    assert both.returncode != 0 and "modelSigning" in both.stderr
    signed = helm(
        *base,
        "--set",
        "supervisor.operatorToken.existingSecret=tok",
        "--set",
        "collector.apiKeys.existingSecret=keys",
        "--set",
        "modelSigning.trustedKeys={3CxNOFJxTS2jLea5zIN/2MGfbSrkP6w9qBfveO43/dg=}",
        "--set",
        "modelSigning.trainer.existingSecret=tk",
        "--set",
        "modelSigning.supervisor.existingSecret=sk",
    )
    assert signed.returncode == 0, signed.stderr
