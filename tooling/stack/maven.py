"""The one place jars come from Maven Central: ``mvn dependency:copy-dependencies`` of a pom in
``stack/`` into a cache folder shared by every checkout, used while its marker file exists.

The marker is written only after Maven succeeded, so a half-finished download is never used;
two processes fetching at once each copy into their own temporary folder and the first to
finish wins.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tooling.stack import prereqs
from tooling.stack.errors import StackError


def fetch(
    pom: Path,
    dest: Path,
    *,
    expect: str,
    what: str,
    report: prereqs.Report,
    transitive: bool = True,
) -> Path:
    """The folder ``dest`` holding the jars ``pom`` names (one matching the glob ``expect``)."""
    marker = dest.parent / "fetched.ok"
    if marker.is_file() and any(dest.glob(expect)):
        return dest
    mvn = prereqs.maven()
    if not pom.is_file():
        raise StackError(f"{pom} is missing: the local stack runs from a checkout of the repo")
    report(f"fetching {what} from Maven Central into {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    argv = [
        mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
    ]  # fmt: skip
    if not transitive:
        argv.append("-DexcludeTransitive=true")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StackError(f"Maven did not fetch {what} within 30 minutes") from exc
    if done.returncode != 0 or not any(tmp.glob(expect)):
        shutil.rmtree(tmp, ignore_errors=True)
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise StackError(
            f"Maven could not fetch {what} (exit {done.returncode})",
            hint=f"check network access to Maven Central; output:\n{output}",
        )
    if marker.is_file():  # another process finished first; keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
        return dest
    shutil.rmtree(dest, ignore_errors=True)  # a partial fetch without marker
    tmp.replace(dest)
    marker.write_text(f"{what} fetched by {' '.join(argv)}\n")
    return dest
