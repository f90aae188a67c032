"""The writer process (``HTTPTRACK_WRITER=process``): rows built and written outside the app.

In process mode the app's thread appends each finished call to its feed (``_spool.Feed``:
a ``marshal``-ed record copied into a mapped file, as the spool always did) and is done
with it: no writer thread, no queue, no wake. One writer process per log, whichever
processes call, reads the feeds of the live processes, builds their rows (``restore``,
``build_row``) and writes them through the log's backend in batches, then publishes in
each feed segment how far its records are in the log (the app then empties and reuses the
segment, and ``flush()`` knows its calls are written). The files of processes that ended
go through :func:`recover`, as always.

- Started by the first process-mode call for a log (``start``: ``posix_spawn`` of
  ``python -m httptrack.record._daemon``, its own session, ``stdin``/``stdout`` on
  ``/dev/null``, ``stderr`` appended to ``<spool folder>/writer.log``), and again by a
  ``flush()`` (or every few thousand calls) that finds it gone. The log it writes comes in
  ``HTTPTRACK_WRITER_LOG`` (not on the command line: a Postgres URL holds a password).
- One per log: it holds an exclusive ``flock`` on ``<spool folder>/writer.lock``, which
  holds its pid (text). A second one started meanwhile finds it held and exits.
- It looks at the folder every ``POLL_MIN`` seconds while calls come, backing off up to
  ``POLL_MAX`` when none do; a ``flush()`` wakes it at once through the FIFO
  ``writer.wake``. It exits once no live process has a feed, nothing is left to write, for
  ``IDLE_EXIT`` seconds.
- A log that cannot be written (locked, full, read-only): the feeds keep the calls and the
  writer process tries again with a growing back-off; ``writer.status`` says why while it
  lasts (a ``flush()`` reads it). Its faults go to its own log file, never to the app.
- Rows are written idempotently (by call id): a writer process killed between a commit and
  publishing how far it got writes those calls again when it restarts, and they are
  stored once.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import select
import sys
import time
from pathlib import Path

from .._errors import LogUnavailable
from .._faults import report_fault
from ..log._open import open_backend
from ..log._url import DatabaseURL, LogTarget, log_target
from ._recover import RECOVER_BATCH, read_feed, recover, spooled_rows
from ._spool import FEED_MAGIC, publish_written, spool_folder

__all__ = ["LOCK", "STATUS", "TARGET_ENV", "WAKE", "main", "running", "start", "status", "wake"]

#: In the spool folder: the writer process's lock (holding its pid), its wake-up FIFO,
#: why the log cannot be written (while that lasts), and its own log (stderr).
LOCK = "writer.lock"
WAKE = "writer.wake"
STATUS = "writer.status"
LOG = "writer.log"
#: The log the writer process writes (its target: a path, or a database URL).
TARGET_ENV = "HTTPTRACK_WRITER_LOG"
#: Seconds between looks at the feeds while calls come (as the writer thread's BATCH_WAIT:
#: a transaction holds the calls of that span; a ``flush()`` wakes it at once), and at most
#: while none do.
POLL_MIN = 0.05
POLL_MAX = 0.5
#: With no live feed and nothing to write for this long (seconds), the writer process ends.
IDLE_EXIT = 30.0
#: After a failed write, the next waits this long (doubling up to RETRY_MAX), unless woken.
RETRY_MIN = 0.25
RETRY_MAX = 5.0
#: Looks at a record that does not read back whole before it is counted as lost.
STUCK_LOOKS = 50
#: The log file is emptied when the writer process starts if it has grown past this.
LOG_BYTES = 1024 * 1024


# -- the app's side --------------------------------------------------------------------------


#: Writer processes this process started and has not reaped yet (see ``_reap``).
_spawned: list[int] = []


def _reap() -> None:
    """Collect the exit status of writer processes this one started that have ended: a
    child that ends stays a zombie (a process table entry) until its parent waits for it."""
    for pid in list(_spawned):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (a SIGCHLD handler, SIG_IGN)
            done = pid
        if done:
            _spawned.remove(pid)


def running(folder: Path) -> bool:
    """Whether a writer process holds the folder's lock (a few system calls)."""
    if _spawned:
        _reap()
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def start(db: LogTarget) -> int:
    """Start a writer process for the log ``db``; its pid. Raises ``OSError`` if it cannot
    be (no Python executable, spawning forbidden). It is not waited for: a second one
    exits at once if another holds the lock."""
    executable = sys.executable
    if not executable:
        raise OSError("no Python executable (sys.executable is empty)")
    if getattr(sys, "frozen", False):  # PyInstaller, cx_Freeze...: sys.executable is the app
        raise OSError("the app is a frozen executable: it cannot run `python -m`")
    folder = spool_folder(db)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {name: value for name, value in os.environ.items() if name != "HTTPTRACK"}  # no autoload
    env[TARGET_ENV] = db.url if isinstance(db, DatabaseURL) else os.fspath(db)
    # The httptrack the app imported, wherever it came from (a sys.path set in code).
    # Not when it is the interpreter's own site-packages (found anyway): ahead of the
    # standard library there, a package named like a standard module would shadow it.
    package = str(Path(__file__).resolve().parents[2])
    if package not in _site_folders():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package, env.get("PYTHONPATH")]))
    log = folder / LOG
    with contextlib.suppress(OSError):
        if log.stat().st_size > LOG_BYTES:
            log.unlink()
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
    ]
    _reap()
    pid = os.posix_spawn(
        executable,
        [executable, "-m", "httptrack.record._daemon"],
        env,
        file_actions=actions,
        setsid=True,
    )
    _spawned.append(pid)
    return pid


