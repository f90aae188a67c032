"""Process mode (``HTTPTRACK_WRITER=process``): the app's calls go to its feed, a writer
process (``record/_daemon``) builds and writes their rows. Driven through the openai SDK
over ``httpx2.MockTransport``, in app processes of their own (killed with ``SIGKILL``)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest
from helpers import make_exchange, read_rows

import httptrack
from httptrack import SettingsError
from httptrack._exchange import Exchange
from httptrack._settings import Settings
from httptrack.record import _spool
from httptrack.record._recover import read_feed, read_records
from httptrack.record._spool import FEED_MAGIC, Feed, publish_written, spool_folder
from httptrack.record._writer import writer

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="mapped spools, flock, posix_spawn")

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-proj-PROCESSMODE0123456789abcdef"
TIMEOUT = 120

#: An app in process mode. Env: DB, CALLS, and optionally PAUSE (a line on stdin to go on
#: after the first CALLS calls, then CALLS more), NO_FLUSH, NO_EXECUTABLE (the writer
#: process cannot be started), ECHO (the response quotes the API key). Prints "call <n>"
#: after each call (so a test knows which calls ended), then a JSON summary.
APP = f"""
import json, os, sys
import httpx2, openai, httptrack
from httptrack.record import _writer
if os.environ.get("NO_EXECUTABLE"):
    sys.executable = ""
if os.environ.get("FROZEN"):
    sys.frozen = True
