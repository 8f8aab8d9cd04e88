"""redis-server as a local process: a cache and online view only, so nothing is persisted."""

from __future__ import annotations

import time

import redis as redis_client

from tooling.stack.config import StackPaths, StackSettings
from tooling.stack.errors import StackError
from tooling.stack.processes import ManagedProcess, tail

NAME = "redis"


def argv(settings: StackSettings, paths: StackPaths, server: str) -> list[str]:
    return [
        server,
        "--bind", settings.host,
        "--port", str(settings.redis_port),
        "--dir", str(paths.redis_dir),
        # Redis is rebuilt from the Kafka topics, never the record: no snapshots, no AOF.
        "--save", "",
        "--appendonly", "no",
        # We detach and supervise it ourselves; its log goes to stdout, appended to redis.log.
        "--daemonize", "no",
        "--logfile", "",
        "--protected-mode", "yes",
    ]  # fmt: skip


def answers(settings: StackSettings, timeout: float = 1.0) -> bool:
    client = redis_client.Redis(
        host=settings.host,
        port=settings.redis_port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    try:
        return bool(client.ping())
    except redis_client.RedisError:
        return False
    finally:
        client.close()


def wait_ready(settings: StackSettings, process: ManagedProcess) -> None:
    deadline = time.monotonic() + settings.ready_timeout
    while not answers(settings):
        if process.pid() is None:
            raise StackError(
                "redis-server exited while starting",
                log=process.log_file,
                log_tail=tail(process.log_file),
            )
        if time.monotonic() > deadline:
            raise StackError(
                f"Redis did not answer PING on {settings.host}:{settings.redis_port} within "
                f"{settings.ready_timeout:g} s",
                log=process.log_file,
                log_tail=tail(process.log_file),
            )
        time.sleep(0.1)
