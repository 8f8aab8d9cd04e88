"""Detached local processes tracked by pid files, and who holds a port.

A pid file holds the pid and the process start time (from ``/proc``), so a recycled pid is
never mistaken for our process and never sent a signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
# Logs are appended across restarts; past this size the old one is kept as <name>.log.1.
MAX_LOG_BYTES = 20 * 1024 * 1024
# Popen handles of the children this Python process started, so they are reaped when stopped
# (a stopped child that is never waited for lingers as a zombie and looks alive in /proc).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
START_MARK = "===== pooch stack: starting"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if it is gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # a zombie or dead process is not running
        return None
    return fields[19]  # field 22 overall


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def alive(pid: int, start_time: str | None = None) -> bool:
    _reap(pid)
    if PROC.is_dir():
        current = _start_time(pid)
        return current is not None and (start_time is None or current == start_time)
    try:  # no /proc (not Linux): fall back to signal 0
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmdline(pid: int) -> str:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(PROC / str(pid) / "cwd"))
    except OSError:
        return None


@dataclass
class ManagedProcess:
    """One detached process of the stack: its pid file and its log."""

    name: str
    pid_file: Path
    log_file: Path

    def pid(self) -> int | None:
        """The pid if our process is running; stale pid files are removed."""
        try:
            pid_text, _, start = self.pid_file.read_text().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if alive(pid, start or None):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def adopt(self, pid: int) -> None:
        """Record ``pid`` as ours (a process of this stack whose pid file was lost)."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{pid} {_start_time(pid) or ''}\n")

    def start(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None) -> int:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self.log_file.exists() and self.log_file.stat().st_size > MAX_LOG_BYTES:
            self.log_file.replace(self.log_file.with_name(self.log_file.name + ".1"))
        with self.log_file.open("ab") as log:
            log.write(f"\n{START_MARK} {self.name} at {time.ctime()} =====\n".encode())
            log.flush()
            # A new session detaches the process from our terminal and process group, so it
            # outlives this command and a Ctrl-C in the shell does not reach it.
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        _CHILDREN[proc.pid] = proc
        self.adopt(proc.pid)
        return proc.pid

    def stop(self, timeout: float) -> bool:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        start = _start_time(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, start, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # the whole session, in case it forked
            _wait_gone(pid, start, 10.0)
        self.pid_file.unlink(missing_ok=True)
        return True


def _wait_gone(pid: int, start: str | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid, start):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def port_free(host: str, port: int) -> bool:
    """True if nothing listens on ``host:port`` (a socket in TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for private stacks in tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_owner(port: int) -> int | None:
    """The pid listening on TCP ``port``, when /proc lets us see it (else None)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for proc_dir in PROC.iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            for fd in (proc_dir / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc_dir.name)
        except OSError:  # another user's process, or it just exited
            continue
    return None


def describe_pid(pid: int | None) -> str:
    if pid is None:
        return "a process we cannot see (another user?)"
    cmd = cmdline(pid)
    if len(cmd) > 160:
        cmd = cmd[:157] + "..."
    return f"pid {pid} ({cmd})" if cmd else f"pid {pid}"


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log since its latest start (older runs would only confuse)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    mark = text.rfind(START_MARK)
    if mark >= 0:
        text = text[mark:]
    return "\n".join(text.splitlines()[-lines:])
