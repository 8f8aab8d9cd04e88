"""supervisord supervises the stack's services: a SIGKILLed one is started again, a crash loop is
retried with backoff and then given up (FATAL), and stopping the supervision stops them all."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from tooling.stack.errors import StackError
from tooling.stack.processes import alive
from tooling.stack.supervision import FATAL, Program, Supervision

SLEEPER = """
import os, time
print("up", os.environ["GREETING"], flush=True)
while True:
    time.sleep(0.2)
"""
CRASHER = """
import sys
print("crashing", flush=True)
sys.exit(3)
"""


@pytest.fixture
def supervision(tmp_path):
    (tmp_path / "sleeper_mod.py").write_text(SLEEPER)
    (tmp_path / "crasher_mod.py").write_text(CRASHER)
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.getcwd()}", "GREETING": 'a "quoted", %value%'}
    sup = Supervision(
        tmp_path / "sup",
        [
            Program("sleeper", "sleeper_mod", env, tmp_path, startsecs=1),
            # a start counts as failed when the process dies within startsecs: generous, since a
            # loaded 2-core machine may take seconds to start an interpreter
            Program("crasher", "crasher_mod", env, tmp_path, startsecs=15, startretries=2),
        ],
    )
    sup.start()
    yield sup
    sup.stop()


def _wait_pid(sup: Supervision, name: str, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = sup.pid(name)
        if pid:
            return pid
        time.sleep(0.1)
    raise AssertionError(f"{name} never ran")


def _wait_log(sup: Supervision, name: str, text: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while sup.log_of(name).read_text().count(text) < count:
        assert time.monotonic() < deadline, sup.log_of(name).read_text()
        time.sleep(0.1)


def test_a_killed_service_is_restarted_with_its_environment_intact(supervision):
    # the environment goes through the JSON file untouched, quotes, commas and % included
    greeting = 'up a "quoted", %value%'
    _wait_log(supervision, "sleeper", greeting, 1)
    pid = _wait_pid(supervision, "sleeper")
    assert supervision.kill("sleeper", signal.SIGKILL) == pid
    new = supervision.wait_restarted("sleeper", pid, timeout=20)
    assert new != pid and alive(new)
    _wait_log(supervision, "sleeper", greeting, 2)


def test_a_crash_loop_is_retried_with_backoff_then_given_up(supervision):
    deadline = time.monotonic() + 60
    while supervision.states()["crasher"] != FATAL:
        assert time.monotonic() < deadline, supervision.states()
        time.sleep(0.2)
    # 1 start + 2 retries, the retries 1 s then 2 s apart: about 3 s at least
    assert supervision.log_of("crasher").read_text().count("crashing") == 3
    with pytest.raises(StackError, match="FATAL"):
        supervision.wait_restarted("crasher", 0, timeout=2)


def test_stopping_the_supervision_stops_every_service(tmp_path, supervision):
    pid = _wait_pid(supervision, "sleeper")
    supervision.stop()
    deadline = time.monotonic() + 10
    while alive(pid):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert supervision.process.pid() is None
    assert sys.executable  # the same interpreter ran them (a venv's, with its packages)
