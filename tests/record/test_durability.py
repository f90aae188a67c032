"""Nothing lost: a call that returned to the app is in the log, whatever happens to the
process or the database afterwards, and what cannot be written is counted, never silent.

Each test runs a real app in a child process (the ``openai`` SDK over ``httpx2``'s
``MockTransport`` with the built-in fake provider, tracked into a temporary database) and
then does to it what operators see happen: ``kill -9``, ``os._exit``, a container's
``SIGTERM``, a database locked by another process, a full disk, a schema that refuses rows,
a ``fork()`` while the writer warms up. ``benchmarks/fault_harness.py`` runs the same with
20 repetitions and prints figures; here a few repetitions keep the suite fast.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import httptrack

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and fork")

ROOT = Path(__file__).resolve().parents[2]

#: The app: `call(i)` makes call i (even: plain, odd: streamed and read to the end) through
#: the openai SDK and returns once the app has the whole answer.
APP = """
import json, os, sys, time, signal, resource
import httpx2, openai, httptrack
from httptrack._fake import mock_transport

DB = os.environ["DB"]
transport = httptrack.TrackingTransport(mock_transport(httpx2), db=DB, cache=False)
client = openai.OpenAI(api_key="sk-test-not-real", base_url="https://api.openai.com/v1",
                       http_client=httpx2.Client(transport=transport), max_retries=0)
# Random words: bodies are stored compressed, and a repeated one would shrink to nothing.
PAD = "lorem ipsum " + " ".join(os.urandom(5).hex() for _ in range(int(os.environ.get("PAD_WORDS", "1")) // 2))

def call(i, user=None):
    extra = {"X-Httptrack-User": user} if user else None
    messages = [{"role": "user", "content": f"call {i}: {PAD}"}]
    if i % 2:
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True, extra_headers=extra) if c.choices)
    else:
        text = client.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                              extra_headers=extra).choices[0].message.content
    assert text

def say(**what):
    print(json.dumps(what), flush=True)

def wait_for(word):
    line = sys.stdin.readline().strip()
    assert line == word, line
"""


def _env(db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HTTPTRACK")}
    path = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, "PYTHONPATH": path, "DB": str(db), **extra}


class App:
    """The app in a child process, talked to over its stdin/stdout."""

    def __init__(self, code: str, db: Path, **env: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", APP + textwrap.dedent(code)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(db, **env),
        )
        self.stderr = ""

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.wait()
            raise AssertionError(f"the app ended early ({self.proc.returncode}):\n{self.stderr}")
        return json.loads(line)  # type: ignore[no-any-return]

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = 60) -> int:
        """The exit status; a bounded wait (a hang fails the test instead of the suite)."""
        try:
            _, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the app did not end within {timeout} s:\n{self.stderr}") from None
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        _, self.stderr = self.proc.communicate()


def run_app(code: str, db: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", APP + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(db, **env),
    )


def rows_in_file(db: Path, where: str = "1") -> int:
    """Rows the file holds now, read as is (read-only: recovers nothing)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute(f"SELECT count(*) FROM calls WHERE {where}").fetchone()[0])
    finally:
        conn.close()


