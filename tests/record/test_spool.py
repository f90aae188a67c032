"""The spool (``record/_spool``), the writer's seams: the log backend (``log/_backend``) and
``build_row`` returning what it learned. ``test_durability`` drives the same end to end."""

from __future__ import annotations

import json
import marshal
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import httptrack
from httptrack._context import Attribution
from httptrack._exchange import Exchange
from httptrack._settings import Settings
from httptrack.log._schema import COLUMN_NAMES
from httptrack.log._sqlite import Store
from httptrack.providers import provider_by_name
from httptrack.record._row import build_row
from httptrack.record._spool import VERSION, read_records, spool_folder

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX flock and signals")

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-SPOOLSECRET0123456789abcdef"

#: An app whose writer never writes (a disk that does not answer): its calls stay in its
#: spool for as long as it lives. It makes one call with credentials in a header, the query
#: and a response cookie, says so, and waits.
STUCK = f"""
import os, sys, time, httpx, httptrack
from httptrack.record import _writer
_writer.Writer._write_log = lambda self, log, force: None
body = b'{{"model": "gpt-4o-mini", "usage": {{"prompt_tokens": 3, "completion_tokens": 1}}}}'
def handler(request):
    return httpx.Response(200, headers={{"content-type": "application/json",
                                         "set-cookie": "session={SECRET}"}}, content=body)
client = httpx.Client(transport=httptrack.TrackingTransport(httpx.MockTransport(handler),
                                                            db=os.environ["DB"], cache=False,
                                                            prices_file=os.environ.get("PRICES")))
for _ in range(int(os.environ.get("CALLS", "3"))):
    client.post("https://api.openai.com/v1/chat/completions?key={SECRET}",
                headers={{"authorization": "Bearer {SECRET}"}}, json={{"model": "gpt-4o-mini"}})
print("ready", flush=True)
time.sleep(120)
"""


def _env(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HTTPTRACK")}
    path = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, "PYTHONPATH": path, "DB": str(db)}


def _stuck_app(db: Path, **env: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(STUCK)],
        stdout=subprocess.PIPE,
        text=True,
        env={**_env(db), **env},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)


def _spools(db: Path) -> list[Path]:
    return sorted(spool_folder(db).glob("*.spool"))


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])
    except sqlite3.OperationalError:  # no table yet
        return 0
    finally:
        conn.close()


