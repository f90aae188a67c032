"""The log's storage side: bodies stored compressed (and read back as text everywhere),
pruning by age and by size, HTTPTRACK_RETENTION applied by the writer in steps, the WAL
kept bounded while a reader holds a snapshot."""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from click.testing import CliRunner
from recorded_log import age_calls

import httptrack
from httptrack._exchange import new_call_id
from httptrack._fake import mock_transport
from httptrack._settings import Retention, SettingsError
from httptrack.cli import main as cli
from httptrack.log import _bodies, _maintenance, _retention, _sqlite
from httptrack.log._maintenance import log_bytes, prune
from httptrack.log._schema import COLUMN_NAMES

#: A prompt of ~6 KB that compresses (words repeat), with a word found nowhere else.
PROMPT = "Tell me about the zeppelin. " + " ".join(f"topic{i % 50} detail{i % 7}" for i in range(500))


def sdk(db: Path, **settings: Any) -> openai.OpenAI:
    transport = httptrack.TrackingTransport(mock_transport(httpx2), db=db, cache=False, **settings)
    return openai.OpenAI(
        api_key="sk-test-not-real",
        base_url="https://api.openai.com/v1",
        http_client=httpx2.Client(transport=transport),
        max_retries=0,
    )


def ask(client: openai.OpenAI, prompt: str, *, stream: bool = False) -> str:
    messages: Any = [{"role": "user", "content": prompt}]
    if stream:
        chunks = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return (
        client.chat.completions.create(model="gpt-4o-mini", messages=messages).choices[0].message.content
        or ""
    )


