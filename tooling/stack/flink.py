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
