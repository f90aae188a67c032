"""Does a call that returned survive what kills or starves a process? Figures, rerunnable.

    python benchmarks/fault_harness.py            # full: 20 repetitions each, a few minutes
    python benchmarks/fault_harness.py --quick    # CI smoke run (seconds)
    python benchmarks/fault_harness.py --only death,lock

Every app here is a child process driving the ``openai`` SDK over ``httpx2.MockTransport``
with httptrack's built-in fake provider (no sockets), writing to a fresh database in a
temporary folder. Sections:

- **death**: the app makes N tracked calls (plain and streamed, alternating), and as soon
  as the N-th has returned it dies: ``kill -9``, ``os._exit(0)``, or the default ``SIGTERM``
  handler (every container stop). The next process then opens the log (``httptrack calls``
  and ``httptrack.open_log``): how many of the N rows does it find, per repetition?
- **lock**: another process holds the database's write lock for 10 s (7 s with --quick)
  while the app makes calls: the calls' latency, what ``flush()`` returns during the lock
  (and how long it takes), rows after the lock is gone; and an app that exits during the
  lock: how long the exit takes, and what the next process finds after the lock.
- **disk**: a full disk, then freed. On a tiny tmpfs when this machine can mount one (root),
  else with ``RLIMIT_FSIZE`` (no file may grow past its size; ``SIGXFSZ`` ignored), raised
  by 1 MiB, then lifted: rows written at each step, rows counted as dropped, the sum
  against the calls made.
- **refused**: a database whose schema refuses rows (a newer version's ``NOT NULL``
  column; a trigger that aborts one row): rows written, rows the app was told about
  (``fault_counts()``), rows lost silently.
- **fork**: the app forks 0–300 ms after its first call (while the writer warms up: price
  data, imports): does the child finish (no deadlock), are its calls recorded?
- **wal**: after a normal exit, is the ``.db`` file alone the whole log (no rows left in the
  ``-wal`` file)?

Each section prints a table; a line is ``OK`` when nothing was lost or hung.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("HTTPTRACK")},
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}

#: The app: an openai SDK client over the fake provider, tracked into $DB. `call(i)` makes
#: call i (even: plain, odd: streamed and read to the end) and returns once the app has it.
APP = """
import json, os, sys, time, signal, resource
import httpx2, openai, httptrack
from httptrack._fake import mock_transport

DB = os.environ["DB"]
transport = httptrack.TrackingTransport(mock_transport(httpx2), db=DB, cache=False)
client = openai.OpenAI(api_key="sk-test-not-real", base_url="https://api.openai.com/v1",
                       http_client=httpx2.Client(transport=transport), max_retries=0)