def rows_via_cli(db: Path) -> list[dict[str, Any]]:
    """What ``httptrack calls`` shows: the next process opening the log."""
    done = subprocess.run(
        [sys.executable, "-m", "httptrack.cli", "calls", "-n", "0", "--json", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(db),
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def ids_via_open_log(db: Path) -> list[str]:
    """What ``httptrack.open_log`` shows (in this process: the next one to open the log)."""
    with httptrack.open_log(db) as log:
        return [call.id for call in log.calls()]


def rows_dropped(faults: dict[str, int]) -> int:
    """Rows the app was told were lost (one count per row)."""
    return faults.get("rows_dropped", 0)


# -- the process dies -----------------------------------------------------------------------

DIE = """
for i in range(int(os.environ["CALLS"])):
    call(i)
if os.environ["ENDING"] == "os._exit":
    os._exit(0)
say(ready=True)
time.sleep(60)
"""
CALLS = 20


def die(db: Path, ending: str, calls: int = CALLS) -> None:
    """Run the app until ``calls`` calls have returned, then end it by ``ending``."""
    app = App(DIE, db, CALLS=str(calls), ENDING=ending)
    try:
        if ending != "os._exit":
            assert app.read() == {"ready": True}
            app.proc.send_signal(signal.SIGKILL if ending == "kill -9" else signal.SIGTERM)
        status = app.wait()
    finally:
        app.kill()
    expected = {"kill -9": -signal.SIGKILL, "SIGTERM": -signal.SIGTERM, "os._exit": 0}[ending]
    assert status == expected, app.stderr


@pytest.mark.parametrize("ending", ["kill -9", "os._exit", "SIGTERM"])
def test_calls_that_returned_survive_the_process_dying(ending: str, tmp_path: Path) -> None:
    # Twice each: the next process is `httptrack calls`, then open_log.
    for rep, next_process in enumerate(("cli", "open_log")):
        db = tmp_path / f"{rep}.db"
        die(db, ending)
        if next_process == "cli":
            assert len(rows_via_cli(db)) == CALLS
        else:
            assert len(ids_via_open_log(db)) == CALLS
        assert rows_in_file(db) == CALLS  # recovered into the file, not only shown


def test_recovering_a_dead_process_s_calls_twice_at_once_stores_each_once(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    die(db, "kill -9")
    readers = [
        subprocess.Popen(
            [sys.executable, "-m", "httptrack.cli", "calls", "-n", "0", "--json", "--db", str(db)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(db),
        )
        for _ in range(3)
    ]
    for reader in readers:
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, err
        assert len(json.loads(out)) == CALLS
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*), count(DISTINCT id) FROM calls").fetchone() == (CALLS, CALLS)
    conn.close()


def test_a_new_app_on_the_same_log_recovers_the_dead_one_s_calls(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    die(db, "kill -9")
    done = run_app("call(100); assert httptrack.flush(30)", db)
    assert done.returncode == 0, done.stderr
    assert rows_in_file(db) == CALLS + 1


# -- the database is locked -----------------------------------------------------------------

LOCKED = """
import httptrack
call(0)
assert httptrack.flush(30)
say(ready=True)
wait_for("locked")
for i in range(1, 11):
    call(i)  # the app is not held up by the lock
say(flushed=httptrack.flush(8))  # longer than SQLite's busy timeout (5 s)
if os.environ["EXIT"] == "1":
    sys.exit(0)
wait_for("released")
say(flushed=httptrack.flush(30))
"""


def _lock(db: Path) -> sqlite3.Connection:
    blocker = sqlite3.connect(db, timeout=30, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    return blocker


def test_flush_says_false_while_the_database_is_locked_and_every_row_lands_after(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    app = App(LOCKED, db, EXIT="0")
    try:
        assert app.read() == {"ready": True}
        blocker = _lock(db)
        try:
            app.send("locked")
            assert app.read() == {"flushed": False}
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        app.send("released")
        assert app.read() == {"flushed": True}
        assert app.wait() == 0
    finally:
        app.kill()
    assert "not written" in app.stderr  # and it says why
    assert rows_in_file(db) == 11


def test_an_app_exiting_while_the_database_is_locked_ends_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    app = App(LOCKED, db, EXIT="1")
    try:
        assert app.read() == {"ready": True}
        blocker = _lock(db)
        try:
            app.send("locked")
            assert app.read() == {"flushed": False}
            assert app.wait() == 0  # exit is bounded, lock or no lock
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
    finally:
        app.kill()
    assert len(ids_via_open_log(db)) == 11


# -- the disk is full -----------------------------------------------------------------------

DISK_FULL = """
import httptrack
call(0)
assert httptrack.flush(30)
# No file may grow past its present size: a full disk, as SQLite sees it.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
sizes = [os.path.getsize(p) for p in (DB, DB + "-wal") if os.path.exists(p)]
resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes), resource.RLIM_INFINITY))
for i in range(1, 31):
    call(i)
full = httptrack.flush(5)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft + 1024 * 1024, hard))  # 1 MiB freed
httptrack.flush(10)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # all freed
say(full=full, freed=httptrack.flush(30), faults=httptrack.fault_counts())
"""


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_a_full_disk_then_freed_writes_every_row_or_counts_it(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    done = run_app(DISK_FULL, db, PAD_WORDS="2500")  # ~30 KB per prompt: 1 MiB holds a few
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["full"] is False  # flush() does not claim rows it could not write
    assert report["freed"] is True
    assert rows_in_file(db) - 1 + rows_dropped(report["faults"]) == 30


# -- the database refuses rows --------------------------------------------------------------

REFUSED = """
import httptrack
for i in range(10):
    call(i, user="refused" if i == 4 else None)
httptrack.flush(15)
say(faults=httptrack.fault_counts())
"""


def _template(tmp_path: Path) -> Path:
    """A log made by this version (one call), checkpointed into its file."""
    template = tmp_path / "template.db"
    done = run_app("call(0)", template)
    assert done.returncode == 0, done.stderr
    conn = sqlite3.connect(template)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return template


def test_rows_a_newer_schema_refuses_are_counted_not_silently_ignored(tmp_path: Path) -> None:
    template = _template(tmp_path)
    source = sqlite3.connect(template)
    columns = [(r[1], r[2]) for r in source.execute("PRAGMA table_info(calls)")]
    (version,) = source.execute("PRAGMA user_version").fetchone()
    source.close()
    # The calls table as a newer httptrack might make it: a NOT NULL column this one lacks.
    db = tmp_path / "newer.db"
    conn = sqlite3.connect(db, isolation_level=None)
    body = ", ".join(f'"{name}" {kind}' for name, kind in columns)
    conn.execute(f"CREATE TABLE calls ({body}, tenant TEXT NOT NULL, PRIMARY KEY (id))")
    conn.execute(f"PRAGMA user_version={version}")
    conn.close()
    done = run_app(REFUSED, db)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert rows_in_file(db) == 0
    assert rows_dropped(report["faults"]) == 10
    assert "refused" in done.stderr  # and said


def test_one_refused_row_does_not_hold_back_the_others(tmp_path: Path) -> None:
    template = _template(tmp_path)
    db = tmp_path / "refusing.db"
    shutil.copy(template, db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DELETE FROM calls")
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON calls WHEN NEW.user = 'refused' "
        "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
    )
    conn.close()
    done = run_app(REFUSED, db)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert rows_in_file(db) == 9
    assert rows_in_file(db, "user = 'refused'") == 0
    assert rows_dropped(report["faults"]) == 1


# -- fork -----------------------------------------------------------------------------------

FORK = """
import httptrack
call(0, user="first")
time.sleep(float(os.environ["DELAY"]))
pid = os.fork()
if pid == 0:
    for i in range(5):
        call(i, user="child")
    say(child_flushed=httptrack.flush(20))
    os._exit(0)
for i in range(5):
    call(i, user="parent")
_, status = os.waitpid(pid, 0)
say(parent_flushed=httptrack.flush(20), child_status=status)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize("delay", [0.0, 0.005, 0.05])
def test_a_fork_while_the_writer_warms_up_records_the_child_s_calls(delay: float, tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    done = run_app(FORK, db, DELAY=str(delay))  # a deadlock ends in the run's timeout
    assert done.returncode == 0, done.stderr
    said = [json.loads(line) for line in done.stdout.splitlines()]
    assert {"child_flushed": True} in said
    assert {"parent_flushed": True, "child_status": 0} in said
    assert "Error" not in done.stderr
    assert rows_in_file(db, "user = 'child'") == 5
    assert rows_in_file(db, "user = 'parent'") == 5


# -- the file is the log --------------------------------------------------------------------


def test_after_the_last_writer_exits_the_db_file_alone_holds_the_log(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    done = run_app("for i in range(10): call(i)", db)
    assert done.returncode == 0, done.stderr
    copy = tmp_path / "copy.db"
    shutil.copy(db, copy)  # what a user does: copy the .db, not its -wal
    assert rows_in_file(copy) == 10


def test_a_recovered_call_reads_as_the_writer_would_have_written_it(tmp_path: Path) -> None:
    written, recovered = tmp_path / "written.db", tmp_path / "recovered.db"
    done = run_app("call(0, user='u'); call(1, user='u')", written)  # written by the app's writer
    assert done.returncode == 0, done.stderr
    die(recovered, "kill -9", calls=2)  # written from the spool by the next process
    ids_via_open_log(recovered)
    columns = (
        "provider, model, response_model, operation, stream, status, outcome, http_status, input_tokens, "
        "output_tokens, cost_usd, finish_reason, request_body, response_text, tokens_estimated, endpoint, url"
    )
    rows = []
    for db in (written, recovered):
        conn = sqlite3.connect(db)
        rows.append(conn.execute(f"SELECT {columns} FROM calls ORDER BY id").fetchall())
        conn.close()
    assert len(rows[0]) == 2 and rows[0] == rows[1]
