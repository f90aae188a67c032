"""The call log in Postgres, on a real throwaway server (tests/pg_server.py): the same rows
through the same writer and spool as SQLite, read back the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2
import pytest
from openai import OpenAI

import httptrack
from httptrack._settings import Settings
from httptrack.log._postgres import PostgresStore
from httptrack.log._url import DatabaseURL


def chat_handler(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Bonjour le monde"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
        },
    )


def test_calls_recorded_in_postgres(pg_url: str) -> None:
    transport = httptrack.TrackingTransport(httpx2.MockTransport(chat_handler), db=pg_url)
    client = OpenAI(api_key="sk-test-123", http_client=httpx2.Client(transport=transport))
    for _ in range(3):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "say hello"}]
        )
    assert httptrack.flush()
    import psycopg

    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT model, input_tokens, cost_usd, properties, started_at FROM calls"
        ).fetchall()
        assert len(rows) == 3
        assert rows[0][0] == "gpt-4o-mini" and rows[0][1] == 9
        found = conn.execute(
            "SELECT count(*) FROM calls WHERE search @@ to_tsquery('simple', 'hello')"
        ).fetchone()
        assert found == (3,)
        assert "sk-test-123" not in str(conn.execute("SELECT request_headers::text FROM calls").fetchall())


def test_url_prints_without_password(pg_url: str) -> None:
    url = DatabaseURL(pg_url)
    assert "s3cret-pw" not in str(url) and "s3cret-pw" not in repr(url)
    settings = Settings(db=pg_url)
    assert settings.db == url
    assert "s3cret-pw" not in repr(settings)
    assert "s3cret-pw" not in repr(httptrack.TrackingTransport(db=pg_url))


def test_duplicates_are_not_errors(pg_url: str) -> None:
    from httptrack.log._schema import COLUMN_NAMES

    store = PostgresStore(DatabaseURL(pg_url))
    row = dict.fromkeys(COLUMN_NAMES)
    row.update(
        id="01TEST",
        started_at="2026-01-02T03:04:05.678Z",
        provider="openai",
        status="success",
        properties='{"a": 1}',
    )
    values = tuple(row[c] for c in COLUMN_NAMES)
    assert store.write([values]) == (1, 0, [])
    assert store.write([values]) == (0, 1, [])
    bad = dict(row, id="01BAD", properties="{not json")
    result = store.write(
        [
            tuple(dict(row, id="01OK", response_body="nul\x00here")[c] for c in COLUMN_NAMES),
            tuple(bad[c] for c in COLUMN_NAMES),
        ]
    )
    assert result.written == 1 and [i for i, _ in result.refused] == [1]
    # The batch a row spoiled is undone whole: the next batch is written as usual.
    assert store.write([tuple(dict(row, id="01NEXT")[c] for c in COLUMN_NAMES)]) == (1, 0, [])
    store.close()


def test_server_down_raises_log_unavailable_without_password() -> None:
    from httptrack._errors import LogUnavailable

    store = PostgresStore(DatabaseURL("postgresql://u:hunter2pw@127.0.0.1:1/db"))
    with pytest.raises(LogUnavailable) as info:
        store.open()
    assert "hunter2pw" not in str(info.value) and "127.0.0.1" in str(info.value)


# -- reading: the same answers from both engines ----------------------------------------------


def _copy_into_postgres(sqlite_db: Path, url: str) -> int:
    """Every row of a SQLite log, written into a Postgres log through its backend."""
    import sqlite3

    from httptrack.log._bodies import BODY_FUNCTION, COMPRESSED_COLUMNS, register_functions
    from httptrack.log._schema import COLUMN_NAMES

    conn = sqlite3.connect(sqlite_db)
    register_functions(conn)  # long bodies are stored compressed in SQLite: copied as text
    try:
        names = ", ".join(
            f'{BODY_FUNCTION}("{c}")' if c in COMPRESSED_COLUMNS else f'"{c}"' for c in COLUMN_NAMES
        )
        rows = conn.execute(f"SELECT {names} FROM calls").fetchall()
    finally:
        conn.close()
    store = PostgresStore(DatabaseURL(url))
    try:
        assert store.write(rows).refused == []
    finally:
        store.close()
    return len(rows)


@pytest.fixture
def both(ui_log: Any, pg_url: str) -> tuple[Path, str]:
    assert _copy_into_postgres(ui_log.db, pg_url) > 20
    return ui_log.db, pg_url


FILTERS: list[dict[str, Any]] = [
    {},
    {"since": "3d"},
    {"until": "2d", "since": "8d"},
    {"status": "error"},
    {"cached": True},
    {"model": "gpt-4o"},
    {"user": ["alice", "bob"]},
    {"provider": "anthropic", "operation": "chat"},
    {"query": "umbrella"},
    {"query": '"online umbrella" shop'},
    {"query": "umbr*"},
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f) or "all")
def test_reader_answers_the_same(both: tuple[Path, str], filters: dict[str, Any]) -> None:
    sqlite_db, url = both
    with httptrack.open_log(sqlite_db) as lite, httptrack.open_log(url) as pg:
        assert pg.count(**filters) == lite.count(**filters)
        for a, b in zip(pg.rows(**filters), lite.rows(**filters), strict=True):
            assert {k: v for k, v in a.items() if b[k] != v} == {}
        assert list(
            pg.rows(limit=3, newest_first=False, columns=["id", "started_at", "properties"], **filters)
        ) == list(
            lite.rows(limit=3, newest_first=False, columns=["id", "started_at", "properties"], **filters)
        )
        for by in (None, "model", "user", "day", "provider", "requested_model", "status"):
            assert _rounded(pg.stats(by=by, **filters)) == _rounded(lite.stats(by=by, **filters)), by


def test_search_finds_something(both: tuple[Path, str]) -> None:
    _, url = both
    with httptrack.open_log(url) as pg:
        assert pg.count(query="umbrella") > 0
        first = next(pg.calls())
        assert pg.get(first.id[:-6]) is None or pg.get(first.id[:-6]).id.startswith(first.id[:-6])  # type: ignore[union-attr]
        assert pg.get(first.id) == first
        assert "s3cret-pw" not in repr(pg) and pg.status()["calls"] == pg.count()


def _rounded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


# -- a server that goes away ------------------------------------------------------------------


def test_server_stopped_mid_run_costs_no_call_and_no_row(own_pg_server: Any, caplog: Any) -> None:
    """The server stops while the app makes calls: every call succeeds all the same, the
    rows wait (counted as a `database` fault, never `rows_dropped`), and all of them arrive
    once it is back. No message carries the password."""
    from httptrack._fake import mock_transport
    from httptrack._faults import fault_counts

    url = own_pg_server.url()
    transport = httptrack.TrackingTransport(mock_transport(httpx2), db=url, cache=False)
    client = OpenAI(api_key="sk-test", max_retries=0, http_client=httpx2.Client(transport=transport))

    def ask(n: int) -> None:
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{n}"}]
        )
        assert reply.choices[0].message.content

    for n in range(5):
        ask(n)
    assert httptrack.flush()
    own_pg_server.pause()
    for n in range(5, 25):
        ask(n)  # the server is down: the calls go through untouched
    assert not httptrack.flush(timeout=10)  # they wait, and flush says so
    assert fault_counts().get("database", 0) >= 1 and not fault_counts().get("rows_dropped")
    own_pg_server.resume()
    for n in range(25, 30):
        ask(n)
    assert httptrack.flush(timeout=30)
    with httptrack.open_log(url) as log:
        assert sorted(c.request_body.split('"q')[1].split('"')[0] for c in log.calls()) == sorted(  # type: ignore[union-attr]
            str(n) for n in range(30)
        )
    assert "127.0.0.1" in caplog.text and PASSWORD not in caplog.text


PASSWORD = "s3cret-pw"


def test_fork_child_leaves_the_parents_connection_alone(pg_url: str) -> None:
    """A child forked after the parent wrote (its writer's connection and the limits'
    connection inherited) records its own calls and exits; the parent's connections keep
    working: every row of both arrives."""
    import multiprocessing

    from httptrack import Limit
    from httptrack._fake import mock_transport

    transport = httptrack.TrackingTransport(
        mock_transport(httpx2), db=pg_url, cache=False, limits=[Limit(requests=1000, per="day")]
    )
    client = OpenAI(api_key="sk-test", max_retries=0, http_client=httpx2.Client(transport=transport))

    def ask() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])

    ask()
    assert httptrack.flush()

    def child() -> None:
        ask()
        ask()
        assert httptrack.flush()

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(60)
    assert process.exitcode == 0
    ask()  # the parent's writer and counters, on their connections of before the fork
    assert httptrack.flush()
    with httptrack.open_log(pg_url) as log:
        assert log.count() == 4
    import psycopg

    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT used FROM limit_counters").fetchone() == (4.0,)


def test_calls_of_a_killed_process_are_recovered_from_its_local_spool(pg_url: str, tmp_path: Path) -> None:
    """A process that dies (``os._exit``) before its writer wrote: its calls are in its
    spool, a local folder for a Postgres log, and the next reader writes them in."""
    import os
    import subprocess
    import sys
    import textwrap

    program = textwrap.dedent(
        """
        import os, httpx2, httptrack
        from httptrack._fake import mock_transport
        from httptrack.record import _writer
        _writer.Writer._write = lambda self, batch: None   # the writer never gets to them
        client = httpx2.Client(transport=httptrack.TrackingTransport(mock_transport(httpx2), cache=False))
        for n in range(7):
            client.post("https://api.openai.com/v1/chat/completions",
                        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).read()
        os._exit(0)
        """
    )
    env = {**os.environ, "HTTPTRACK_DB": pg_url, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", program], env=env, check=True, timeout=120)
    spools = list((Path(os.environ["XDG_DATA_HOME"]) / "httptrack" / "postgres").glob("*-spool/*.spool"))
    assert spools, "the calls were spooled locally"
    with httptrack.open_log(pg_url) as log:
        assert log.count() == 7


def test_the_sqlite_logs_views_exist_in_postgres_with_the_same_figures(both: tuple[Path, str]) -> None:
    import sqlite3

    import psycopg

    from httptrack.log._views import VIEWS

    sqlite_db, url = both
    lite = sqlite3.connect(sqlite_db)
    try:
        with psycopg.connect(url) as pg:
            for name in VIEWS:
                assert pg.execute(f"SELECT count(*) FROM {name}").fetchone()[0] > 0, name  # type: ignore[index]
            for view, key in (("cost_by_model", "model"), ("cost_by_user", "user"), ("cost_per_day", "day")):
                pg_rows = {
                    str(k): (n, round(float(c or 0), 6))
                    for k, n, c in pg.execute(f'SELECT "{key}", calls, cost_usd FROM {view}').fetchall()
                }
                lite_rows = {
                    str(k): (n, round(float(c or 0), 6))
                    for k, n, c in lite.execute(f'SELECT "{key}", calls, cost_usd FROM {view}').fetchall()
                }
                assert pg_rows == lite_rows, view
            daily = pg.execute(
                "SELECT day AS time, model, sum(cost_usd) FROM calls_daily GROUP BY 1, 2 ORDER BY 1"
            ).fetchall()
            assert daily
    finally:
        lite.close()


def test_limits_with_the_server_down_let_calls_through(tmp_path: Path) -> None:
    """Limits counted in a Postgres log whose server cannot be reached: every call goes
    ahead (unlimited, the fault reported), and after the first failure without waiting to
    connect again."""
    from httptrack import Limit
    from httptrack._fake import mock_transport
    from httptrack._faults import fault_counts

    url = "postgresql://u:hunter2pw@127.0.0.1:1/db"
    transport = httptrack.TrackingTransport(
        mock_transport(httpx2), db=url, cache=False, limits=[Limit(requests=1, per="day")]
    )
    client = OpenAI(api_key="sk-test", max_retries=0, http_client=httpx2.Client(transport=transport))
    for _ in range(3):  # a limit of 1 request: the 2nd and 3rd would be refused if counted
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert fault_counts().get("limits", 0) >= 1


def test_url_hides_the_ssl_key_password_too() -> None:
    """libpq's ``sslpassword=`` (the client key's passphrase) is a credential like
    ``password=``: not in ``str``/``repr`` and scrubbed from messages."""
    url = DatabaseURL("postgresql://app@db.internal/calls?sslpassword=k3y-pass&sslmode=require")
    assert "k3y-pass" not in str(url)
    assert "k3y-pass" not in repr(url)
    assert "sslmode=require" in str(url)
    assert "k3y-pass" not in url.scrub("could not read key with passphrase k3y-pass")


def test_limits_do_not_wait_forever_on_a_lock_held_elsewhere(pg_url: str) -> None:
    """Another session holds the limits' lock and never lets go (a process stuck in its
    transaction): a call checked against limits waits at most the lock timeout, then goes
    ahead (unlimited, the fault reported) instead of hanging the app."""
    import threading

    import psycopg

    from httptrack import Limit
    from httptrack._fake import mock_transport
    from httptrack._faults import fault_counts
    from httptrack.limits._postgres import LIMITS_LOCK

    transport = httptrack.TrackingTransport(
        mock_transport(httpx2), db=pg_url, cache=False, limits=[Limit(requests=100, per="day")]
    )
    client = OpenAI(api_key="sk-test", max_retries=0, http_client=httpx2.Client(transport=transport))
    ask = [{"role": "user", "content": "hi"}]
    client.chat.completions.create(model="gpt-4o-mini", messages=ask)  # connected, schema made
    with psycopg.connect(pg_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [LIMITS_LOCK])
        done = threading.Event()

        def call() -> None:
            client.chat.completions.create(model="gpt-4o-mini", messages=ask)
            done.set()

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        finished = done.wait(30)
        holder.execute("SELECT pg_advisory_unlock(%s)", [LIMITS_LOCK])
        caller.join(30)
    assert finished
    assert fault_counts().get("limits", 0) >= 1
