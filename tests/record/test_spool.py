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
from helpers import make_exchange

import httptrack
from httptrack._exchange import Exchange
from httptrack._settings import Settings
from httptrack.log._schema import COLUMN_NAMES
from httptrack.log._sqlite import Store
from httptrack.record import _spool
from httptrack.record._recover import read_records
from httptrack.record._row import build_row
from httptrack.record._spool import VERSION, spool_folder

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
    ex = make_exchange(request_body=b'{"model": "gpt-4o-mini", "stream": true}')
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
    from httptrack.record import _recover

    source = inspect.getsource(_recover.restore)
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


# -- the framing of a spool file ------------------------------------------------------------


def _exchange(body: bytes = b'{"model": "gpt-4o-mini"}', db: Path | None = None) -> Exchange:
    ex = make_exchange(
        settings=Settings(db=db) if db is not None else Settings(),
        request_headers=[
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {SECRET}".encode()),
        ],
        request_body=body,
    )
    ex.received_headers(200, [(b"content-type", b"application/json")])
    ex.add_chunk(b'{"model": "gpt-4o-mini", "usage": {"prompt_tokens": 3, "completion_tokens": 1}}')
    ex.end("complete")
    return ex


def _ids(path: Path) -> list[str | None]:
    """The call ids of the records in a spool file (``None``: one that cannot be read)."""
    return [record[1] if record else None for record in read_records(path.read_bytes())]


