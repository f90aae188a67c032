"""The call log on disk: schema and migrations, the background writer, flushing, fork,
many threads, faults that must not reach the app."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import read_rows, responder

import httptrack
from httptrack.log._schema import COLUMN_NAMES
from httptrack.log._sqlite import SCHEMA_VERSION, connect, migrate

CHAT = "https://api.openai.com/v1/chat/completions"
BODY = json.dumps(
    {"model": "gpt-4o-mini", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
)


def client(db: Path) -> httpx.Client:
    inner = httpx.MockTransport(responder(httpx, BODY.encode()))
    return httpx.Client(transport=httptrack.TrackingTransport(inner, db=db, cache=False))


def test_schema_has_every_contract_column(db: Path) -> None:
    with client(db) as c:
        c.post(CHAT, json={"model": "gpt-4o-mini"})
    read_rows(db)
    conn = sqlite3.connect(db)
    columns = [r[1] for r in conn.execute("PRAGMA table_info(calls)")]
    contract = [
        "id",
        "started_at",
        "provider",
        "host",
        "method",
        "endpoint",
        "operation",
        "model",
        "response_model",
        "stream",
        "status",
        "http_status",
        "error_code",
        "error_message",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "tokens_estimated",
        "cost_usd",
        "cost_saved_usd",
        "latency_ms",
        "ttft_ms",
        "cached",
        "cache_key",
        "user",
        "service",
        "session",
        "properties",
        "request_id",
        "finish_reason",
        "request_body",
        "response_body",
    ]
    assert set(contract) <= set(columns)
    assert columns == list(COLUMN_NAMES)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_call_record_fields_match_the_columns() -> None:
    assert tuple(httptrack.CallRecord.model_fields) == COLUMN_NAMES


def test_database_is_private_to_its_owner(db: Path) -> None:
    with client(db) as c:
        c.post(CHAT, json={"model": "gpt-4o-mini"})
    read_rows(db)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_an_older_database_is_upgraded_in_place_without_losing_rows(db: Path) -> None:
    # A database as an earlier release left it: fewer columns, rows in it, no user_version.
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE calls (id TEXT PRIMARY KEY, started_at TEXT, provider TEXT, model TEXT)")
    conn.execute("INSERT INTO calls VALUES ('01OLD', '2025-01-01T00:00:00.000Z', 'openai', 'gpt-4')")
    conn.commit()
    conn.close()
    conn = connect(db)
    migrate(conn)
    migrate(conn)  # idempotent
    columns = [r[1] for r in conn.execute("PRAGMA table_info(calls)")]
    assert set(COLUMN_NAMES) <= set(columns)
    assert conn.execute("SELECT id, model FROM calls").fetchall() == [("01OLD", "gpt-4")]
    conn.close()
    with client(db) as c:
        c.post(CHAT, json={"model": "gpt-4o-mini"})
    assert "01OLD" in {r["id"] for r in read_rows(db)}
    assert len(read_rows(db)) == 2


def test_many_threads_lose_nothing(db: Path) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            with client(db) as c, httptrack.attribute(user=f"t{n}"):
                for _ in range(50):
                    c.post(CHAT, json={"model": "gpt-4o-mini"})
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = read_rows(db)
    assert len(rows) == 400
    assert len({r["id"] for r in rows}) == 400
    assert {r["user"]: 0 for r in rows}.keys() == {f"t{n}" for n in range(8)}


def test_calls_in_a_row_do_not_wake_the_writer_and_share_transactions(db: Path) -> None:
    """While calls keep coming, the writer wakes on its own (every BATCH_WAIT, or when many
    calls wait): a call never wakes it for its one row, and a transaction holds many."""
    from httptrack.record import _writer

    shared = _writer.writer()
    with client(db) as c:
        c.post(CHAT, json={"model": "gpt-4o-mini"})  # the writer starts, and is busy from here
        assert httptrack.flush()
        wake = shared._wake
        woken_by_calls = 0
        app = threading.get_ident()
        real_set = wake.set

        def counting_set() -> None:
            nonlocal woken_by_calls
            woken_by_calls += threading.get_ident() == app
            real_set()

        wake.set = counting_set  # type: ignore[method-assign]
        try:
            calls = 0
            before = shared.transactions
            for _ in range(60):
                c.post(CHAT, json={"model": "gpt-4o-mini"})
                calls += 1
        finally:
            del wake.set
        assert httptrack.flush()
    # (The writer goes idle, and the next call wakes it, only after IDLE_AFTER seconds
    # without a call: a machine stalled that long between two calls may see one wake.)
    assert woken_by_calls <= 1
    assert shared.transactions - before < calls // 2
    assert len(read_rows(db)) == calls + 1


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


CALLS_SCRIPT = """
    import json, os, sys, httpx, httptrack
    body = json.dumps({"model": "gpt-4o-mini", "usage": {"prompt_tokens": 5, "completion_tokens": 2}}).encode()
    def handler(request):
        return httpx.Response(200, headers={"content-type": "application/json"}, content=body)
    client = httpx.Client(transport=httptrack.TrackingTransport(httpx.MockTransport(handler), db=sys.argv[1] if len(sys.argv) > 1 else os.environ["DB"], cache=False))