# Random words: bodies are stored compressed, and a repeated one would shrink to nothing (the
# disk-full scenario would then never fill its disk).
PAD_WORDS = int(os.environ.get("PAD_WORDS", "1"))
PAD = "lorem ipsum " + " ".join(os.urandom(5).hex() for _ in range(PAD_WORDS // 2))

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


def run_app(code: str, db: Path, *, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-c", APP + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**ENV, "DB": str(db), **env},
    )


def start_app(code: str, db: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-c", APP + textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, "DB": str(db), **env},
    )


def read_json_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the app ended early: {proc.wait()} {proc.stderr.read() if proc.stderr else ''}")
    return json.loads(line)  # type: ignore[no-any-return]


def send(proc: subprocess.Popen[str], word: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(word + "\n")
    proc.stdin.flush()


def rows_via_cli(db: Path) -> int:
    """What ``httptrack calls`` shows: the next process opening the log."""
    done = subprocess.run(
        [PYTHON, "-m", "httptrack.cli", "calls", "-n", "0", "--json", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    if done.returncode != 0:
        return -1
    return len(json.loads(done.stdout or "[]"))


def rows_via_open_log(db: Path) -> int:
    code = "import sys, httptrack; print(len(list(httptrack.open_log(sys.argv[1]).calls())))"
    done = subprocess.run([PYTHON, "-c", code, str(db)], capture_output=True, text=True, timeout=120, env=ENV)
    return int(done.stdout) if done.returncode == 0 and done.stdout.strip() else -1


def count_rows(db: Path, where: str = "1") -> int:
    """Rows in the file as it is now (read-only: this process recovers nothing)."""
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute(f"SELECT count(*) FROM calls WHERE {where}").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


@contextlib.contextmanager
def fresh_db() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="httptrack-faults-"))
    try:
        yield folder / "calls.db"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print(
            "  "
            + "  ".join(
                c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
    print()


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


# -- death ----------------------------------------------------------------------------------

DEATH_APP = """
for i in range(int(os.environ["CALLS"])):
    call(i)
ending = os.environ["ENDING"]
if ending == "os._exit":
    os._exit(0)
say(ready=True)
time.sleep(60)
"""


def death(calls: int, reps: int) -> bool:
    print(f"## death: {calls} calls returned, then the process dies ({reps} repetitions each)\n")
    rows: list[list[Any]] = []
    ok = True
    for ending in ("kill -9", "os._exit", "SIGTERM"):
        found: list[int] = []
        failed = 0
        for rep in range(reps):
            with fresh_db() as db:
                proc = start_app(DEATH_APP, db, CALLS=str(calls), ENDING=ending)
                try:
                    if ending != "os._exit":
                        read_json_line(proc)
                        proc.send_signal(signal.SIGKILL if ending == "kill -9" else signal.SIGTERM)
                    proc.wait(timeout=60)
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                    proc.communicate()
                # The next process opens the log: alternately the CLI and open_log.
                seen = rows_via_cli(db) if rep % 2 == 0 else rows_via_open_log(db)
                if seen < 0:  # it could not open the log (none there): what the file holds
                    failed += 1
                    seen = count_rows(db)
                found.append(seen)
        lost = [calls - n for n in found]
        good = all(n == calls for n in found)
        ok &= good
        rows.append(
            [
                ending,
                calls,
                f"{sum(n == calls for n in found)}/{reps}",
                spread([float(n) for n in found]),
                f"{min(lost)}-{max(lost)}",
                failed,
                "OK" if good else "LOST",
            ]
        )
    table(["ending", "calls", "reps whole", "rows found (median, min-max)", "lost", "no log", ""], rows)
    return ok


# -- lock -----------------------------------------------------------------------------------

LOCK_APP = """
import httptrack
call(0)
assert httptrack.flush(30)
say(db_ready=True)
wait_for("locked")
lat = []
for i in range(1, int(os.environ["CALLS"]) + 1):
    t = time.perf_counter(); call(i); lat.append((time.perf_counter() - t) * 1000)
t = time.perf_counter()
during = httptrack.flush(float(os.environ["FLUSH_TIMEOUT"]))
say(max_ms=max(lat), median_ms=sorted(lat)[len(lat) // 2], during=during,
    during_s=time.perf_counter() - t, faults=httptrack.fault_counts())
if os.environ["EXIT_DURING_LOCK"] == "1":
    sys.exit(0)
wait_for("released")
t = time.perf_counter()
after = httptrack.flush(60)
say(after=after, after_s=time.perf_counter() - t)
"""


#: What the app gives flush() while the lock is held: longer than SQLite's busy timeout
#: (5 s), so a flush that gives up on the lock has to say so rather than time out.
FLUSH_DURING_LOCK = 6.0


def lock(calls: int, hold: float) -> bool:
    print(
        f"## lock: another process holds the write lock for {hold:.0f} s while the app makes {calls} calls\n"
    )
    ok = True
    rows: list[list[Any]] = []
    for exit_during in (False, True):
        with fresh_db() as db:
            proc = start_app(
                LOCK_APP,
                db,
                CALLS=str(calls),
                FLUSH_TIMEOUT=str(FLUSH_DURING_LOCK),
                EXIT_DURING_LOCK="1" if exit_during else "0",
            )
            try:
                read_json_line(proc)
                blocker = sqlite3.connect(db, timeout=30, isolation_level=None)
                blocker.execute("BEGIN IMMEDIATE")
                locked_at = time.monotonic()
                send(proc, "locked")
                report = read_json_line(proc)
                exit_s: float | None = None
                if exit_during:
                    t = time.monotonic()
                    proc.wait(timeout=120)
                    exit_s = time.monotonic() - t
                time.sleep(max(0.0, hold - (time.monotonic() - locked_at)))
                blocker.execute("ROLLBACK")
                blocker.close()
                after: dict[str, Any] = {}
                if not exit_during:
                    send(proc, "released")
                    after = read_json_line(proc)
                    t = time.monotonic()
                    proc.wait(timeout=120)
                    exit_s = time.monotonic() - t
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.communicate()
            found = rows_via_cli(db)
            whole = found == calls + 1
            good = whole and report["during"] is False and (exit_during or after.get("after") is True)
            ok &= good
            rows.append(
                [
                    "exits during the lock" if exit_during else "waits for the lock",
                    f"{report['median_ms']:.1f} / {report['max_ms']:.1f}",
                    f"{report['during']} in {report['during_s']:.1f} s",
                    "-" if exit_during else f"{after.get('after')} in {after.get('after_s', 0):.1f} s",
                    f"{exit_s:.1f} s" if exit_s is not None else "-",
                    f"{found}/{calls + 1}",
                    "OK" if good else "NOT OK",
                ]
            )
    table(
        ["app", "call ms (median / max)", "flush() during", "flush() after", "exit took", "rows after", ""],
        rows,
    )
    return ok


# -- disk -----------------------------------------------------------------------------------

DISK_APP = """
import httptrack
call(0)
assert httptrack.flush(30)
say(db_ready=True)
wait_for("full")
if os.environ["HOW"] == "rlimit":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    sizes = [os.path.getsize(p) for p in (DB, DB + "-wal") if os.path.exists(p)]
    resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes), resource.RLIM_INFINITY))
calls = int(os.environ["CALLS"])
for i in range(1, calls + 1):
    call(i)
full = httptrack.flush(5)
say(full=full)
wait_for("freed")
if os.environ["HOW"] == "rlimit":
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft + 1024 * 1024, hard))
freed = httptrack.flush(15)
say(freed=freed, faults=httptrack.fault_counts())
wait_for("lifted")
if os.environ["HOW"] == "rlimit":
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
lifted = httptrack.flush(30)
say(lifted=lifted, faults=httptrack.fault_counts())
"""


def can_mount_tmpfs() -> bool:
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        return False
    folder = tempfile.mkdtemp(prefix="httptrack-tmpfs-")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", folder], capture_output=True)
        if done.returncode != 0:
            return False
        subprocess.run(["umount", folder], capture_output=True)
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def dropped_rows(faults: dict[str, int]) -> int:
    """Rows the app was told it lost: fault kinds that count rows (one per row)."""
    return faults.get("rows_dropped", 0)


def disk(calls: int, how: str) -> bool:
    size_mib = 64
    print(
        f"## disk: full while the app makes {calls} calls (~30 KB prompts), 1 MiB freed, then all ({how})\n"
    )
    folder = Path(tempfile.mkdtemp(prefix="httptrack-disk-"))
    mounted = False
    fillers: list[Path] = []
    try:
        if how == "tmpfs":
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(folder)], check=True
            )
            mounted = True
        db = folder / "calls.db"
        proc = start_app(DISK_APP, db, CALLS=str(calls), HOW=how, PAD_WORDS="2500")
        try:
            read_json_line(proc)
            if how == "tmpfs":  # fill what is left, in 256 KiB files (freed one by one)
                n = 0
                while True:
                    filler = folder / f"filler-{n}"
                    try:
                        with open(filler, "wb") as f:
                            f.write(b"\0" * 256 * 1024)
                    except OSError:
                        break
                    fillers.append(filler)
                    n += 1
            send(proc, "full")
            full = read_json_line(proc)
            written_full = count_rows(db) - 1
            if how == "tmpfs":
                for filler in fillers[:4] + fillers[-1:]:
                    filler.unlink(missing_ok=True)
            send(proc, "freed")
            freed = read_json_line(proc)
            written_freed = count_rows(db) - 1
            if how == "tmpfs":
                for filler in fillers:
                    filler.unlink(missing_ok=True)
            send(proc, "lifted")
            lifted = read_json_line(proc)
            written_lifted = count_rows(db) - 1
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.communicate()
        after_exit = count_rows(db) - 1
        dropped = dropped_rows(lifted["faults"])
        good = after_exit + dropped == calls
        table(
            ["step", "flush()", "rows written", "counted dropped", "written + dropped"],
            [
                ["disk full", full["full"], f"{written_full}/{calls}", "", ""],
                [
                    "1 MiB freed",
                    freed["freed"],
                    f"{written_freed}/{calls}",
                    dropped_rows(freed["faults"]),
                    "",
                ],
                ["all freed", lifted["lifted"], f"{written_lifted}/{calls}", dropped, ""],
                ["after exit", "", f"{after_exit}/{calls}", dropped, f"{after_exit + dropped}/{calls}"],
            ],
        )
        print(f"  faults: {lifted['faults']}\n  {'OK' if good else 'NOT OK: rows lost without a count'}\n")
        return good
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


# -- refused --------------------------------------------------------------------------------

REFUSED_APP = """
import httptrack
for i in range(int(os.environ["CALLS"])):
    call(i, user="poison" if i == 5 else None)
say(flushed=httptrack.flush(15), faults=httptrack.fault_counts())
"""


def newer_schema(template: Path, db: Path) -> None:
    """``db``: the table ``template`` has, plus a NOT NULL column without a default (as a
    newer version of httptrack might add), at the same schema version."""
    source = sqlite3.connect(template)
    columns = [(r[1], r[2]) for r in source.execute("PRAGMA table_info(calls)")]
    (version,) = source.execute("PRAGMA user_version").fetchone()
    source.close()
    conn = sqlite3.connect(db, isolation_level=None)
    body = ", ".join(f'"{name}" {kind}' for name, kind in columns)
    conn.execute(f"CREATE TABLE calls ({body}, tenant TEXT NOT NULL, PRIMARY KEY (id))")
    conn.execute(f"PRAGMA user_version={version}")
    conn.close()


def refused(calls: int) -> bool:
    print(f"## refused: the database refuses rows ({calls} calls)\n")
    ok = True
    rows: list[list[Any]] = []
    for case in ("NOT NULL column", "trigger refuses 1 row"):
        with fresh_db() as template:
            run_app("call(0)", template)
            db = template.with_name("refusing.db")
            if case == "NOT NULL column":
                newer_schema(template, db)
                refusable = calls
            else:
                source, conn = sqlite3.connect(template), sqlite3.connect(db, isolation_level=None)
                source.backup(conn)  # not a file copy: the rows may still be in the -wal file
                source.close()
                conn.execute("DELETE FROM calls")
                conn.execute(
                    "CREATE TRIGGER refuse BEFORE INSERT ON calls WHEN NEW.user = 'poison' "
                    "BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
                conn.close()
                refusable = 1
            done = run_app(REFUSED_APP, db, CALLS=str(calls))
            report = json.loads(done.stdout.splitlines()[-1]) if done.returncode == 0 else {"faults": {}}
            written = count_rows(db)
            told = dropped_rows(report["faults"])
            silent = calls - written - told
            good = written == calls - refusable and told == refusable
            ok &= good
            rows.append(
                [case, f"{written}/{calls}", told, silent, report.get("flushed"), "OK" if good else "NOT OK"]
            )
    table(["schema", "rows written", "counted dropped", "lost silently", "flush()", ""], rows)
    return ok


# -- fork -----------------------------------------------------------------------------------

FORK_APP = """
import httptrack
call(0, user="first")
time.sleep(float(os.environ["DELAY"]))
pid = os.fork()
if pid == 0:
    t = time.perf_counter()
    for i in range(5):
        call(i, user="child")
    flushed = httptrack.flush(10)
    say(child_s=time.perf_counter() - t, flushed=flushed)
    os._exit(0)
for i in range(5):
    call(i, user="parent")
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    time.sleep(0.01)
else:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    say(hung=True)
"""


def fork(reps: int) -> bool:
    delays = [0.0, 0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.3]
    print(f"## fork: the app forks DELAY after its first call; parent and child make 5 calls ({reps} reps)\n")
    ok = True
    rows: list[list[Any]] = []
    for delay in delays:
        hung = errors = whole = 0
        child_s: list[float] = []
        for _ in range(reps):
            with fresh_db() as db:
                done = run_app(FORK_APP, db, DELAY=str(delay))
                lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
                hung += any(line.get("hung") for line in lines)
                child_s += [line["child_s"] for line in lines if "child_s" in line]
                errors += "Error" in done.stderr
                counts = (count_rows(db, "user = 'child'"), count_rows(db, "user = 'parent'"))
                whole += counts == (5, 5)
        good = whole == reps and not hung
        ok &= good
        rows.append(
            [
                f"{delay * 1000:.0f} ms",
                f"{whole}/{reps}",
                hung,
                errors,
                spread([s * 1000 for s in child_s]),
                "OK" if good else "NOT OK",
            ]
        )
    table(["fork after", "all rows", "child hung", "errors", "child's 5 calls + flush (ms)", ""], rows)
    return ok


# -- wal ------------------------------------------------------------------------------------


def wal(calls: int) -> bool:
    print(f"## wal: {calls} calls, a normal exit; is the .db file alone the log?\n")
    with fresh_db() as db:
        done = run_app(f"for i in range({calls}): call(i)", db)
        wal_file = Path(str(db) + "-wal")
        wal_size = wal_file.stat().st_size if wal_file.exists() else 0
        copy = db.with_name("copy.db")
        if db.exists():
            shutil.copy(db, copy)
        alone = count_rows(copy)
    good = done.returncode == 0 and alone == calls
    table(
        ["calls", "-wal after exit (bytes)", "rows in a copy of the .db alone", ""],
        [[calls, wal_size, f"{alone}/{calls}", "OK" if good else "NOT OK"]],
    )
    return good


SECTIONS = ("death", "lock", "disk", "refused", "fork", "wal")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (seconds), for CI")
    parser.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--reps", type=int, help="repetitions (default 20, 2 with --quick)")
    parser.add_argument("--calls", type=int, help="calls per app (default 200, 30 with --quick)")
    parser.add_argument("--disk", choices=("auto", "tmpfs", "rlimit"), default="auto")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    reps = args.reps or (2 if args.quick else 20)
    calls = args.calls or (30 if args.quick else 200)
    how = args.disk if args.disk != "auto" else ("tmpfs" if can_mount_tmpfs() else "rlimit")
    print(f"# fault harness: {calls} calls, {reps} repetitions, python {sys.version.split()[0]}\n")
    results: dict[str, bool] = {}
    started = time.monotonic()
    if "death" in only:
        results["death"] = death(calls, reps)
    if "lock" in only:
        results["lock"] = lock(calls, FLUSH_DURING_LOCK + 1 if args.quick else 10.0)
    if "disk" in only:
        results["disk"] = disk(calls * 3, how)
    if "refused" in only:
        results["refused"] = refused(min(calls, 30))
    if "fork" in only:
        results["fork"] = fork(max(1, reps // 4) if not args.quick else 1)
    if "wal" in only:
        results["wal"] = wal(calls)
    summary = ", ".join(f"{name} {'OK' if good else 'NOT OK'}" for name, good in results.items())
    print(f"# {summary} ({time.monotonic() - started:.0f} s)")
    # Figures, not a test: the exit status says only whether the harness itself ran.
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