echo = bool(os.environ.get("ECHO"))
def handler(request):
    body = json.loads(request.content)
    text = "the key was " + request.headers["authorization"].split()[-1] if echo else "hi"
    return httpx2.Response(200, headers={{"content-type": "application/json"}}, json={{
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
        "choices": [{{"index": 0, "finish_reason": "stop",
                      "message": {{"role": "assistant", "content": text}}}}],
        "usage": {{"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}}})
transport = httptrack.TrackingTransport(httpx2.MockTransport(handler), db=os.environ["DB"],
                                        cache=False, writer="process")
client = openai.OpenAI(api_key="{KEY}", http_client=httpx2.Client(transport=transport),
                       max_retries=0)
calls = int(os.environ["CALLS"])
done = 0
def burst():
    global done
    for _ in range(calls):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "hi"}}])
        done += 1
        print("call", done, flush=True)
burst()
if os.environ.get("PAUSE"):
    print("paused", flush=True)
    sys.stdin.readline()
    burst()
flushed = None if os.environ.get("NO_FLUSH") else httptrack.flush(timeout=60)
w = _writer.writer()
print(json.dumps({{"flushed": flushed, "pid": os.getpid(), "thread": w._thread is not None,
                  "feeds": sum(f is not None for f in w._feeds.by_log.values())}}), flush=True)
"""


def _env(db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HTTPTRACK")}
    path = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, "PYTHONPATH": path, "DB": str(db), **extra}


def _app(db: Path, calls: int, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(APP)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(db, CALLS=str(calls), **extra),
    )


def _summary(proc: subprocess.Popen[str]) -> tuple[dict[str, object], str]:
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


def _writer_pid(db: Path) -> int | None:
    try:
        return int((spool_folder(db) / "writer.lock").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Path]:
    """A log path; the writer processes the test started are stopped after it."""
    db = tmp_path / "calls.db"
    yield db
    pid = _writer_pid(db)
    if pid is not None and _alive(pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"httptrack.record._daemon" in cmdline:  # ours: never anything else
            os.kill(pid, signal.SIGKILL)


def _rows(db: Path) -> list[tuple[str, int, int | None, float | None, str | None]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute("SELECT id, pid, total_tokens, cost_usd, parse_notes FROM calls").fetchall()
    except sqlite3.OperationalError:  # no table yet
        return []
    finally:
        conn.close()


def _wait_rows(db: Path, count: int) -> list[tuple[str, int, int | None, float | None, str | None]]:
    deadline = time.monotonic() + 60
    rows = _rows(db)
    while len(rows) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        rows = _rows(db)
    return rows


def test_rows_arrive_with_their_figures_written_by_the_writer_process(log: Path) -> None:
    summary, _ = _summary(_app(log, 25))
    assert summary["flushed"] is True
    assert summary["thread"] is False  # no writer thread in the app
    assert summary["feeds"] == 1
    rows = _rows(log)  # read right after the app's flush(): every call is there
    assert len(rows) == 25
    assert len({row[0] for row in rows}) == 25
    assert {row[1] for row in rows} == {summary["pid"]}  # the app's pid, not the writer's
    assert {row[2] for row in rows} == {10}
    assert all(row[3] is not None and row[3] > 0 for row in rows)
    assert not any(row[4] and "recovered" in row[4] for row in rows)
    pid = _writer_pid(log)
    assert pid is not None and pid != summary["pid"] and _alive(pid)


def test_an_app_that_exits_without_flushing_leaves_its_calls_to_the_writer_process(log: Path) -> None:
    summary, _ = _summary(_app(log, 10, NO_FLUSH="1"))
    rows = _wait_rows(log, 10)
    assert len(rows) == 10
    assert {row[1] for row in rows} == {summary["pid"]}
    assert not any(row[4] and "recovered" in row[4] for row in rows)


def test_two_apps_share_one_writer_process(log: Path) -> None:
    first = _app(log, 20)
    second = _app(log, 20)
    one, _ = _summary(first)
    two, _ = _summary(second)
    assert one["flushed"] is True and two["flushed"] is True
    rows = _rows(log)
    assert len(rows) == 40 and len({row[0] for row in rows}) == 40
    assert {row[1] for row in rows} == {one["pid"], two["pid"]}
    # One writer process: the second app found the first's (or the other way round).
    daemons = [
        pid
        for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
        if _alive(pid)
        and b"httptrack.record._daemon" in Path(f"/proc/{pid}/cmdline").read_bytes()
        and Path(f"/proc/{pid}/environ").read_bytes().find(str(log).encode()) >= 0
    ]
    assert daemons == [_writer_pid(log)]


def test_an_app_killed_mid_burst_has_every_spooled_call_written_once(log: Path) -> None:
    proc = _app(log, 100_000, NO_FLUSH="1")
    assert proc.stdout is not None
    ended = 0
    for line in proc.stdout:
        ended = int(line.split()[1])
        if ended >= 300:
            break
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=TIMEOUT)
    ended = max([ended, *(int(line.split()[1]) for line in out.splitlines() if line.startswith("call"))])
    rows = _wait_rows(log, ended)
    # Every call that ended is in the log, once; the one cut short may be too.
    assert ended <= len(rows) <= ended + 1
    assert len({row[0] for row in rows}) == len(rows)
    deadline = time.monotonic() + 60  # its feed is gone once written
    while any(name.endswith(".spool") for name in os.listdir(spool_folder(log))):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_writer_process_killed_mid_write_is_restarted_and_writes_each_call_once(log: Path) -> None:
    proc = _app(log, 400, PAUSE="1")
    assert proc.stdout is not None and proc.stdin is not None
    killed = None
    for line in proc.stdout:
        if killed is None and line.startswith("call") and int(line.split()[1]) >= 150:
            killed = _writer_pid(log)
            if killed is not None:  # mid-burst: most likely while it writes
                os.kill(killed, signal.SIGKILL)
        if line.startswith("paused"):
            break
    assert killed is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    summary, _ = _summary(proc)
    assert summary["flushed"] is True  # flush() started another writer process
    restarted = _writer_pid(log)
    assert restarted is not None and restarted != killed
    rows = _rows(log)
    assert len(rows) == 800
    assert len({row[0] for row in rows}) == 800


@pytest.mark.parametrize("why", ["NO_EXECUTABLE", "FROZEN"])
def test_a_writer_process_that_cannot_start_leaves_the_calls_to_the_writer_thread(
    log: Path, why: str
) -> None:
    # FROZEN: a PyInstaller-style app, whose sys.executable is the app itself, not python.
    summary, err = _summary(_app(log, 15, **{why: "1"}))
    assert summary["flushed"] is True
    assert summary["thread"] is True and summary["feeds"] == 0
    assert "no writer process" in err
    assert err.count("no writer process") == 1  # reported once
    rows = _rows(log)
    assert len(rows) == 15 and {row[1] for row in rows} == {summary["pid"]}
    assert _writer_pid(log) is None


def test_a_writer_process_that_ended_is_reaped_by_the_app_that_started_it(log: Path) -> None:
    from httptrack.record import _daemon

    pid = _daemon.start(log)
    try:
        for _ in range(200):  # it takes the lock once its interpreter is up
            if _daemon.running(spool_folder(log)):
                break
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        for _ in range(200):
            if not _alive(pid):  # a zombie now, until its parent (this process) waits for it
                break
            time.sleep(0.05)
        assert Path(f"/proc/{pid}").exists()
        assert not _daemon.running(spool_folder(log))  # ... which this does, among its checks
        assert not Path(f"/proc/{pid}").exists()
    finally:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_the_writer_process_finds_httptrack_without_putting_site_packages_first(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from httptrack.record import _daemon

    package = str(ROOT.resolve())
    spawned: list[dict[str, str]] = []
    monkeypatch.setattr(os, "posix_spawn", lambda path, argv, env, **kw: spawned.append(dict(env)) or 1)
    monkeypatch.setattr(_daemon, "_spawned", [])
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setattr(_daemon, "_site_folders", lambda: set())
    _daemon.start(log)  # imported from a folder of the app's own (a checkout): passed on
    assert spawned[-1]["PYTHONPATH"].split(os.pathsep)[0] == package
    monkeypatch.setattr(_daemon, "_site_folders", lambda: {package})
    _daemon.start(log)  # from the interpreter's site-packages: found anyway, not put first
    assert "PYTHONPATH" not in spawned[-1]


def test_no_credential_reaches_the_log_or_the_feed(log: Path) -> None:
    summary, _ = _summary(_app(log, 5, ECHO="1", NO_FLUSH="1"))
    # The answer quotes the key: only the app's process can take it out, so these calls
    # took its writer thread (and were written before it exited).
    assert len(_wait_rows(log, 5)) == 5
    rows = read_rows(log)
    assert len(rows) == 5
    for row in rows:
        assert KEY not in json.dumps(row, default=str)
        assert "[redacted]" in (row["response_text"] or row["response_body"] or "")
    summary, _ = _summary(_app(log, 5))
    assert summary["flushed"] is True and summary["thread"] is False
    rows = read_rows(log)
    assert len(rows) == 10
    assert all(KEY not in json.dumps(row, default=str) for row in rows)
    for path in spool_folder(log).iterdir():
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


# -- in this process: what takes the writer thread --------------------------------------------

BODY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hello"}}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
}


def _client(db: Path | str, **options: object) -> openai.OpenAI:
    transport = httptrack.TrackingTransport(
        httpx2.MockTransport(lambda request: httpx2.Response(200, json=BODY)),
        db=db,
        cache=False,
        writer="process",
        **options,
    )
    return openai.OpenAI(api_key=KEY, http_client=httpx2.Client(transport=transport), max_retries=0)


def _chat(client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


def test_a_redact_hook_takes_the_writer_thread(log: Path) -> None:
    _chat(_client(log, redact=lambda text: text.replace("hello", "XXXXX")))
    rows = read_rows(log)
    assert len(rows) == 1
    assert "XXXXX" in rows[0]["response_text"] and "hello" not in rows[0]["response_text"]
    assert not writer()._feeds.by_log  # no feed, no writer process
    assert _writer_pid(log) is None


def test_limits_take_the_writer_thread(log: Path) -> None:
    _chat(_client(log, limits="usd=100/day"))
    rows = read_rows(log)
    assert len(rows) == 1 and rows[0]["total_tokens"] == 10
    assert not writer()._feeds.by_log
    assert _writer_pid(log) is None


def test_the_writer_setting() -> None:
    assert Settings().writer == "thread"
    assert Settings(writer="process").writer == "process"
    assert Settings(writer=" Process ").writer == "process"
    with pytest.raises(SettingsError, match="writer: expected thread or process"):
        Settings(writer="fork")
    os.environ["HTTPTRACK_WRITER"] = "process"
    try:
        assert Settings().writer == "process"
        os.environ["HTTPTRACK_WRITER"] = "daemon"
        with pytest.raises(SettingsError, match="HTTPTRACK_WRITER"):
            Settings()
    finally:
        del os.environ["HTTPTRACK_WRITER"]
    assert httptrack.TrackingTransport(writer="process").settings.writer == "process"


# -- the feed ----------------------------------------------------------------------------------


def _exchange(db: Path, body: bytes) -> Exchange:
    ex = make_exchange(
        settings=Settings(db=db),
        request_headers=[
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {KEY}".encode()),
        ],
        request_body=body,
    )
    ex.received_headers(200, [(b"content-type", b"application/json")])
    ex.add_chunk(json.dumps(BODY).encode())
    ex.end("complete")
    return ex


def test_a_feed_is_reused_once_written_and_read_from_where_the_writer_got_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_spool, "_mappable", lambda folder: True)
    monkeypatch.setattr(_spool, "RECYCLE_BYTES", 4096)
    db = tmp_path / "calls.db"
    feed = Feed.open(db)
    assert feed is not None
    try:
        ex = _exchange(db, b'{"model": "gpt-4o-mini", "pad": "' + b"x" * 1500 + b'"}')
        files = sorted(spool_folder(db).glob("*.spool"))
        assert len(files) == 1 and files[0].read_bytes()[:8] == FEED_MAGIC
        numbers = {feed.append(ex) for _ in range(4)}
        assert len(numbers) == 1 and min(numbers) > 0
        segment = feed._current
        assert segment is not None and segment.map is not None
        assert not feed.written()
        generation, end, records = read_feed(segment.map)
        assert (generation, len(records)) == (0, 4)
        # What a dead owner left is read from where the writer process got to.
        publish_written(segment.map, generation, end)
        assert feed.written()
        assert list(read_records(files[0].read_bytes())) == []
        # Written past RECYCLE_BYTES: the next append empties the segment and reuses it.
        feed.append(ex)
        assert segment.generation == 1 and feed._current is segment
        generation, _, records = read_feed(segment.map)
        assert (generation, len(records)) == (1, 1)
        assert len(list(read_records(files[0].read_bytes()))) == 1
        # A stale publish (the generation before) changes nothing.
        assert not publish_written(segment.map, 0, end)
        assert not feed.written()
        assert sorted(spool_folder(db).glob("*.spool")) == files
    finally:
        feed.discard()


def test_a_feed_full_and_not_written_rotates_and_closes_without_losing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_spool, "_mappable", lambda folder: True)
    monkeypatch.setattr(_spool, "SEGMENT_BYTES", 64 * 1024)
    db = tmp_path / "calls.db"
    feed = Feed.open(db)
    assert feed is not None
    ex = _exchange(db, b'{"model": "gpt-4o-mini", "pad": "' + b"x" * 4000 + b'"}')
    for _ in range(40):
        assert feed.append(ex) > 0
    files = sorted(spool_folder(db).glob("*.spool"))
    assert len(files) >= 2
    assert feed.close() is False  # not written: left for the writer process
    assert sum(len(list(read_records(path.read_bytes()))) for path in files) == 40


FORK = f"""
import json, os, sys
import httpx2, openai, httptrack
def handler(request):
    return httpx2.Response(200, json={BODY!r})
transport = httptrack.TrackingTransport(httpx2.MockTransport(handler), db=os.environ["DB"],
                                        cache=False, writer="process")
client = openai.OpenAI(api_key="{KEY}", http_client=httpx2.Client(transport=transport), max_retries=0)
def calls(n):
    for _ in range(n):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "hi"}}])
