"""Process supervision for the stack's services: supervisord restarts what crashes, with backoff.

The stack's pid files know whether a service runs; they cannot bring back one that died. This
module hands the services to supervisord (the `supervisor` package, a long-kept process
supervisor), one supervisord per set of services (a demo's, say), with:

* ``autorestart``: a service that exits unexpectedly, SIGKILL included, is started again;
* backoff: a service that dies within ``startsecs`` of starting counts as a failed start and is
  retried after 1 s, 2 s, 3 s ... up to ``startretries`` times, then left FATAL (a crash loop
  must not eat the machine);
* SIGTERM to the whole process group on stop, SIGKILL after ``stopwaitsecs``.

supervisord itself is one process of the stack (pid file, log), started in its own session so
it outlives nothing it should not: stopping the supervision stops every service first. We talk
to it over its XML-RPC interface on a unix socket that only this user can open.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tooling.stack.errors import StackError
from tooling.stack.processes import ManagedProcess, tail

# supervisord's states of a program (supervisor.states.ProcessStates)
RUNNING = "RUNNING"
FATAL = "FATAL"
_SOCKET_MAX = 100  # unix socket paths are limited to 108 bytes


@dataclass(frozen=True)
class Program:
    """One supervised service: ``python -m <module>`` with exactly this environment."""

    name: str
    module: str
    env: Mapping[str, str]
    cwd: Path
    startsecs: int = 5
    startretries: int = 8
    stopwaitsecs: int = 30
    autostart: bool = True


@dataclass
class Supervision:
    """A supervisord of its own in ``folder`` running ``programs``; see the module docstring."""

    folder: Path
    programs: list[Program] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.conf = self.folder / "supervisord.conf"
        self.logs = self.folder / "logs"
        sock = self.folder / "supervisord.sock"
        if len(str(sock)) > _SOCKET_MAX:
            digest = hashlib.sha256(str(self.folder).encode()).hexdigest()[:16]
            sock = Path(tempfile.gettempdir()) / f"pooch-supervisord-{digest}.sock"
        self.socket = sock
        self.process = ManagedProcess(
            "supervisord", self.folder / "supervisord.pid", self.logs / "supervisord.log"
        )

    # -- life cycle ------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        """Write the configuration, start supervisord and wait until it answers."""
        if self.process.pid() is not None:
            raise StackError(f"a supervisord already runs for {self.folder}")
        self.logs.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.config_text())
        self.socket.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "supervisor.supervisord", "--nodaemon", "-c", str(self.conf)]
        self.process.start(argv, cwd=self.folder)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.rpc().supervisor.getState()["statename"] == "RUNNING":
                    return
            except (OSError, xmlrpc.client.Fault):
                pass
            if self.process.pid() is None:
                raise StackError(
                    "supervisord exited while starting",
                    log=self.process.log_file,
                    log_tail=tail(self.process.log_file),
                )
            if time.monotonic() > deadline:
                raise StackError(f"supervisord did not answer on {self.socket} within {timeout:g} s")
            time.sleep(0.1)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop every program (SIGTERM to its group, then SIGKILL), then supervisord."""
        pid = self.process.pid()
        if pid is None:
            return
        with contextlib.suppress(OSError, xmlrpc.client.Fault):
            self.rpc().supervisor.stopAllProcesses(True)
        self.process.stop(timeout)
        self.socket.unlink(missing_ok=True)

    # -- looking and acting ---------------------------------------------------------------

    def rpc(self) -> Any:
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        # the URL's host is ignored: the transport talks to the socket
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def info(self, name: str) -> dict[str, Any]:
        return self.rpc().supervisor.getProcessInfo(name)

    def pid(self, name: str) -> int | None:
        info = self.info(name)
        if info["statename"] != RUNNING or not info["pid"]:
            return None
        return int(info["pid"])

    def states(self) -> dict[str, str]:
        return {p["name"]: p["statename"] for p in self.rpc().supervisor.getAllProcessInfo()}

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to the service's process itself (not through supervisord): a crash."""
        pid = self.pid(name)
        if pid is None:
            raise StackError(f"{name} is not running under supervision")
        os.kill(pid, sig)
        return pid

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 60.0) -> int:
        """The new pid once supervisord has started the service again after ``old_pid`` died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, xmlrpc.client.Fault):
                info = self.info(name)
                if info["statename"] == RUNNING and info["pid"] and info["pid"] != old_pid:
                    return int(info["pid"])
                if info["statename"] == FATAL:
                    raise StackError(f"{name} could not be restarted (FATAL after its retries)")
            time.sleep(0.1)
        raise StackError(f"{name} was not restarted within {timeout:g} s")

    def log_of(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    # -- configuration --------------------------------------------------------------------

    def env_file(self, program: Program) -> Path:
        return self.folder / f"{program.name}.env.json"

    def write_env(self, name: str, env: Mapping[str, str]) -> None:
        """The environment the program gets from its next start on (the launcher reads it then)."""
        path = self.folder / f"{name}.env.json"
        path.write_text(json.dumps(dict(env)))
        path.chmod(0o600)

    def running(self) -> bool:
        if self.process.pid() is None:
            return False
        try:
            return self.rpc().supervisor.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Fault):
            return False

    def config_text(self) -> str:
        lines = [
            "; written by tooling/stack/supervision.py: do not edit, it is rewritten on start",
            "[unix_http_server]",
            f"file={_escape(str(self.socket))}",
            "chmod=0700",
            "",
            "[supervisord]",
            f"logfile={_escape(str(self.logs / 'supervisord.events.log'))}",
            "logfile_maxbytes=10MB",
            f"pidfile={_escape(str(self.folder / 'supervisord.self.pid'))}",
            f"childlogdir={_escape(str(self.logs))}",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl=unix://{_escape(str(self.socket))}",
        ]
        for p in self.programs:
            env_file = self.env_file(p)
            env_file.write_text(json.dumps(dict(p.env)))
            env_file.chmod(0o600)
            command = f"{sys.executable} -m tooling.stack.launch {env_file} {p.module}"
            lines += [
                "",
                f"[program:{p.name}]",
                f"command={_escape(command)}",
                f"directory={_escape(str(p.cwd))}",
                f"autostart={'true' if p.autostart else 'false'}",
                "autorestart=true",
                f"startsecs={p.startsecs}",
                f"startretries={p.startretries}",
                "stopsignal=TERM",
                f"stopwaitsecs={p.stopwaitsecs}",
                "stopasgroup=true",
                "killasgroup=true",
                "redirect_stderr=true",
                f"stdout_logfile={_escape(str(self.log_of(p.name)))}",
                "stdout_logfile_maxbytes=20MB",
                "stdout_logfile_backups=1",
            ]
        return "\n".join(lines) + "\n"


# states in which a program has a process (supervisor.states.RUNNING_STATES plus STOPPING)
_ALIVE = ("RUNNING", "STARTING", "STOPPING")


class SupervisedService:
    """One service of the local stack run by the stack's supervisord, with the interface the
    stack manager uses for its processes (``pid``, ``start``, ``stop``, ``adopt``, ``log_file``).

    supervisord is started with the first service (every service is a program that does not
    start by itself) and shut down when the last one is stopped, so ``pooch stack down`` leaves
    nothing behind.
    """

    def __init__(self, name: str, supervision: Supervision) -> None:
        self.name = name
        self.supervision = supervision
        self.log_file = supervision.log_of(name)

    def pid(self) -> int | None:
        if self.supervision.process.pid() is None:
            return None
        try:
            info = self.supervision.info(self.name)
        except (OSError, xmlrpc.client.Fault):
            return None
        return int(info["pid"]) if info["statename"] in _ALIVE and info["pid"] else None

    def adopt(self, pid: int) -> None:
        """Nothing to record: supervisord knows its processes."""

    def start(self, argv, *, cwd: Path, env: Mapping[str, str] | None = None) -> int:
        if not self.supervision.running():
            self.supervision.start()
        self.supervision.write_env(self.name, env or {})
        self.supervision.rpc().supervisor.startProcess(self.name, False)
        deadline = time.monotonic() + 30
        while (pid := self.pid()) is None:
            if time.monotonic() > deadline:
                raise StackError(
                    f"supervisord did not start {self.name}", log=self.log_file, log_tail=tail(self.log_file)
                )
            time.sleep(0.1)
        return pid

    def stop(self, timeout: float) -> bool:
        if self.pid() is None:
            return False
        with contextlib.suppress(OSError, xmlrpc.client.Fault):
            self.supervision.rpc().supervisor.stopProcess(self.name, True)
        with contextlib.suppress(OSError, xmlrpc.client.Fault):
            if all(state not in _ALIVE for state in self.supervision.states().values()):
                self.supervision.stop(timeout)
        return True


def _escape(value: str) -> str:
    """supervisord expands %(name)s in values: a literal % is written %%."""
    return value.replace("%", "%%")