def raw(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def run(*args: Any) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def rollups(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    tables = ("calls_rollup", "calls_rollup_latency", "calls_rollup_detail", "calls_rollup_detail_latency")
    return {t: raw(db, f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4") for t in tables}


# -- compression -------------------------------------------------------------------------------


def test_long_bodies_are_stored_compressed_and_read_back_as_text(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    client = sdk(db)
    answers = [ask(client, PROMPT), ask(client, PROMPT, stream=True), ask(client, "short")]
    assert httptrack.flush(10)
    stored = raw(
        db, "SELECT id, typeof(request_body), typeof(response_body), request_body FROM calls ORDER BY id"
    )
    # The long prompts, and the answers that echo them (the stream as its SSE), compressed.
    assert [s[1:3] for s in stored[:2]] == [("blob", "blob"), ("blob", "blob")] and stored[2][1] == "text"
    assert len(stored[0][3]) < len(PROMPT) / 3  # compressed, not merely a blob
    with httptrack.open_log(db) as log:
        calls = list(log.calls(newest_first=False))
        assert [c.request_json()["messages"][0]["content"] for c in calls] == [PROMPT, PROMPT, "short"]
        assert [c.response_text for c in calls] == answers
        stream = calls[1].response_body or ""
        assert stream.startswith("data: {") and stream.rstrip().endswith("data: [DONE]")
        assert [c.id for c in log.calls(query="zeppelin", newest_first=False)] == [c.id for c in calls[:2]]
        rows = list(log.rows(newest_first=False, columns=["id", "request_body"]))
        assert [json.loads(r["request_body"])["messages"][0]["content"] for r in rows] == [
            PROMPT,
            PROMPT,
            "short",
        ]
        assert log.get(calls[1].id) == calls[1]
    shown = json.loads(run("show", calls[1].id, "--json", "--db", db))
    assert shown["response_body"] == stream and PROMPT in shown["request_body"]
    exported = [json.loads(line) for line in run("export", "--db", db).splitlines()]
    assert [e["request_body"] for e in exported] == [c.request_body for c in calls]
    assert exported[1]["response_body"] == stream
    # Plain SQL, through the function every httptrack connection has.
    conn = _sqlite.connect(db, readonly=True)
    try:
        texts = [r[0] for r in conn.execute("SELECT httptrack_body(request_body) FROM calls ORDER BY id")]
    finally:
        conn.close()
    assert texts == [c.request_body for c in calls]


def test_old_text_rows_and_new_compressed_rows_side_by_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "calls.db"
    with monkeypatch.context() as patched:  # as an httptrack before compression wrote them
        patched.setattr(_bodies, "COMPRESS_MIN_BYTES", 1 << 40)
        ask(sdk(db), PROMPT + " old")
        assert httptrack.flush(10)
    ask(sdk(db), PROMPT + " new")
    assert httptrack.flush(10)
    assert raw(db, "SELECT typeof(request_body) FROM calls ORDER BY id") == [("text",), ("blob",)]
    with httptrack.open_log(db) as log:
        prompts = [c.request_json()["messages"][0]["content"] for c in log.calls(newest_first=False)]
        assert prompts == [PROMPT + " old", PROMPT + " new"]
        assert len(list(log.calls(query="zeppelin"))) == 2
        assert len(list(log.calls(query="new"))) == 1
    # Dropping the bodies of both kinds takes both out of the search index.
    prune(db, keep_bodies=datetime.now(UTC) + timedelta(seconds=1))
    assert raw(db, "SELECT count(*) FROM calls WHERE request_body IS NULL") == [(2,)]
    with httptrack.open_log(db) as log:
        assert list(log.calls(query="zeppelin")) == []
    assert raw(db, "SELECT count(*) FROM calls_fts_docsize") == [(0,)]


async def test_datasette_reads_compressed_bodies(tmp_path: Path) -> None:
    from httptrack.cli._ui import make_datasette

    db = tmp_path / "log.db"
    ask(sdk(db), PROMPT, stream=True)
    assert httptrack.flush(10)
    (call_id,) = raw(db, "SELECT id FROM calls")[0]
    ds = make_datasette(db)
    sql = (
        "select httptrack_body(request_body) as request, httptrack_body(response_body) as response from calls"
    )
    response = await ds.client.get("/log.json", params={"sql": sql, "_shape": "array"})
    assert response.status_code == 200, response.text[:500]
    (row,) = response.json()
    assert json.loads(row["request"])["messages"][0]["content"] == PROMPT
    assert row["response"].startswith("data: {")
    page = (await ds.client.get(f"/log/calls/{call_id}")).text  # the call's record
    assert "Tell me about the zeppelin." in page
    listing = (await ds.client.get("/log/calls")).text  # the list's prompt snippet
    assert "Tell me about the zeppelin." in listing
    everything = (await ds.client.get(f"/log/calls/{call_id}?_all_columns=1")).text
    assert "topic49 detail" in everything and "&lt;Binary" not in everything


# -- prune ---------------------------------------------------------------------------------------


def record_many(db: Path, n: int, words: int = 1500) -> list[str]:
    """``n`` calls with big prompts that compress about as prose does (words drawn at
    random from a vocabulary), oldest first."""
    client = sdk(db)
    rng = random.Random(n)
    vocabulary = [os.urandom(3).hex() for _ in range(2000)]
    for i in range(n):
        ask(client, f"call {i}: " + " ".join(rng.choices(vocabulary, k=words)))
    assert httptrack.flush(10)
    return [r[0] for r in raw(db, "SELECT id FROM calls ORDER BY started_at, id")]


def test_pruned_calls_still_count_in_the_rollups(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    ids = record_many(db, 6, words=10)
    age_calls(db, {ids[0]: timedelta(days=100), ids[1]: timedelta(days=95), ids[2]: timedelta(days=3)})
    before = rollups(db)
    with httptrack.open_log(db) as log:
        totals, by_day = log.totals(), log.stats(by="day")
    result = prune(db, older_than="90d")
    assert result.calls == 2 and rollups(db) == before
    with httptrack.open_log(db) as log:
        assert log.count() == 4
        assert log.totals() == totals and log.stats(by="day") == by_day
    run("reindex", "--db", db)  # rebuilt from the calls there are: the pruned days stay
    with httptrack.open_log(db) as log:
        assert log.totals() == totals and log.stats(by="day") == by_day


def test_prune_to_a_size_drops_the_oldest_bodies_first_then_the_oldest_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_maintenance, "_SIZE_CHUNK", 1)  # a call at a time: no overshoot
    db = tmp_path / "calls.db"
    ids = record_many(db, 8)  # ~14 KB of prompt each
    before = rollups(db)
    used = log_bytes(db)
    out = run("prune", "--max-size", str(used - 40_000), "--dry-run", "--db", db)
    assert re.fullmatch(
        r"Would prune the bodies of about \d calls \(oldest first\), as the log uses .* MB\.\n", out
    )
    result = prune(db, max_size=used - 40_000)
    assert 0 < result.size_bodies < 8 and result.size_calls == 0
    assert result.used_after <= used - 40_000 == result.max_size
    bodiless = [
        r[0] for r in raw(db, "SELECT id FROM calls WHERE request_body IS NULL ORDER BY started_at, id")
    ]
    assert bodiless == ids[: result.size_bodies]  # the oldest
    assert raw(db, "SELECT count(*) FROM calls") == [(8,)]
    # Smaller than every body can free: then the oldest calls go.
    result = prune(db, max_size=log_bytes(db) - result.used_after // 2)
    assert result.size_calls > 0
    left = [r[0] for r in raw(db, "SELECT id FROM calls ORDER BY started_at, id")]
    assert left == ids[result.size_calls :] and raw(
        db, "SELECT count(*) FROM calls WHERE request_body IS NOT NULL"
    ) == [(0,)]
    assert rollups(db) == before  # every deleted call still counts
    with httptrack.open_log(db) as log:
        assert log.totals()["calls"] == 8 and log.count() == len(left)


def test_dropping_bodies_gives_their_pages_back(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    client = sdk(db)
    rng = random.Random(5)
    words = [f"w{i}" for i in range(40)]
    for _ in range(40):  # ~1 KB stored per call: inside the table's pages, no overflow pages
        ask(client, " ".join(rng.choices(words, k=400)))
    assert httptrack.flush(10)
    used = log_bytes(db)
    result = prune(db, keep_bodies=datetime.now(UTC) + timedelta(seconds=1))
    assert result.bodies == 40
    assert log_bytes(db) < used - 40 * 600  # an UPDATE would leave the pages where they are


# -- HTTPTRACK_RETENTION ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bodies=30d; rows=1y; size=5GB", Retention(bodies=30 * 86400, rows=365 * 86400, size=5_000_000_000)),
        ("rows=90d, bodies=7d", Retention(bodies=7 * 86400, rows=90 * 86400)),
        ("size=500MiB", Retention(size=500 * 1024**2)),
        ("off", None),
        ("", None),
    ],
)
def test_retention_grammar(value: str, expected: Retention | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPTRACK_RETENTION", value)
    assert httptrack.Settings().retention == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "bodies=30",
            "HTTPTRACK_RETENTION[bodies]: expected an age with its unit such as 12h, 30d, 8w or 1y",
        ),
        ("rows=1y; bodies=2y", "bodies is longer than rows"),
        ("keep=30d", "expected bodies=AGE, rows=AGE and/or size=SIZE separated by ';'"),
        ("size=lots", "HTTPTRACK_RETENTION[size]: expected a size in bytes"),
        ("rows=1d; rows=2d", "rows is given twice"),
        ("rows=0d", "must be more than 0"),
    ],
)
def test_a_bad_retention_policy_is_a_clear_error(
    value: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPTRACK_RETENTION", value)
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        httptrack.TrackingTransport()


def test_the_writer_applies_retention_in_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "calls.db"
    ids = record_many(db, 12, words=10)
    age_calls(db, {call_id: timedelta(days=40) for call_id in ids[:10]})
    age_calls(db, {call_id: timedelta(days=10) for call_id in ids[10:]})
    totals = None
    with httptrack.open_log(db) as log:
        totals = log.totals()["calls"]
    monkeypatch.setattr(_retention, "STEP_ROWS", 3)
    monkeypatch.setattr(_sqlite, "RETAIN_BUSY_SECONDS", 0.0)
    client = sdk(db, retention="bodies=7d; rows=30d")
    left = [10]
    for _ in range(40):
        ask(client, "one more")
        assert httptrack.flush(10)
        old = raw(
            db,
            "SELECT count(*) FROM calls WHERE started_at < ?",
            (_retention.stamp(datetime.now(UTC) - timedelta(days=30)),),
        )[0][0]
        assert left[-1] - old <= 3  # a step at most per batch written
        left.append(old)
        if (
            not raw(
                db,
                "SELECT count(*) FROM calls WHERE id IN (?, ?) AND request_body IS NOT NULL",
                (ids[10], ids[11]),
            )[0][0]
            and not old
        ):
            break
    assert left[-1] == 0 and len(left) >= 5  # in steps: 10 calls took four batches or more
    assert raw(db, "SELECT id FROM calls WHERE request_body IS NULL ORDER BY started_at, id") == [
        (ids[10],),
        (ids[11],),
    ]
    with httptrack.open_log(db) as log:
        assert log.totals()["calls"] == totals + len(left) - 1  # the deleted calls still count


# -- the WAL -----------------------------------------------------------------------------------------


def rows_of(n: int, size: int) -> list[tuple[Any, ...]]:
    now = _retention.stamp(datetime.now(UTC))
    at = {name: i for i, name in enumerate(COLUMN_NAMES)}
    out = []
    for _ in range(n):
        row: list[Any] = [None] * len(COLUMN_NAMES)
        row[at["id"]], row[at["started_at"]], row[at["provider"]] = new_call_id(), now, "openai"
        row[at["status"]], row[at["request_body"]] = "success", os.urandom(size // 2).hex()
        out.append(tuple(row))
    return out


def test_the_wal_is_cut_back_once_a_reader_lets_go_of_its_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 1 << 20
    monkeypatch.setattr(_sqlite, "WAL_LIMIT_BYTES", limit)
    monkeypatch.setattr(_sqlite, "WAL_CHECK_SECONDS", 0.0)
    db = tmp_path / "calls.db"
    wal = Path(f"{db}-wal")
    store = _sqlite.Store(db)
    store.write(rows_of(1, 1000))
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM calls").fetchone()  # holds this snapshot
        for _ in range(20):
            store.write(rows_of(10, 20_000))  # 4 MB in all
        held = wal.stat().st_size
        assert held > 3 * limit  # SQLite must keep every page the reader may need
        reader.execute("COMMIT")
        sizes = []
        for _ in range(10):  # the WAL starts again at a write's beginning, once copied back
            store.write(rows_of(10, 20_000))
            sizes.append(wal.stat().st_size)
            if sizes[-1] <= limit + 300_000:
                break
        assert sizes[-1] <= limit + 300_000, (held, sizes)
    finally:
        reader.close()
        store.close()


@pytest.mark.parametrize("restart", [True, False])
def test_the_wal_restarts_while_readers_take_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restart: bool
) -> None:
    """There is always a reader: one lets go only once the next has begun. SQLite then
    never finds a moment to start the WAL again; the writer's RESTART checkpoint makes one
    (readers that begin once it has copied the WAL back read the database file alone)."""
    limit = 1 << 20
    monkeypatch.setattr(_sqlite, "WAL_LIMIT_BYTES", limit)
    monkeypatch.setattr(_sqlite, "WAL_CHECK_SECONDS", 0.0)
    monkeypatch.setattr(_sqlite, "WAL_RESTART_WAIT_MS", 20_000)  # waits for the first reader
    if not restart:  # as before: SQLite's own checkpoints only
        monkeypatch.setattr(_sqlite.Store, "_bound_wal", lambda self, conn: None)
    db = tmp_path / "calls.db"
    wal = Path(f"{db}-wal")
    store = _sqlite.Store(db)
    store.write(rows_of(1, 1000))
    first = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    second = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        first.execute("BEGIN")
        first.execute("SELECT count(*) FROM calls").fetchone()
        monkeypatch.setattr(_sqlite, "WAL_CHECK_SECONDS", 1e9)  # not yet
        for _ in range(20):
            store.write(rows_of(10, 20_000))
        assert wal.stat().st_size > 3 * limit

        checked = threading.Event()

        def take_turns() -> None:
            time.sleep(0.3)
            first.execute("COMMIT")
            checked.wait(timeout=60)  # (a checkpoint waiting for the first reader is done)
            second.execute("BEGIN")
            second.execute("SELECT count(*) FROM calls").fetchone()

        turns = threading.Thread(target=take_turns)
        turns.start()
        assert store._conn is not None
        store._bound_wal(store._conn)  # the writer after a write: waits for the first reader
        checked.set()
        turns.join(timeout=60)
        store.write(rows_of(10, 20_000))
        size = wal.stat().st_size
        if restart:
            assert size <= limit + 300_000
        else:
            assert size > 3 * limit  # the second reader keeps the WAL from starting again
        second.execute("COMMIT")
    finally:
        first.close()
        second.close()
        store.close()


def test_a_restart_kept_from_finishing_waits_longer_before_it_tries_less_often(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readers that each hold a snapshot longer than the restart waits (a UI page, a CLI
    command, back to back) must not keep the WAL growing: the wait doubles at each try up
    to WAL_RESTART_MAX_WAIT_MS while the tries stay every WAL_CHECK_SECONDS; only then are
    the tries spaced out; a restart that finishes resets both."""
    monkeypatch.setattr(_sqlite, "WAL_LIMIT_BYTES", 0)
    db = tmp_path / "calls.db"
    store = _sqlite.Store(db)
    store.write(rows_of(1, 1000))
    real = store._conn
    assert real is not None
    waits: list[int] = []
    busy = [True]

    class Conn:  # the writer's connection, with readers that never let go (while busy)
        def execute(self, sql: str, *args: Any) -> Any:
            if sql.startswith("PRAGMA busy_timeout=") and int(sql.split("=")[1]) != _sqlite.BUSY_TIMEOUT_MS:
                waits.append(int(sql.split("=")[1]))
            if sql == "PRAGMA wal_checkpoint(RESTART)":
                return real.execute("SELECT ?, 0, 0", [int(busy[0])])
            return real.execute(sql, *args)

    spacing = []
    try:
        for _ in range(6):
            store._bound_wal(Conn())  # type: ignore[arg-type]
            spacing.append(store._wal_backoff)
        assert waits == [200, 400, 800, 1600, 2000, 2000]
        assert spacing == [0.5, 0.5, 0.5, 0.5, 1.0, 2.0]  # seconds to the next try
        busy[0] = False
        store._bound_wal(Conn())  # type: ignore[arg-type]
        store._bound_wal(Conn())  # type: ignore[arg-type]
        assert waits[-2:] == [2000, 200]
    finally:
        store.close()
