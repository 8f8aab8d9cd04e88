"""Offline JSON schemas for kubeconform.

kubeconform downloads Kubernetes schemas at run time, which cannot work without the network.
The PyPI package kubernetes-validate ships them (a dev dependency); their `$id`s and `$ref`s
point at https://kubernetes.io/api/..., so they are rewritten to relative references between
local files. The prometheus-operator's ServiceMonitor and PrometheusRule get schemas made from
its CRDs, read from its Go module (`make tools` runs `go mod download` for it).

Files are named as kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json` template expects:
deployment-apps-v1.json, service-v1.json, servicemonitor-monitoring-v1.json, ...
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

KUBE_VERSION = "1.34.0"
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
CRDS = ("monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_prometheusrules.yaml")


def kubernetes_schemas(out: Path) -> None:
    src = (
        Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{KUBE_VERSION}-local-strict"
    )
    out.mkdir(parents=True, exist_ok=True)
    for path in src.glob("*.json"):
        text = path.read_text()
        # The definitions file sits beside every resource file: reference it relatively.
        text = text.replace('"/api/_definitions.json#', '"_definitions.json#')
        schema = json.loads(text)
        # Without an absolute $id, each file's base URI is its own location on disk.
        schema.pop("$id", None)
        (out / path.name).write_text(json.dumps(schema))


def _strict(node: Any) -> Any:
    """A CRD's structural schema as strict JSON Schema: no unknown fields where the CRD lists
    them (as the API server prunes them), OpenAPI's nullable and int-or-string made explicit."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _strict(v) for k, v in node.items()}
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.pop("nullable", False) and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in node and "additionalProperties" not in node and not preserve:
        node["additionalProperties"] = False
    return node


def prometheus_operator_dir() -> Path:
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off"}  # offline: the module cache only
    result = subprocess.run(
        ["go", "mod", "download", "-json", PROMETHEUS_OPERATOR], capture_output=True, text=True, env=env
    )
    if result.returncode != 0:
        raise FileNotFoundError(
            f"{PROMETHEUS_OPERATOR} not in the Go module cache (make tools): {result.stdout}"
        )
    return Path(json.loads(result.stdout)["Dir"])


def crd_schemas(out: Path, crd_dir: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for name in CRDS:
        crd = yaml.safe_load((crd_dir / name).read_text())
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            schema["properties"]["apiVersion"] = {"enum": [f"{group}/{version['name']}"]}
            schema["properties"]["kind"] = {"enum": [kind]}
            schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "spec"})
            schema["$schema"] = "http://json-schema.org/draft-07/schema#"
            filename = f"{kind.lower()}-{group.split('.')[0]}-{version['name']}.json"
            (out / filename).write_text(json.dumps(schema))
            made.append(filename)
    return made