"""


def test_rows_are_flushed_at_interpreter_exit_without_an_explicit_flush(db: Path) -> None:
    done = run_python(
        CALLS_SCRIPT
        + """
    for _ in range(25):
        client.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o-mini"})
    """,
        env={"DB": str(db)},
    )
    assert done.returncode == 0, done.stderr
    assert len(read_rows(db)) == 25


def test_exit_by_sys_exit_and_by_an_uncaught_exception_still_flushes(db: Path) -> None:
    for ending in ("sys.exit(3)", "raise RuntimeError('app crashed')"):
        done = run_python(
            CALLS_SCRIPT
            + f"""
    client.post("https://api.openai.com/v1/chat/completions", json={{"model": "gpt-4o-mini"}})
    {ending}
    """,
            env={"DB": str(db)},
        )
        assert done.returncode != 0
    assert len(read_rows(db)) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_gets_a_working_writer(db: Path) -> None:
    done = run_python(
        CALLS_SCRIPT
        + """
    client.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o-mini"}, headers={"X-Httptrack-User": "parent-before"})
    httptrack.flush()
    pid = os.fork()
    if pid == 0:
        for _ in range(10):
            client.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o-mini"}, headers={"X-Httptrack-User": "child"})
        httptrack.flush()
        os._exit(0)
    for _ in range(10):
        client.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o-mini"}, headers={"X-Httptrack-User": "parent"})
    os.waitpid(pid, 0)
    """,
        env={"DB": str(db)},
    )
    assert done.returncode == 0, done.stderr
    rows = read_rows(db)
    users = [r["user"] for r in rows]
    assert (users.count("parent-before"), users.count("parent"), users.count("child")) == (1, 10, 10)
    assert len({r["id"] for r in rows}) == 21
    assert len({r["pid"] for r in rows}) == 2


MULTIPROCESSING_SCRIPT = """
import concurrent.futures, json, multiprocessing, os, sys
import httpx, httptrack

BODY = json.dumps({"model": "gpt-4o-mini", "usage": {"prompt_tokens": 5, "completion_tokens": 2}}).encode()


def handler(request):
    return httpx.Response(200, headers={"content-type": "application/json"}, content=BODY)


def call(user):
    transport = httptrack.TrackingTransport(httpx.MockTransport(handler), db=os.environ["DB"], cache=False)
    client = httpx.Client(transport=transport)  # never closed: as a careless worker would
    client.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o-mini"},
                headers={"X-Httptrack-User": user})
    # Whether this process writes each call as it ends (a pool worker) or at its end.
    return user, httptrack.record._writer.writer()._worker


if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    process = ctx.Process(target=call, args=("process",))
    process.start()
    process.join()
    with ctx.Pool(2) as pool:  # leaving the block terminates the workers
        assert pool.map(call, ["pool"] * 4) == [("pool", True)] * 4
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        assert list(executor.map(call, ["executor"] * 4)) == [("executor", False)] * 4
    print(json.dumps(call("main")))
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_calls_in_multiprocessing_workers_are_all_recorded(method: str, db: Path, tmp_path: Path) -> None:
    """A multiprocessing child ends with os._exit (no atexit): it flushes among
    multiprocessing's exit finalizers. A pool worker may be terminated instead: its calls are
    written as they end. None is lost, whatever the start method; other processes (the
    parent, a Process, an executor's workers, a server's workers) never wait per call."""
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    script = tmp_path / "app.py"
    script.write_text(MULTIPROCESSING_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), method],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DB": str(db)},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == ["main", False]
    users = sorted(r["user"] for r in read_rows(db))
    assert users == ["executor"] * 4 + ["main"] + ["pool"] * 4 + ["process"]


