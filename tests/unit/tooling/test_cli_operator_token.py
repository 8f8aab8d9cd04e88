"""``pooch models pause|resume|activate`` take the operator token from a file or the environment
(never needing it on the command line, where ``ps`` shows it); ``--token`` still works, with a
deprecation warning."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from tooling.cli.models import models_app


class _Supervisor(http.server.BaseHTTPRequestHandler):
    """Answers every POST like the supervisor and remembers the Authorization header."""

    seen: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        _Supervisor.seen.append(self.headers.get("authorization"))
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps({"written": [], "now": {"model_version": "m1", "status": "paused"}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def supervisor_url() -> Iterator[str]:
    _Supervisor.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Supervisor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def _run(args: list[str], url: str, **env: str):
    return CliRunner().invoke(models_app, args, env={"POOCH_SUPERVISOR_URL": url, **env})


def test_the_token_comes_from_a_file_given_by_option_or_environment(supervisor_url, tmp_path):
    secret = tmp_path / "token"
    secret.write_text("from-the-file\n")
    r = _run(["pause", "m1", "--token-file", str(secret)], supervisor_url)
    assert r.exit_code == 0, r.output
    r = _run(["resume", "m1"], supervisor_url, POOCH_SUPERVISOR_OPERATOR_TOKEN_FILE=str(secret))
    assert r.exit_code == 0, r.output
    # The file wins over a token in the environment.
    r = _run(
        ["activate", "m1", "--token-file", str(secret)], supervisor_url, POOCH_SUPERVISOR_OPERATOR_TOKEN="env"
    )
    assert r.exit_code == 0, r.output
    assert _Supervisor.seen == ["Bearer from-the-file"] * 3
    assert "deprecated" not in r.output


def test_the_environment_still_works_and_token_on_the_command_line_warns(supervisor_url):
    r = _run(["pause", "m1"], supervisor_url, POOCH_SUPERVISOR_OPERATOR_TOKEN="from-env")
    assert r.exit_code == 0 and "deprecated" not in r.output, r.output
    r = _run(["pause", "m1", "--token", "on-the-line"], supervisor_url)
    assert r.exit_code == 0, r.output
    assert "--token on the command line is deprecated" in r.output
    assert _Supervisor.seen == ["Bearer from-env", "Bearer on-the-line"]


def test_an_unreadable_or_empty_token_file_is_refused_before_any_request(supervisor_url, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    r = _run(["pause", "m1", "--token-file", str(empty)], supervisor_url)
    assert r.exit_code == 1 and "is empty" in r.output
    r = _run(["pause", "m1", "--token-file", str(tmp_path / "missing")], supervisor_url)
    assert r.exit_code != 0
    assert _Supervisor.seen == []
