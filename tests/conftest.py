"""The tests' fixtures (only fixtures: what tests share otherwise is in helpers.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import httptrack
from httptrack._faults import reset_faults
from httptrack.record._writer import writer


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads the developer's HTTPTRACK_* settings or writes to their home, and each
    starts with no response cache folder open in this process (and leaves none open)."""
    import os

    from httptrack.cache import _store as _cache_store

    for name in list(os.environ):
        if name.startswith("HTTPTRACK"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    reset_faults()
    _cache_store._stores.clear()
    yield
    httptrack.flush()
    # A log a test left unwritable (locked, damaged, full) must not keep later flushes from
    # being True: what waits for it, and its spool, go with the test.
    writer().discard()
    for store in _cache_store._stores.values():
        store.close()
    _cache_store._stores.clear()
    redis_cache = sys.modules.get("httptrack.cache._redis")
    if redis_cache is not None:  # only once a test used a Redis cache
        redis_cache.close_redis_stores()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A throwaway redis-server for the session (tests/redis_server.py); skipped with the
    reason when it cannot start, a failure under CI=true."""
    from redis_server import RedisServer, need_redis

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except Exception as exc:
        need_redis(str(exc))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    """The session's Redis, emptied for this test. Its timeouts are longer than the default
    half second (redis-py's URL options): on a loaded test machine a stall that long would
    make a test's Redis "down" (tests of outages stop a server of their own)."""
    if not redis_server.ping():  # a test stopped it: bring it back
        redis_server.start()
    redis_server.flush()
    return f"{redis_server.url}?socket_timeout=5&socket_connect_timeout=5"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "calls.db"


def _started_pg_server() -> Any:
    """A throwaway PostgreSQL server (tests/pg_server.py), started. Tests that need one
    skip, saying why, when it cannot be started here; under CI=true they fail instead."""
    import os

    from pg_server import PostgresServer, ServerUnavailable

    server = PostgresServer()
    try:
        server.start()
    except ServerUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI needs a PostgreSQL server for these tests: {exc}")
        pytest.skip(f"no PostgreSQL server could be started: {exc}")
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """The session's throwaway PostgreSQL server (see _started_pg_server)."""
    server = _started_pg_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_pg_server() -> Iterator[Any]:
    """A throwaway PostgreSQL server of the test's own (to stop and restart)."""
    server = _started_pg_server()
    try:
        yield server
    finally:
        server.stop()


_pg_databases = iter(range(1, 10**6))


@pytest.fixture
def pg_url(pg_server: Any) -> str:
    """A ``postgresql://`` URL of a fresh, empty database on the session's server."""
    return str(pg_server.create_database(f"t{next(_pg_databases)}"))


@pytest.fixture(params=["sqlite", "postgres"])
def log_db(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The call log for tests run on both engines: a SQLite file, or a Postgres URL."""
    if request.param == "sqlite":
        return tmp_path / "calls.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def ui_log(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The varied call log of ``ui_log.py`` (about 50 calls through the real SDKs: failures,
    cache hits, sessions, tool calls, ten days), made once per test session. Read it only:
    a test that changes a log copies it first."""
    import os

    from ui_log import record_ui_log

    from httptrack.cache import _store as _cache_store

    folder = tmp_path_factory.mktemp("ui-log")
    with pytest.MonkeyPatch.context() as patch:  # as _isolated does for each test
        for name in list(os.environ):
            if name.startswith("HTTPTRACK"):
                patch.delenv(name)
        patch.setenv("XDG_DATA_HOME", str(folder / "xdg-data"))
        patch.setenv("XDG_CACHE_HOME", str(folder / "xdg-cache"))
        made = record_ui_log(folder / "log.db", folder / "cache")
        for store in _cache_store._stores.values():
            store.close()
        _cache_store._stores.clear()
    return made
