"""The programs the stack needs on the machine, with clear advice when one is missing.

Java and Maven are expected to be installed (Kafka is fetched as jars, not as a distribution);
redis-server is installed from Debian's packages when we run as root.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from tooling.stack.errors import StackError

Report = Callable[[str], None]
MIN_JAVA = 17  # Kafka 4 brokers need Java 17+


def java() -> str:
    path = shutil.which("java")
    if path is None:
        raise StackError(
            "java not found: the local Kafka broker needs a Java 17+ runtime",
            hint="install one, e.g. `apt-get install -y openjdk-17-jre-headless`",
        )
    try:
        out = subprocess.run(
            [path, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"`java -version` failed: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match:
        major = int(match.group(1))
        if major == 1 and match.group(2):  # "1.8" style
            major = int(match.group(2))
        if major < MIN_JAVA:
            raise StackError(
                f"java at {path} is version {major}; Kafka 4 needs Java {MIN_JAVA}+",
                hint="install openjdk-17-jre-headless (or newer) and put it first on PATH",
            )
    return path


def maven() -> str:
    path = shutil.which("mvn")
    if path is None:
        raise StackError(
            "mvn not found: Maven fetches the Kafka jars from Maven Central on first use",
            hint="install it, e.g. `apt-get install -y maven`",
        )
    return path


def redis_server(report: Report) -> str:
    """Path to redis-server, installing Debian's package first when we are root."""
    path = shutil.which("redis-server")
    if path:
        return path
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(
            "redis-server not found",
            hint="install it: `sudo apt-get install -y redis-server` (Debian/Ubuntu) "
            "or your system's redis package",
        )
    report("redis-server not found: installing Debian's redis-server package (apt-get)")
    _apt_install("redis-server")
    path = shutil.which("redis-server")
    if path is None:
        raise StackError("apt-get installed redis-server but it is still not on PATH")
    return path


def _apt_install(package: str) -> None:
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    # Debian starts a package's service on install. Our Redis runs as our own process, and a
    # system one would take port 6379 first, so service starts are refused (exit 101) via
    # policy-rc.d while apt runs, unless the machine already has its own policy.
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    try:
        if ours:
            policy.write_text("#!/bin/sh\n# written by pooch stack during apt-get install\nexit 101\n")
            policy.chmod(0o755)
        for argv in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", package],
        ):
            try:
                done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
            except subprocess.TimeoutExpired as exc:
                raise StackError(f"`{' '.join(argv)}` did not finish in 15 minutes") from exc
            if done.returncode != 0:
                raise StackError(
                    f"`{' '.join(argv)}` failed (exit {done.returncode})",
                    hint="\n".join((done.stdout + done.stderr).strip().splitlines()[-15:]),
                )
    finally:
        if ours:
            policy.unlink(missing_ok=True)
