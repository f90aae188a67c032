"""Indexes a migration adds to a big log, built later, when the writer is idle.

``CREATE INDEX`` reads the whole table, in one statement, holding the write lock: m004's
three indexes took 18 s on a log of a million calls (4.4 GB) already in the page cache,
longer read from disk, during which the app's calls wait in the writer's queue and every
other process's writer waits for the lock. So a
migration that adds indexes (:func:`add_indexes`) builds them at once only on a small log;
on a big one it records each statement as pending, in ``httptrack_state``, and the
migration ends in a moment. The pending statements are run later (:func:`build_pending`):

- by the writer, once it has been idle for a while (``record/_writer``); a call that comes
  meanwhile is not kept waiting: the statement is interrupted (rolled back, the index as it
  was) within about ``YIELD_SECONDS``, and tried again at the next idle stretch;
- by ``httptrack migrate``, all of them, whatever else is going on.

Until then readers work without the new indexes (the pages that sort by them are slower).
Statements run in the order they were recorded, each in a transaction of its own, and a
statement another process ran already is not run again (they are all ``IF [NOT] EXISTS``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from ._rollup import STATE_TABLE

__all__ = [
    "BUILD_NOW_BYTES",
    "PENDING_PREFIX",
    "YIELD_SECONDS",
    "add_indexes",
    "build_pending",
    "pending",
    "yield_to",
]

#: A log whose database file is at most this big gets a migration's indexes at once (a
#: table scan of a few tenths of a second per index); a bigger one, later.
BUILD_NOW_BYTES = 64 * 1024 * 1024
#: ``httptrack_state`` keys of the statements waiting to be run (the rest of the key: the
#: index's name, or ``drop <name>``).
PENDING_PREFIX = "pending_index:"
#: How long a call waits at most for an index being built when the writer was idle: the
#: build is then interrupted (looked at every ``_POLL_SECONDS``).
YIELD_SECONDS = 0.5
_POLL_SECONDS = 0.05


def _database_bytes(conn: sqlite3.Connection) -> int:
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (size,) = conn.execute("PRAGMA page_size").fetchone()
    return int(pages) * int(size)


def add_indexes(
    conn: sqlite3.Connection, table: str, indexes: Mapping[str, str], *, drop: Sequence[str] = ()
) -> bool:
    """In a migration: ``indexes`` (name -> columns) on ``table``, then the indexes they
    replace (``drop``) dropped; at once on a small log, else recorded as pending (see the
    module's doc). ``True`` when they were built at once."""
    statements = [
        (name, f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")
        for name, columns in indexes.items()
    ] + [(f"drop {name}", f"DROP INDEX IF EXISTS {name}") for name in drop]
    if _database_bytes(conn) <= BUILD_NOW_BYTES:
        for _, sql in statements:
            conn.execute(sql)
        return True
    conn.execute(f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (key TEXT PRIMARY KEY, value)")
    conn.executemany(
        f"INSERT OR REPLACE INTO {STATE_TABLE} (key, value) VALUES (?, ?)",
        [(PENDING_PREFIX + key, sql) for key, sql in statements],
    )
    return False


def pending(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(key, statement) of what waits to be run, in the order it was recorded."""
    try:
        rows = conn.execute(
            f"SELECT key, value FROM {STATE_TABLE} WHERE key >= ? AND key < ? ORDER BY rowid",
            [PENDING_PREFIX, PENDING_PREFIX[:-1] + chr(ord(PENDING_PREFIX[-1]) + 1)],
        ).fetchall()
    except sqlite3.OperationalError:  # no state table: a log older than the rollups
        return []
    return [(str(key), str(sql)) for key, sql in rows]


def build_pending(conn: sqlite3.Connection, stop: Callable[[], bool] | None = None) -> bool:
    """Run the pending statements, each in a write transaction of its own. ``stop``: asked
    every ``_POLL_SECONDS`` while a statement runs; when it says so, the statement is
    interrupted and rolled back, and this returns ``False`` (what was built before stays).
    ``True`` when nothing is left. Raises ``sqlite3.Error`` for anything else (locked, say)."""
    for key, _ in pending(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(f"SELECT value FROM {STATE_TABLE} WHERE key = ?", [key]).fetchone()
            if row is not None:  # (else another process ran it)
                with _interrupted_when(conn, stop):
                    conn.execute(str(row[0]))
                conn.execute(f"DELETE FROM {STATE_TABLE} WHERE key = ?", [key])
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and stop is not None and "interrupted" in str(exc):
                return False
            raise
    return True


@contextmanager
def _interrupted_when(conn: sqlite3.Connection, stop: Callable[[], bool] | None) -> Iterator[None]:
    """The statement run inside is interrupted (``sqlite3.OperationalError: interrupted``)
    once ``stop()`` says so, asked every ``_POLL_SECONDS`` by a thread of its own. Not by
    SQLite's progress handler: calling back into Python every few thousand steps of the
    statement took the GIL from the app's thread as often (a call made meanwhile took
    0.7 s instead of a millisecond), while SQLite itself runs without it."""
    if stop is None:
        yield
        return
    lock = threading.Lock()
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(_POLL_SECONDS):
            with lock:  # not once the statement is over: it would interrupt the next one
                if finished.is_set():
                    return
                if stop():
                    conn.interrupt()
                    return

    watcher = threading.Thread(target=watch, name="httptrack-index-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        with lock:
            finished.set()
        watcher.join()


def yield_to(waiting: Callable[[], bool], seconds: float = YIELD_SECONDS) -> Callable[[], bool]:
    """A ``stop`` for :func:`build_pending`: true once ``waiting()`` has been true for
    ``seconds`` without a break."""
    since: list[float] = []

    def stop() -> bool:
        if not waiting():
            since.clear()
            return False
        now = time.monotonic()
        if not since:
            since.append(now)
        return now - since[0] >= seconds

    return stop