calls(3)
child = os.fork()
if child == 0:
    calls(4)
    os._exit(0 if httptrack.flush(timeout=60) else 1)
calls(5)
_, status = os.waitpid(child, 0)
print(json.dumps({{"flushed": httptrack.flush(timeout=60), "child": child, "status": status, "pid": os.getpid()}}))
"""


def test_a_forked_child_feeds_the_writer_process_through_a_feed_of_its_own(log: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FORK)],
        capture_output=True,
        text=True,
        env=_env(log),
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["flushed"] is True and summary["status"] == 0
    rows = _rows(log)
    assert len(rows) == 12 and len({row[0] for row in rows}) == 12
    by_pid = {pid: sum(1 for row in rows if row[1] == pid) for pid in {row[1] for row in rows}}
    assert by_pid == {summary["pid"]: 8, summary["child"]: 4}


LOCKED = f"""
import json, os, sys
import httpx2, openai, httptrack
def handler(request):
    return httpx2.Response(200, json={BODY!r})
transport = httptrack.TrackingTransport(httpx2.MockTransport(handler), db=os.environ["DB"],
                                        cache=False, writer="process")
client = openai.OpenAI(api_key="{KEY}", http_client=httpx2.Client(transport=transport), max_retries=0)
for _ in range(5):
    client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "hi"}}])
