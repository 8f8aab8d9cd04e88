"""Sending many requests fast (raw keep-alive HTTP/1.1 connections on a few threads) and tallying the answers.

Not a test module: helpers for ``test_fuzz_http.py``.
"""

from __future__ import annotations

import collections
import json
import random
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

THREADS = 6
HANG_S = 5.0  # an answer later than this is a hang (2 s was reached on a loaded 2-core machine)
CONTENT_TYPES = ["application/json"] * 8 + ["text/plain", "application/x-www-form-urlencoded", ""]


@dataclass
class Answer:
    index: int
    path: str
    status: int  # 0: no answer (timeout, connection dropped)
    seconds: float
    body: bytes
    json: Any = None
    error: str | None = None


@dataclass
class Tally:
    name: str
    answers: list[Answer] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.answers)

    @property
    def codes(self) -> collections.Counter:
        return collections.Counter(a.status for a in self.answers)

    @property
    def max_seconds(self) -> float:
        return max((a.seconds for a in self.answers), default=0.0)

    def bad(self) -> list[Answer]:
        """Answers that break the rules: none, 5xx, or too late."""
        return [a for a in self.answers if a.status == 0 or a.status >= 500 or a.seconds > HANG_S]

    def row(self) -> str:
        codes = self.codes
        ok = sum(n for c, n in codes.items() if 200 <= c < 300)
        four = ", ".join(f"{c}:{n}" for c, n in sorted(codes.items()) if 400 <= c < 500)
        five = sum(n for c, n in codes.items() if c >= 500 or c == 0)
        return f"{self.name:<44} {self.sent:>7} {ok:>6} {five:>5} {self.max_seconds:>7.3f}s  4xx {four}"

    def summary(self) -> str:
        bad = self.bad()
        examples = [(a.path, a.status, round(a.seconds, 3), a.error, a.body[:200]) for a in bad[:5]]
        return f"{self.row()}\n  {len(bad)} broken answers, e.g. {examples}"


HEADER = f"{'endpoint':<44} {'sent':>7} {'2xx':>6} {'5xx':>5} {'max':>8}  4xx by code"


class RawClient:
    """HTTP/1.1 over one keep-alive socket, with as little client work as possible (the fuzz
    loops send tens of thousands of requests on a machine shared with the services)."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.addr = (host, port)
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection(self.addr, timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.addr[0]}:{self.addr[1]}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            head.append(f"Content-Length: {len(body)}")
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b""))
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        raw_head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if fields.get("transfer-encoding", "").lower() == "chunked":
            content = self._chunked()
        else:
            length = int(fields.get("content-length", "0"))
            while len(self.buf) < length:
                self._recv()
            content, self.buf = self.buf[:length], self.buf[length:]
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, content

    def _recv(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed by the server")
        self.buf += data

    def _chunked(self) -> bytes:
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                self._recv()
            size_line, self.buf = self.buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(self.buf) < size + 2:
                self._recv()
            out, self.buf = out + self.buf[:size], self.buf[size + 2 :]
            if size == 0:
                return out


def send_all(
    base_url: str,
    name: str,
    requests: Sequence[tuple[str, str, bytes | None]],
    *,
    headers: Callable[[int], dict[str, str]] = lambda i: {},
    threads: int = THREADS,
) -> Tally:
    """Send ``(method, path, body)`` requests on ``threads`` keep-alive connections; every answer."""
    url = urllib.parse.urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    local = threading.local()
    clients: list[RawClient] = []
    lock = threading.Lock()

    def client() -> RawClient:
        c = getattr(local, "client", None)
        if c is None:
            c = local.client = RawClient(host, port, HANG_S + 3)
            with lock:
                clients.append(c)
        return c

    def one(i: int) -> Answer:
        method, path, body = requests[i]
        rng = random.Random(i)
        h = {"Content-Type": rng.choice(CONTENT_TYPES)} | headers(i)
        started = time.perf_counter()
        c = client()
        try:
            status, content = c.request(method, path, body, h)
        except (OSError, ValueError, IndexError) as exc:
            c.close()  # a dropped connection: the next request opens a new one
            return Answer(i, path, 0, time.perf_counter() - started, b"", error=repr(exc))
        seconds = time.perf_counter() - started
        doc = None
        if content[:1] in (b"{", b"["):
            try:
                doc = json.loads(content)
            except ValueError:
                doc = None
        return Answer(i, path, status, seconds, content, doc)

    try:
        with ThreadPoolExecutor(threads) as pool:
            answers = list(pool.map(one, range(len(requests))))
    finally:
        for c in clients:
            c.close()
    return Tally(name, answers)


def print_table(title: str, rows: list[str], header: str = HEADER) -> None:
    print(f"\n== {title}\n{header}\n" + "\n".join(rows), flush=True)
