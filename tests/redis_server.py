"""A throwaway ``redis-server`` for the tests: a temp dir, a free loopback port, no
persistence; stopped (and restarted) on demand. Tests that need one skip with the reason
when it cannot start, except under ``CI=true``, where they fail."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

__all__ = ["RedisServer", "need_redis"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def need_redis(reason: str) -> None:
    """Skip (or, under CI, fail) a test that needs a Redis server it cannot have."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and Redis is needed: {reason}")
    pytest.skip(f"needs a redis-server (apt-get install redis-server): {reason}")


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 (``url``: its database 0)."""

    def __init__(self, directory: Path, *, maxmemory: str = "64mb") -> None:
        self.directory = directory
        self.port = _free_port()
        self.maxmemory = maxmemory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (on the same port as before after a :meth:`stop`), and wait until it
        answers (at most 10 s)."""
        if not os.path.exists(REDIS_SERVER):
            raise RuntimeError(f"{REDIS_SERVER} is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--maxmemory",
                self.maxmemory,
                "--maxmemory-policy",
                "volatile-lru",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited ({self.process.returncode}): {err.strip()[-500:]}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer within 10 s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()

    def flush(self) -> None:
        """Empty every database (between tests)."""
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()