def test_an_unwritable_database_never_breaks_the_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "not-a-dir" / "calls.db"
    (tmp_path / "not-a-dir").write_text("a file where the folder should be")
    with client(db) as c:
        for _ in range(3):
            assert c.post(CHAT, json={"model": "gpt-4o-mini"}).json()["model"] == "gpt-4o-mini"
    httptrack.flush()
    faults = httptrack.fault_counts()
    assert faults.get("database", 0) >= 1
    warnings = [r for r in caplog.records if r.name == "httptrack" and r.levelname == "WARNING"]
    kinds = [r.args[1] for r in warnings]  # type: ignore[index]
    # Logged once, not per call: the database, and the spool beside it (same folder).
    assert sorted(kinds) == ["database", "spool"]


def test_a_locked_database_delays_rows_but_loses_none(db: Path) -> None:
    with client(db) as c:
        c.post(CHAT, json={"model": "gpt-4o-mini"})
    read_rows(db)
    # Another process holds the write lock for longer than the busy timeout allows...
    blocker = sqlite3.connect(db, timeout=0, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    from httptrack.log import _sqlite as _store
    from httptrack.record import _writer

    timeout = _store.BUSY_TIMEOUT_MS
    _store.BUSY_TIMEOUT_MS = 50
    _writer.writer().close_connections()
    try:
        with client(db) as c:
            for _ in range(5):
                c.post(CHAT, json={"model": "gpt-4o-mini"})  # the app is not blocked
        httptrack.flush(5)
        assert httptrack.fault_counts().get("database", 0) >= 1
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        _store.BUSY_TIMEOUT_MS = timeout
        _writer.writer().close_connections()
    # ... once it is released, the waiting rows are written.
    assert len(read_rows(db)) == 6


def test_import_is_light() -> None:
    done = run_python("""
        import sys, time
        t = time.perf_counter()
        import httptrack
        heavy = [m for m in ("httpx", "httpx2", "pydantic", "sqlite_utils", "genai_prices", "tiktoken", "click",
                             "diskcache") if m in sys.modules]
        print(heavy)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_call_record_reads_rows(db: Path) -> None:
    with client(db) as c, httptrack.attribute(user="u", team="x"):
        c.post(CHAT, json={"model": "gpt-4o-mini"})
    read_rows(db)
    with httptrack.open_log(db) as log:
        (record,) = list(log.calls())
    assert isinstance(record, httptrack.CallRecord)
    assert (record.provider, record.user, record.properties) == ("openai", "u", {"team": "x"})
    assert record.usage.input_tokens == 5
    assert record.request_json() == {"model": "gpt-4o-mini"}


def _unused(_: Any) -> None:  # keep imports honest for type checkers
    pass


def test_a_stream_left_open_at_exit_is_recorded_with_what_arrived(db: Path) -> None:
    done = run_python(
        """
        import os, httpx, httptrack
        class Chunks(httpx.SyncByteStream):
            def __iter__(self):
                yield b'data: {"model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}\\n\\n'
                yield b'data: {"model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": "lo"}}]}\\n\\n'
        def handler(request):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Chunks())
        client = httpx.Client(transport=httptrack.TrackingTransport(httpx.MockTransport(handler), db=os.environ["DB"], cache=False))
        reply = client.send(client.build_request("POST", "https://api.openai.com/v1/chat/completions",
                                                 json={"model": "gpt-4o-mini", "stream": True}), stream=True)
        first = next(reply.iter_raw())  # read one chunk, then exit with the response open
    """,
        env={"DB": str(db)},
    )
    assert done.returncode == 0, done.stderr
    (row,) = read_rows(db)
    assert (row["outcome"], row["response_text"]) == ("cut_short", "Hel")


def test_sigterm_handled_by_the_app_still_flushes(db: Path) -> None:
    import signal

    script = textwrap.dedent(
        CALLS_SCRIPT
        + """
    import signal, time
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the app's own handler
    for _ in range(20):
        client.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o-mini"})
    print("ready", flush=True)
    time.sleep(60)
    """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], env={**os.environ, "DB": str(db)}, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert len(read_rows(db)) == 20