def test_a_live_process_s_spool_is_left_alone_and_recovered_once_it_is_gone(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    proc = _stuck_app(db)
    try:
        (spool,) = _spools(db)
        assert spool.stat().st_mode & 0o777 == 0o600
        assert spool_folder(db).stat().st_mode & 0o777 == 0o700
        # The owner is alive: its calls are its own (and reading writes nothing: no log yet).
        with pytest.raises(FileNotFoundError):
            httptrack.open_log(db)
        assert _spools(db) == [spool]
    finally:
        _kill(proc)
    with httptrack.open_log(db) as log:
        calls = list(log.calls())
    assert len(calls) == 3
    assert _spools(db) == []
    assert all("recovered from the spool of process" in (call.parse_notes or "") for call in calls)


def test_liveness_is_the_owner_s_lock_not_its_pid(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    proc = _stuck_app(db)
    _kill(proc)
    (spool,) = _spools(db)
    # The dead process's pid is reused, say by this very process: still recovered.
    reused = spool.with_name(f"{os.getpid()}-{spool.name.partition('-')[2]}")
    spool.rename(reused)
    with httptrack.open_log(db) as log:
        assert len(list(log.calls())) == 3


def test_a_call_whose_price_file_is_gone_is_still_recovered(tmp_path: Path) -> None:
    db, prices = tmp_path / "calls.db", tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-4o-mini": {"input_mtok": 1000.0, "output_mtok": 1000.0}}))
    _kill(_stuck_app(db, PRICES=str(prices)))
    prices.unlink()
    with httptrack.open_log(db) as log:
        assert len(list(log.calls())) == 3
    assert httptrack.fault_counts().get("spool") == 1  # said once


def test_no_credential_reaches_the_spool(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    proc = _stuck_app(db)
    try:
        spooled = b"".join(path.read_bytes() for path in _spools(db))
        assert spooled and b"gpt-4o-mini" in spooled  # the calls are there ...
        assert SECRET.encode() not in spooled  # ... their credentials are not
    finally:
        _kill(proc)
    with httptrack.open_log(db) as log:
        (call, *_) = list(log.calls())
    assert SECRET not in json.dumps(call.__dict__, default=str)


def test_a_clean_exit_leaves_no_spool_behind(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    code = STUCK.replace("_writer.Writer._write_log = lambda self, log, force: None", "").replace(
        "time.sleep(120)", ""
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=_env(db),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert _count(db) == 3
    assert _spools(db) == []


def test_a_record_cut_short_by_a_death_mid_write_is_left_out() -> None:
    whole = marshal.dumps((VERSION, "a"))
    other = marshal.dumps((VERSION, "b"))
    data = struct.pack("<I", len(whole)) + whole + struct.pack("<I", len(other)) + other[:-2]
    assert list(read_records(data)) == [(VERSION, "a")]
    garbled = struct.pack("<I", 3) + b"\xff\xff\xff" + struct.pack("<I", len(whole)) + whole
    assert list(read_records(garbled)) == [None, (VERSION, "a")]  # unreadable, then on


# -- the log backend ------------------------------------------------------------------------


def _rows(count: int, user: str = "u") -> list[tuple[object, ...]]:
    rows = []
    for n in range(count):
        row = dict.fromkeys(COLUMN_NAMES)
        row.update(id=f"01TEST{n:020d}", started_at="2026-01-01T00:00:00.000Z", provider="openai", user=user)
        rows.append(tuple(row[name] for name in COLUMN_NAMES))
    return rows


def test_rows_written_twice_are_stored_once(db: Path) -> None:
    store = Store(db)
    try:
        assert store.write(_rows(70)) == (70, 0, [])
        assert store.write(_rows(70)) == (0, 70, [])  # the spool read twice: nothing new
    finally:
        store.close()
    assert _count(db) == 70


def test_a_row_the_table_refuses_is_reported_and_the_others_written(db: Path) -> None:
    store = Store(db)
    try:
        store.open()
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON calls WHEN NEW.id = '01TEST00000000000000000003' "
            "BEGIN SELECT RAISE(ABORT, 'no thanks'); END"
        )
        conn.close()
        written, duplicates, refused = store.write(_rows(5))
    finally:
        store.close()
    assert (written, duplicates) == (4, 0)
    assert [(index, "no thanks" in why) for index, why in refused] == [(3, True)]
    assert _count(db) == 4


def test_a_locked_log_is_unavailable_not_an_sqlite_error(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from httptrack._errors import LogUnavailable
    from httptrack.log import _sqlite

    store = Store(db)
    store.open()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr(_sqlite, "BUSY_TIMEOUT_MS", 10)
    store.close()
    try:
        with pytest.raises(LogUnavailable, match="locked"):
            store.write(_rows(1))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        store.close()


# -- build_row ------------------------------------------------------------------------------


def test_build_row_returns_what_it_learned_and_leaves_the_exchange_as_it_was() -> None:
    ex = Exchange(
        provider=provider_by_name("openai"),
        operation="chat",
        settings=Settings(),
        sink=None,
        method="POST",
        scheme="https",
        host="api.openai.com",
        port=None,
        path="/v1/chat/completions",
        query="",
        request_headers=[(b"content-type", b"application/json")],
        request_body=b'{"model": "gpt-4o-mini", "stream": true}',
        attribution=Attribution(),
        control=None,
    )
    ex.received_headers(200, [(b"content-type", b"text/event-stream")])
    ex.add_chunk(b'data: {"model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n')
    ex.add_chunk(b"data: [DONE]\n\n")
    ex.end("cut_short")  # the SDK stopped reading after the end marker
    built = build_row(ex)
    assert (built.outcome, built.row["outcome"], built.response_complete) == ("complete", "complete", True)
    assert ex.outcome == "cut_short"  # the app's object: not written on
    assert not hasattr(ex, "response_complete")


def test_restore_sets_every_slot_of_an_exchange() -> None:
    """A recovered call goes through the same build_row as a live one: every attribute an
    Exchange has must be set by ``restore`` (a slot added to Exchange and forgotten here made
    every recovered row fail with AttributeError)."""
    import inspect
    import re

    from httptrack._exchange import Exchange
    from httptrack.record import _spool

    source = inspect.getsource(_spool.restore)
    assigned = set(re.findall(r"\bex\.(\w+)", source))
    assert set(Exchange.__slots__) - assigned == set()


def test_rows_written_together_release_their_spool_records_in_one_call_per_segment() -> None:
    from httptrack.record._writer import _release

    calls: list[tuple[int, int]] = []

    class Recorder:
        def release(self, segment: int, count: int = 1) -> None:
            calls.append((segment, count))

    _release(Recorder(), [3, 3, 3, 4, 4, -1, 4])  # type: ignore[arg-type]
    assert calls == [(3, 3), (4, 2), (-1, 1), (4, 1)]
    calls.clear()
    _release(Recorder(), [])  # type: ignore[arg-type]
    assert calls == []
