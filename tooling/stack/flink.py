"""The Flink featurizer job on this machine: its Kafka connector jar (Maven Central, cached like
the Kafka jars) and its Python (the separate ``.venv-flink`` that ``make venv-flink`` builds,
because PyFlink's pins clash with the project's: docs/flink.md)."""

from __future__ import annotations

import re
from pathlib import Path

from tooling.stack import maven, prereqs
from tooling.stack.config import REPO_ROOT, StackSettings
from tooling.stack.errors import StackError

FLINK_POM = REPO_ROOT / "stack" / "flink-pom.xml"
FLINK_VENV = REPO_ROOT / ".venv-flink"


def connector_version(pom: Path = FLINK_POM) -> str:
    match = re.search(r"<flink\.kafka\.connector\.version>([^<]+)<", pom.read_text())
    if not match:
        raise ValueError(f"{pom} has no <flink.kafka.connector.version> property")
    return match.group(1).strip()


def connector_jar(settings: StackSettings, report: prereqs.Report) -> Path:
    version = connector_version()
    folder = maven.fetch(
        FLINK_POM,
        settings.cache_dir.expanduser().resolve() / f"flink-connector-kafka-{version}" / "jars",
        expect="flink-sql-connector-kafka-*.jar",
        what=f"the Flink Kafka connector {version}",
        report=report,
        transitive=False,
    )
    return next(folder.glob("flink-sql-connector-kafka-*.jar"))


def python() -> Path:
    """The interpreter with PyFlink installed."""
    exe = FLINK_VENV / "bin" / "python"
    if not exe.is_file():
        raise StackError(
            f"{exe} is missing: PyFlink lives in its own venv", hint="run `make venv-flink` (once)"
        )
    return exe


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest complete retained checkpoint (a ``chk-N`` folder with its ``_metadata``)."""
    done = [m.parent for m in checkpoint_dir.glob("*/chk-*/_metadata")]
    return max(done, key=lambda p: (p.stat().st_mtime, int(p.name.split("-")[1])), default=None)


def job_command() -> list[str]:
    """How the job is started: PyFlink's Python runs the job's module, which starts a local
    MiniCluster (or submits where PyFlink's configuration points)."""
    return [str(python()), "-m", "services.featurizer.flink"]


def job_env(jar: Path, **settings: str) -> dict[str, str]:
    """The environment of the job: this checkout on PYTHONPATH (the flink venv does not install
    the project: its pins clash with PyFlink's), the connector jar, and POOCH_FLINK_* settings."""
    env = {"PYTHONPATH": str(REPO_ROOT), "POOCH_FLINK_CONNECTOR_JAR": str(jar)}
    env.update({f"POOCH_FLINK_{k.upper()}": v for k, v in settings.items()})
    return env
