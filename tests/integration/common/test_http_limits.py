"""The HTTP guard every service serves behind (libs/common/http_limits.py), on the real scorer and
trainer processes: oversized bodies get 413, a slow client is dropped within the read deadline,
requests past the in-flight limit get 503, keyed routes answer 401 without a key; probes stay open."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.support.procs import ServiceProcess

LIMITS = {
    "POOCH_HTTP_MAX_BODY_BYTES": "2000",
    "POOCH_HTTP_READ_TIMEOUT_S": "2",
    "POOCH_HTTP_MAX_CONCURRENCY": "1",
    "POOCH_HTTP_MAX_HEADER_BYTES": "4096",
}
DRAFT = {
    "draft": {
        "dog_id": "d1",
        "hashtags": ["#pug"],
        "dog": {"breed": "Pug", "size": "SMALL"},
        "dog_followers": 3,
    }
}


@pytest.fixture
def scorer(topics, tmp_path):
    proc = ServiceProcess(
        "scorer",
        topics,
        tmp_path,
        role="whatif",
        registry_sync_timeout_s=5,
        api_keys="key-one,key-two",
        extra_env=LIMITS,
    )
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


@pytest.fixture
def trainer(topics, tmp_path):
    proc = ServiceProcess(
        "trainer", topics, tmp_path, replica_id="t-http", api_keys="train-key", extra_env=LIMITS
    )
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def _connect(proc: ServiceProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proc.port), timeout=10)


def _closed_within(sock: socket.socket, seconds: float, *, trickle: bytes = b"") -> float | None:
    """Seconds until the server closes the connection (one byte of ``trickle`` every 0.3 s
    meanwhile), or None if it is still open after ``seconds``."""
    started = time.monotonic()
    sock.settimeout(0.3)
    i = 0
    while time.monotonic() - started < seconds:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass
        except OSError:
            return time.monotonic() - started
        if i < len(trickle):
            try:
                sock.sendall(trickle[i : i + 1])
            except OSError:
                return time.monotonic() - started
            i += 1
    return None


def test_oversized_bodies_get_413_and_probes_stay_open(scorer, trainer):
    big = b'{"draft": "' + b"x" * 5000 + b'"}'
    for proc, path, key in ((scorer, "/v1/predict", "key-one"), (trainer, "/v1/train", "train-key")):
        headers = {"x-api-key": key, "content-type": "application/json"}
        r = proc.http.post(path, content=big, headers=headers)
        assert r.status_code == 413 and r.json()["error"] == "body_too_large", (path, r.text)

        def chunks():  # no Content-Length: the bytes actually sent count
            for _ in range(6):
                yield b"x" * 1000

        r = proc.http.post(path, content=chunks(), headers=headers)
        assert r.status_code == 413, (path, r.text)
        assert proc.http.get("/healthz").status_code == 200
        assert proc.http.get("/metrics").status_code == 200
    assert scorer.metric_sum("pooch_http_rejected_total", reason="too_large") == 2


def test_a_slow_client_is_dropped_within_the_read_timeout(scorer):
    head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-API-Key: key-one\r\nContent-Length: 40\r\n\r\n"
    silent = _connect(scorer)  # connects and sends nothing
    slow_head = _connect(scorer)  # sends its head a byte at a time, forever
    slow_body = _connect(scorer)  # a complete head, then the body a byte at a time
    slow_body.sendall(head)
    try:
        for sock, trickle in ((silent, b""), (slow_head, head * 10), (slow_body, b"{" * 40)):
            took = _closed_within(sock, 8.0, trickle=trickle)
            assert took is not None, "the server kept a slow client's connection open"
            assert took < 6.0
    finally:
        for sock in (silent, slow_head, slow_body):
            sock.close()
    assert scorer.http.get("/healthz").status_code == 200
    assert scorer.metric_sum("pooch_http_rejected_total", reason="too_slow") >= 3


def _answer(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (or 5 s pass)."""
    sock.settimeout(5)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return got


def test_a_request_head_over_the_limit_gets_400_and_the_connection_closes(scorer):
    line = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-API-Key: key-one\r\n"
    one_big = line + b"X-Big: " + b"a" * 5000 + b"\r\nContent-Length: 2\r\n\r\n{}"
    many = line + b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 90) for i in range(60)) + b"\r\n"
    for raw in (one_big, many):
        sock = _connect(scorer)
        try:
            sock.sendall(raw)
            answer = _answer(sock)
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    # A header that never ends, sent in chunks: refused once past the limit, not buffered forever.
    sock = _connect(scorer)
    try:
        sock.sendall(line + b"X-Endless: ")
        for _ in range(4):
            sock.sendall(b"c" * 2048)
            time.sleep(0.05)
        answer = _answer(sock)
    except OSError:  # closed while we were still sending: refused too
        answer = b"HTTP/1.1 400 (closed while sending)"
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    # A head under the limit is served.
    r = scorer.http.post("/v1/predict", json=DRAFT, headers={"x-api-key": "key-one", "x-fine": "f" * 1000})
    assert r.status_code == 200, r.text


def test_requests_past_the_in_flight_limit_get_503_but_probes_answer(scorer):
    holder = _connect(scorer)  # holds the one slot: its body is still coming
    holder.sendall(
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-API-Key: key-one\r\nContent-Length: 100\r\n\r\n{"
    )
    try:
        time.sleep(0.3)
        r = scorer.http.post("/v1/predict", json=DRAFT, headers={"x-api-key": "key-one"})
        assert r.status_code == 503 and r.json()["error"] == "overloaded" and r.headers["retry-after"] == "1"
        assert scorer.http.get("/readyz").status_code == 200
    finally:
        holder.close()
    time.sleep(0.3)
    r = scorer.http.post("/v1/predict", json=DRAFT, headers={"x-api-key": "key-one"})
    assert r.status_code != 503, r.text


def test_keyed_routes_need_a_key_when_keys_are_configured(scorer, trainer):
    r = scorer.http.post("/v1/predict", json=DRAFT)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert scorer.http.post("/v1/predict", json=DRAFT, headers={"x-api-key": "wrong"}).status_code == 401
    r = scorer.http.post("/v1/predict", json=DRAFT, headers={"x-api-key": "key-two"})
    assert r.status_code == 200, r.text
    assert scorer.http.get("/v1/models").status_code == 200  # reading what serves needs no key

    assert trainer.http.post("/v1/train", json={}).status_code == 401
    r = trainer.http.post("/v1/train", json={}, headers={"x-api-key": "train-key"})
    assert r.status_code in (202, 409, 503), r.text  # past the key: the trainer's own answer
    for proc in (scorer, trainer):
        for probe in ("/healthz", "/readyz", "/metrics"):
            assert proc.http.get(probe).status_code == 200, (proc.name, probe)
    assert scorer.metric_sum("pooch_http_rejected_total", reason="unauthorized") == 2


def test_without_keys_configured_anyone_may_ask(topics, tmp_path):
    proc = ServiceProcess("trainer", topics, tmp_path, replica_id="t-open").wait_ready()
    try:
        r = proc.http.post("/v1/train", json={})
        assert r.status_code in (202, 409, 503), r.text
    finally:
        proc.stop()


def test_the_http_client_reads_normally_through_the_guard(scorer):
    with httpx.Client(base_url=scorer.url, timeout=10, headers={"x-api-key": "key-one"}) as http:
        for _ in range(3):  # keep-alive: the deadline re-arms per request
            assert http.post("/v1/predict", json=DRAFT).status_code == 200
            time.sleep(0.5)