print(json.dumps({{"flushed": httptrack.flush(timeout=60)}}), flush=True)
sys.stdin.readline()
print(json.dumps({{"flushed": httptrack.flush(timeout=60)}}), flush=True)
"""


def test_a_log_the_writer_process_cannot_write_makes_flush_say_so_and_waits_in_the_feed(log: Path) -> None:
    summary, _ = _summary(_app(log, 1))  # the log exists, with its writer process
    assert summary["flushed"] is True
    lock = sqlite3.connect(log, timeout=30, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(LOCKED)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(log),
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        # Not a hang, not a timeout: the writer process said why (the log is locked).
        assert json.loads(proc.stdout.readline()) == {"flushed": False}
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert json.loads(proc.stdout.readline()) == {"flushed": True}
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert "did not write them within" not in err  # told why, not timed out
    assert "locked" not in err  # the writer process's faults are its own
    assert "locked" in (spool_folder(log) / "writer.log").read_text()
    rows = _rows(log)
    assert len(rows) == 6 and len({row[0] for row in rows}) == 6


POOL = f"""
import json, os, sys
import multiprocessing
import httpx2, openai, httptrack
from httptrack.record import _writer
def handler(request):
    return httpx2.Response(200, json={BODY!r})
def work(n):
    transport = httptrack.TrackingTransport(httpx2.MockTransport(handler), db=os.environ["DB"],
                                            cache=False, writer="process")
    client = openai.OpenAI(api_key="{KEY}", http_client=httpx2.Client(transport=transport), max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": str(n)}}])
    return os.getpid(), _writer.writer()._thread is not None
if __name__ == "__main__":
    with multiprocessing.get_context("fork").Pool(2) as pool:  # ends with terminate()
        done = pool.map(work, range(20))
    print(json.dumps(done))
"""


def test_a_pool_worker_in_process_mode_neither_waits_nor_loses_its_calls(log: Path, tmp_path: Path) -> None:
    script = tmp_path / "pool.py"
    script.write_text(textwrap.dedent(POOL))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=_env(log), timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not any(thread for _, thread in done)  # no writer thread, no flush per call
    rows = _wait_rows(log, 20)  # the workers were terminated: their feeds are written anyway
    assert len(rows) == 20 and len({row[0] for row in rows}) == 20
    assert {row[1] for row in rows} == {pid for pid, _ in done}


def test_a_writer_process_that_keeps_dying_is_given_up_and_its_feed_written_here(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from httptrack.record import _daemon

    monkeypatch.setattr(_spool, "_mappable", lambda folder: True)
    started: list[Path] = []
    monkeypatch.setattr(_daemon, "running", lambda folder: False)  # dies as soon as started
    monkeypatch.setattr(_daemon, "start", lambda db: started.append(db) or 0)
    client = _client(log)
    fed = writer()._feeds.fed
    for _ in range(3):
        _chat(client)
    assert writer()._feeds.by_log[log] is not None and writer()._feeds.fed == fed + 3
    assert httptrack.flush(timeout=30)
    assert len(started) == 5  # DAEMON_RESTARTS, then given up
    assert writer()._feeds.by_log[log] is None  # this process's calls take its writer thread now
    _chat(client)
    assert writer()._feeds.fed == fed + 3
    rows = read_rows(log)
    assert len(rows) == 4 and {row["pid"] for row in rows} == {os.getpid()}
    assert not any("recovered" in (row["parse_notes"] or "") for row in rows)


def _answer(db: Path, body: bytes, encoding: str | None) -> Exchange:
    ex = make_exchange(
        settings=Settings(db=db), request_headers=[(b"Authorization", f"Bearer {KEY}".encode())]
    )
    headers = [(b"Content-Type", b"application/json")]
    if encoding is not None:
        headers.append((b"Content-Encoding", encoding.encode()))
    ex.received_headers(200, headers)
    ex.add_chunk(body)
    ex.end("complete")
    return ex


@pytest.mark.parametrize(
    ("body", "encoding", "echoes"),
    [
        (b'{"text": "hello"}', None, False),
        (f'{{"text": "{KEY}"}}'.encode(), None, True),
        (b'{"text": "sk-proj-SOMEONEELSE0123456789abcdef"}', None, False),  # not its own
        (gzip.compress(b'{"text": "hello"}'), "gzip", False),
        (gzip.compress(f'{{"text": "your key {KEY}"}}'.encode()), "gzip", True),
        (zlib.compress(f'{{"text": "{KEY}"}}'.encode()), "deflate", True),
        (b"\x8b\x00 whatever brotli made", "br", True),  # not looked into here: the thread's
        (b"not gzip at all", "gzip", True),
    ],
)
def test_a_call_whose_answer_quotes_its_credential_takes_the_writer_thread(
    tmp_path: Path, body: bytes, encoding: str | None, echoes: bool
) -> None:
    ex = _answer(tmp_path / "calls.db", body, encoding)
    data = _spool._record(ex)
    assert _spool._echoes_credential(ex, data) is echoes


def test_a_postgres_log_has_its_writer_process_too(pg_url: str) -> None:
    from httptrack.log._url import DatabaseURL

    folder = DatabaseURL(pg_url).spool_folder()
    client = _client(pg_url)
    for _ in range(3):
        _chat(client)
    assert writer()._feeds.fed and writer()._feeds.by_log
    try:
        rows = read_rows(pg_url)
        assert len(rows) == 3 and {row["total_tokens"] for row in rows} == {10}
        pid = int((folder / "writer.lock").read_text().split()[0])
        assert _alive(pid) and pid != os.getpid()
    finally:
        pid = int((folder / "writer.lock").read_text().split()[0])
        if _alive(pid) and b"httptrack.record._daemon" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