def _site_folders() -> set[str]:
    """The folders this interpreter finds packages in by itself (its site-packages)."""
    import site

    folders = set(site.getsitepackages()) if hasattr(site, "getsitepackages") else set()
    with contextlib.suppress(Exception):
        folders.add(site.getusersitepackages())
    return {str(Path(folder).resolve()) for folder in folders}


def wake(folder: Path) -> bool:
    """Wake the writer process now (a ``flush()``); ``False`` if none listens."""
    try:
        fd = os.open(folder / WAKE, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # no FIFO, or nobody reading it (ENXIO)
        return False
    try:
        os.write(fd, b"\0")
    except OSError:  # full: it is awake already
        pass
    finally:
        os.close(fd)
    return True


def status(folder: Path, since: float) -> str | None:
    """Why the writer process could not write the log, if it said so since ``since``
    (``time.time()``)."""
    path = folder / STATUS
    try:
        if path.stat().st_mtime < since:
            return None
        return path.read_text(encoding="utf-8", errors="replace").strip() or "the log cannot be written"
    except OSError:
        return None


# -- the writer process -----------------------------------------------------------------------


class _Feed:
    """A live process's feed segment, mapped."""

    __slots__ = ("fd", "map", "pid", "stuck")

    def __init__(self, fd: int, mapped: mmap.mmap, pid: str) -> None:
        self.fd = fd
        self.map = mapped
        self.pid = pid
        #: (generation, position) of a record that did not read back whole, and looks since.
        self.stuck: tuple[int, int, int] | None = None

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self.map.close()
        os.close(self.fd)


class _Daemon:
    def __init__(self, db: LogTarget, folder: Path) -> None:
        self.db = db
        self.folder = folder
        self.backend = open_backend(db)
        self.opened = False
        self.feeds: dict[str, _Feed] = {}
        self.failing = False
        self.retry = 0.0
        self.retry_at = 0.0
        self.written = 0

    def look(self) -> bool:
        """Find the live feeds (new ones mapped, those of processes gone let go); whether a
        file of a process that is gone waits to be recovered."""
        try:
            names = set(os.listdir(self.folder))
        except OSError:  # the folder is gone (the log deleted): nothing to do
            names = set()
        dead = False
        for name in list(self.feeds):
            feed = self.feeds[name]
            if name in names and _held(feed.fd):
                continue
            del self.feeds[name]  # gone, or its owner is (recovered below, from its offset)
            feed.close()
            dead = dead or name in names
        for name in names:
            if name in self.feeds or not name.endswith((".spool", ".tmp")):
                continue
            try:
                fd = os.open(self.folder / name, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue
            keep = False
            try:
                if not _held(fd):
                    dead = True
                elif name.endswith(".spool") and os.pread(fd, len(FEED_MAGIC), 0) == FEED_MAGIC:
                    size = os.fstat(fd).st_size
                    mapped = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                    self.feeds[name] = _Feed(fd, mapped, name.split("-")[0])
                    keep = True
            except (OSError, ValueError):
                pass
            finally:
                if not keep:
                    os.close(fd)
        return dead

    def step(self, woken: bool) -> int:
        """One look and what it found written; the calls written."""
        dead = self.look()
        if not woken and time.monotonic() < self.retry_at:
            return 0
        done = 0
        try:
            if not self.opened:
                self.backend.open()
                self.opened = True
            if dead:
                done += sum(recover(self.db, self.backend))
            rows: list[tuple[object, ...]] = []
            read: list[tuple[_Feed, int, int]] = []
            for feed in list(self.feeds.values()):
                skip = feed.stuck is not None and feed.stuck[2] >= STUCK_LOOKS
                generation, end, records = read_feed(feed.map, skip=skip)
                if not records:
                    self._stuck(feed, generation, end)
                    continue
                feed.stuck = None
                built, lost = spooled_rows(self.db, records, feed.pid, note=False)
                if lost:
                    report_fault("record", f"{lost} spooled calls could not be made rows", dropped=lost)
                rows.extend(built)
                read.append((feed, generation, end))
                done += len(records)
            for start_at in range(0, len(rows), RECOVER_BATCH):
                result = self.backend.write(rows[start_at : start_at + RECOVER_BATCH])
                self.written += result.written
                if result.refused:
                    _, why = result.refused[0]
                    report_fault(
                        "refused",
                        f"{self.backend.location} refused {len(result.refused)} call(s) ({why})",
                        count=len(result.refused),
                        dropped=len(result.refused),
                    )
            if self.backend.behind and (woken or self.backend.due()):
                self.backend.catch_up()  # a flush: the search index and rollups too
            for feed, generation, end in read:
                publish_written(feed.map, generation, end)
        except LogUnavailable as exc:
            self.retry = min(RETRY_MAX, max(RETRY_MIN, self.retry * 2))
            self.retry_at = time.monotonic() + self.retry
            self.failing = True
            report_fault("database", f"{exc}; the calls wait in the spool until it can be written", exc)
            with contextlib.suppress(OSError):
                temporary = self.folder / (STATUS + ".tmp")
                temporary.write_text(str(exc), encoding="utf-8")
                os.replace(temporary, self.folder / STATUS)
            return 0
        if self.failing:
            self.failing = False
            self.retry = 0.0
            with contextlib.suppress(OSError):
                (self.folder / STATUS).unlink()
        return done

    def _stuck(self, feed: _Feed, generation: int, end: int) -> None:
        """Nothing read: note a record that does not read back whole (its owner is still
        writing it, as this CPU sees it), so that one that never does is skipped in the end."""
        if not any(feed.map[end : end + 8]):  # the end of its records: nothing stuck
            feed.stuck = None
            return
        if feed.stuck is not None and feed.stuck[:2] == (generation, end):
            feed.stuck = (generation, end, feed.stuck[2] + 1)
        else:
            feed.stuck = (generation, end, 1)

    def run(self, wake_fd: int) -> None:
        interval = POLL_MIN
        quiet_since = time.monotonic()
        woken = True
        while True:
            try:
                done = self.step(woken)
            except Exception as exc:  # a bug in httptrack: keep running
                report_fault("writer", "the writer process hit an unexpected error", exc)
                done = 0
            now = time.monotonic()
            interval = POLL_MIN if done else min(POLL_MAX, interval * 1.5)
            if self.feeds or self.failing or done:
                quiet_since = now
            elif now - quiet_since >= IDLE_EXIT:
                return
            woken = _wait(wake_fd, interval)

    def close(self) -> None:
        for feed in self.feeds.values():
            feed.close()
        self.feeds.clear()
        if self.opened:
            with contextlib.suppress(LogUnavailable):
                if self.backend.behind:
                    self.backend.catch_up()
                self.backend.checkpoint()
        self.backend.close()


def _held(fd: int) -> bool:
    """Whether another process holds the lock of the file open at ``fd``."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)  # (never kept: a recoverer takes it exclusively)
    return False


def _wait(fd: int, timeout: float) -> bool:
    """Sleep up to ``timeout`` seconds; whether a ``flush()`` woke us."""
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    except InterruptedError:  # pragma: no cover - retried by Python since 3.5
        return False
    if not ready:
        return False
    with contextlib.suppress(OSError):
        while os.read(fd, 4096):
            pass
    return True


def main() -> int:
    text = os.environ.get(TARGET_ENV) or (sys.argv[1] if len(sys.argv) > 1 else "")
    if not text:
        print(f"usage: {TARGET_ENV}=<log> python -m httptrack.record._daemon", file=sys.stderr)
        return 2
    db = log_target(text)
    folder = spool_folder(db)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another writer process has this log
    os.ftruncate(lock, 0)
    os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)
    path = folder / WAKE
    with contextlib.suppress(FileExistsError):
        os.mkfifo(path, 0o600)
    # Read and write: the FIFO never reads as ended between two writers.
    wake_fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    daemon = _Daemon(db, folder)
    try:
        daemon.run(wake_fd)
    finally:
        daemon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