@pytest.fixture
def mapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spool files written through a map, whatever file system the tests run on."""
    monkeypatch.setattr(_spool, "_mappable", lambda folder: True)


def test_an_append_is_a_memory_copy_not_a_system_call(
    tmp_path: Path, mapped: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = _spool.Spool(tmp_path / "calls.db")
    try:
        calls = [_exchange() for _ in range(3)]

        def no_system_call(*args: object) -> None:
            raise AssertionError("a system call on the app's thread")

        for name in ("write", "writev", "pwrite", "ftruncate", "fsync"):
            monkeypatch.setattr(os, name, no_system_call)
        segments = [spool.append(ex) for ex in calls]
        monkeypatch.undo()
        (path,) = _spools(tmp_path / "calls.db")
        assert segments == [1, 1, 1] and spool.pending == 3
        assert path.read_bytes().startswith(_spool.MAGIC)
        assert _ids(path) == [ex.call_id for ex in calls]
    finally:
        spool.discard()


def test_a_record_its_process_died_committing_is_never_read(tmp_path: Path, mapped: None) -> None:
    spool = _spool.Spool(tmp_path / "calls.db")
    try:
        first, second = _exchange(), _exchange()
        spool.append(first)
        (path,) = _spools(tmp_path / "calls.db")
        at = spool._current.end  # type: ignore[union-attr]  # where the next header goes
        whole = bytearray(path.read_bytes())
        spool.append(second)
        after = bytearray(path.read_bytes())
        assert _ids(path) == [first.call_id, second.call_id]
        # A death at any moment of the second append: its bytes written or not, its header
        # not yet, or any part of it (each byte of the header alone, or up to each byte).
        header = bytes(after[at : at + 8])
        torn = [bytes(whole[:at]) + bytes(after[at + 8 :]).rjust(len(after) - at, b"\0")]
        for cut in range(1, 8):
            torn.append(bytes(after[:at]) + header[:cut] + bytes(8 - cut) + bytes(after[at + 8 :]))
            single = bytearray(8)
            single[cut] = header[cut]
            torn.append(bytes(after[:at]) + bytes(single) + bytes(after[at + 8 :]))
        for data in torn:
            assert [r[1] if r else None for r in read_records(data)] == [first.call_id]
    finally:
        spool.discard()


def test_a_spool_emptied_and_reused_never_shows_its_old_records(tmp_path: Path, mapped: None) -> None:
    spool = _spool.Spool(tmp_path / "calls.db")
    try:
        old = [_exchange(b"x" * 3000) for _ in range(5)]
        for ex in old:
            spool.release(spool.append(ex))
        (path,) = _spools(tmp_path / "calls.db")
        spool.tidy()  # every record released: the segment starts over
        assert _ids(path) == []
        # ... and what they held is gone from the file (a body may hold a credential that
        # only the row's redaction takes out), as from a file truncated.
        assert b"x" * 100 not in path.read_bytes() and old[0].call_id.encode() not in path.read_bytes()
        # The same size as those it overwrites (it ends where the second one began), then
        # shorter ones.
        new = [_exchange(b"y" * 3000), _exchange(b"y")]
        spool.release(spool.append(new[0]))
        assert _ids(path) == [new[0].call_id]
        spool.tidy()
        spool.append(new[1])
        assert _ids(path) == [new[1].call_id]
    finally:
        spool.discard()


def test_segments_rotate_and_a_recycled_one_shows_only_its_new_records(
    tmp_path: Path, mapped: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_spool, "SEGMENT_BYTES", 16 * 1024)
    db = tmp_path / "calls.db"
    spool = _spool.Spool(db)
    try:
        calls = [_exchange(b"x" * 2000) for _ in range(20)]  # ~2.5 KB records: 6 a segment
        segments = []
        for ex in calls:
            segments.append(spool.append(ex))
            ex.spooled = segments[-1]
            spool.tidy()  # the writer, now and then: a spare once the current is half full
        assert segments == sorted(segments) and len(set(segments)) >= 3
        spooled = [i for path in _spools(db) for i in _ids(path)]
        assert sorted(spooled) == sorted(ex.call_id for ex in calls)  # every call, once
        for ex in calls[:-2]:
            spool.release(ex.spooled)
        spool.tidy()
        # Released segments are gone, but one, kept (emptied, zeroed) as the spare.
        data = b"".join(path.read_bytes() for path in _spools(db))
        assert not any(ex.call_id.encode() in data for ex in calls[:-2])
        assert sorted(i for path in _spools(db) for i in _ids(path)) == sorted(
            ex.call_id for ex in calls[-2:]
        )
        assert len(_spools(db)) == 2
        more = [_exchange(b"z" * 2000) for _ in range(12)]
        for ex in more:
            spool.append(ex)
        spooled = [i for path in _spools(db) for i in _ids(path)]
        assert sorted(spooled) == sorted(ex.call_id for ex in calls[-2:] + more)
    finally:
        spool.discard()
    assert _spools(db) == []


def test_a_record_bigger_than_a_segment_gets_one_of_its_own(
    tmp_path: Path, mapped: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_spool, "SEGMENT_BYTES", 16 * 1024)
    db = tmp_path / "calls.db"
    spool = _spool.Spool(db)
    try:
        small, big, after = _exchange(), _exchange(os.urandom(100_000)), _exchange()
        first = spool.append(small)
        segment = spool.append(big)
        assert spool.append(after) == first != segment
        by_file = {path.name: _ids(path) for path in _spools(db)}
        assert sorted(by_file.values()) == sorted([[small.call_id, after.call_id], [big.call_id]])
        spool.release(segment)
        spool.tidy()
        assert [_ids(path) for path in _spools(db)] == [[small.call_id, after.call_id]]
    finally:
        spool.discard()


@pytest.mark.parametrize("format", ["mapped", "older: framed by length alone", "written, not mapped"])
def test_a_dead_process_s_spool_is_recovered_in_either_format(
    format: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "calls.db"
    big = json.dumps({"model": "gpt-4o-mini", "prompt": os.urandom(35_000).hex()}).encode()
    calls = [_exchange(db=db), _exchange(big, db=db), _exchange(db=db)]
    folder = spool_folder(db)
    if format == "older: framed by length alone":
        # As the spool wrote before mapped files: each record's length, then its marshal
        # (version 4), no padding, no end mark.
        folder.mkdir(mode=0o700)
        records = [marshal.dumps(marshal.loads(_spool._record(ex)), 4) for ex in calls]
        data = b"".join(struct.pack("<I", len(r)) + r for r in records)
        (folder / "4242-0badcafe-1.spool").write_bytes(data + struct.pack("<I", 500) + b"cut short")
    else:
        monkeypatch.setattr(_spool, "_mappable", lambda folder: format == "mapped")
        monkeypatch.setattr(_spool, "SEGMENT_BYTES", 64 * 1024)
        spool = _spool.Spool(db)
        for ex in calls:
            spool.append(ex)
        assert all(path.read_bytes().startswith(_spool.MAGIC) == (format == "mapped") for path in _spools(db))
        spool.forget()  # as if the process were gone: its files unlocked
    with httptrack.open_log(db) as log:
        recovered = {call.id: call for call in log.calls()}
    assert sorted(recovered) == sorted(ex.call_id for ex in calls)
    assert recovered[calls[1].call_id].request_body == big.decode()
    assert _spools(db) == []


def test_a_spool_not_mapped_is_written_with_writev_and_emptied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_spool, "_mappable", lambda folder: False)
    db = tmp_path / "calls.db"
    spool = _spool.Spool(db)
    try:
        first = _exchange()
        spool.release(spool.append(first))
        (path,) = _spools(db)
        assert _ids(path) == [first.call_id]
        spool.tidy()
        assert path.stat().st_size == 0
        second = _exchange()
        spool.append(second)
        assert _ids(path) == [second.call_id]
    finally:
        spool.discard()


def test_spool_files_are_mapped_only_on_file_systems_that_write_in_place() -> None:
    if sys.platform != "linux":
        assert not _spool._mappable(Path.cwd())
        return
    with open("/proc/self/mountinfo", encoding="utf-8") as file:
        kinds = {line.split(" - ")[0].split()[4]: line.split(" - ")[1].split()[0] for line in file}
    assert _spool._mappable(Path("/proc/self")) is False  # proc: not a file system for data
    if kinds.get("/dev/shm") == "tmpfs":
        assert _spool._mappable(Path("/dev/shm/a/b")) is True
