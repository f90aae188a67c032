"""The call log in SQLite: connections, the schema's migrations, and :class:`Store`, the
``LogBackend`` (see ``_backend``) the background writer (``record/_writer``) writes through.

Many threads and processes share one database: WAL journal, a busy timeout, one
``BEGIN IMMEDIATE`` transaction per batch. Rows are inserted idempotently (a row whose id
is there already is a duplicate, not an error: the spool may be read twice), and a row the
table refuses (a NOT NULL or CHECK constraint a newer schema added, a trigger) is refused
alone, reported with its reason, never silently ignored (no ``INSERT OR IGNORE``).
"""

from __future__ import annotations

import math
import operator
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain, compress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import LogUnavailable
from .._faults import FaultKind, report_fault
from . import _indexes, _views
from ._backend import WriteResult
from ._bodies import Compressor, register_functions
from ._retention import SizeDebt
from ._schema import COLUMN_NAMES, COLUMNS

if TYPE_CHECKING:
    from .._settings import Retention

__all__ = [
    "BUSY_TIMEOUT_MS",
    "SCHEMA_VERSION",
    "Store",
    "add_missing_columns",
    "connect",
    "is_current",
    "migrate",
    "write_transaction",
]

#: Bumped with every migration; ``PRAGMA user_version`` holds the version a database is at,
#: so opening an up-to-date database costs one pragma instead of the migration machinery.
SCHEMA_VERSION = 6
BUSY_TIMEOUT_MS = 5000
#: The search index and the daily rollup are brought up to date at least this often
#: (seconds), or after this many rows, and at every flush(). The search index is fed in
#: bulk: each update writes a segment that FTS5 later merges with the others, a cost that
#: grows with the index; on a log of a million calls, updates of 2,000 rows cost the
#: writer ~80 µs per row less than updates of 200 (benchmarks/bench_retention.py).
DERIVE_SECONDS = 1.0
DERIVE_ROWS = 2000
#: Retention (HTTPTRACK_RETENTION) is checked after a write at most this often when the log
#: is within its policy, and every RETAIN_BUSY_SECONDS (or more: a fifth of the writer's
#: time at most) while it has calls to prune.
RETAIN_IDLE_SECONDS = 60.0
#: The write-ahead log is folded back and restarted once it holds this much, as soon as no
#: reader needs its older pages (see Store._bound_wal), and then kept to this size on disk.
WAL_LIMIT_BYTES = 16 * 1024 * 1024
#: How long a restart waits for the readers of older snapshots (the writer holds the write
#: lock meanwhile: other writers wait, the app's calls do not), and how often it is tried.
WAL_RESTART_WAIT_MS = 200
#: While readers keep it from finishing (each holding its snapshot longer than the wait: a
#: UI page, a CLI command), the wait doubles at each try up to this; only then are tries
#: spaced out. (Readers of 0.3-0.5 s back to back let the WAL grow to 600 MB on a 1M-call
#: log while the tries waited 200 ms and were spaced out to every 30 s.)
WAL_RESTART_MAX_WAIT_MS = 2000
WAL_CHECK_SECONDS = 0.5
RETAIN_BUSY_SECONDS = 0.25
#: The writer's page cache: SQLite's default (2 MB) for a log of up to 128 MB, then 1/64th
#: of the file's size, up to this (KiB). On a big log every index that takes rows at random
#: places (cost, latency, tokens, session, user) needs a leaf page per row, and 2 MB no longer
#: holds even the B-trees' inner pages: each insert read pages back from the OS (1M calls:
#: ~120 KB read per row written with 2 MB, ~42 KB with 64 MB; bench_log.py --writer-growth).
#: Small logs keep the small cache: the app's memory stays flat.
WRITER_CACHE_MAX_KIB = 64 * 1024
_NONES = (None,) * len(COLUMN_NAMES)
#: Rows per INSERT statement, at most. SQLite works on a statement with the GIL released,
#: and every release is a chance for another thread to take the GIL, after which this one
#: waits for it (up to the 5 ms switch interval while the app's thread is busy): one
#: statement per row (``executemany``) made a busy app and the writer hand the GIL back and
#: forth for every row, costing both more than the insert itself.
ROWS_PER_INSERT = 64
#: INSERT statements by the columns their rows have values for and how many rows they take.
_inserts: dict[tuple[tuple[bool, ...], int], str] = {}


def _insert_sql(present: tuple[bool, ...], count: int) -> str:
    sql = _inserts.get((present, count))
    if sql is None:
        names = list(compress(COLUMN_NAMES, present))
        values = ", ".join([f"({', '.join('?' * len(names))})"] * count)
        sql = f"INSERT INTO calls ({', '.join(names)}) VALUES {values} ON CONFLICT (id) DO NOTHING"
        if len(_inserts) >= 1024:  # never in practice: a handful of shapes recur
            _inserts.clear()
        _inserts[(present, count)] = sql
    return sql


#: What a statement raises for a reason in its rows' values, not the database's state: the
#: rows are then tried one by one, and only the ones that fail alone are refused.
_ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError, OverflowError, ValueError)


def _insert(
    conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]], max_variables: int = 999
) -> WriteResult:
    """Insert ``rows`` (values in ``COLUMN_NAMES`` order), in order, many per statement.

    NULLs are left out of the statement instead of bound: binding ``None`` makes Python's
    sqlite3 look for an adapter (a failed attribute lookup, an exception raised and
    cleared) and cost ~10x a bound value; a row has a dozen or more of them. Rows in a
    batch mostly lack the same columns: each run of rows of one shape goes in as
    statements of :data:`ROWS_PER_INSERT` rows (then halves, for the rest: a few statement
    texts serve every batch, and stay in the connection's statement cache)."""
    present_of = operator.is_not
    run: list[tuple[Any, ...]] = []
    first = 0
    shape: tuple[bool, ...] | None = None
    result = WriteResult(0, 0, [])
    for index, row in enumerate(rows):
        present = tuple(map(present_of, row, _NONES))
        if present != shape:
            if run:
                result = _insert_run(conn, shape, run, first, max_variables, result)  # type: ignore[arg-type]
            shape, run, first = present, [], index
        run.append(tuple(compress(row, present)))
    if run:
        result = _insert_run(conn, shape, run, first, max_variables, result)  # type: ignore[arg-type]
    return result


def _insert_run(
    conn: sqlite3.Connection,
    shape: tuple[bool, ...],
    run: list[tuple[Any, ...]],
    first: int,
    max_variables: int,
    result: WriteResult,
) -> WriteResult:
    most = max(1, min(ROWS_PER_INSERT, max_variables // len(run[0])))
    done = 0
    written, duplicates, refused = result
    while done < len(run):
        left = len(run) - done
        count = most if left >= most else 1 << (left.bit_length() - 1)
        values = run[done : done + count]
        bad = 0
        try:
            inserted = conn.execute(_insert_sql(shape, count), list(chain.from_iterable(values))).rowcount
        except _ROW_ERRORS:
            # The statement changed nothing (SQLite undoes a failed statement, the
            # transaction goes on): find the row(s) to blame, one at a time.
            inserted = 0
            for offset, one in enumerate(values):
                try:
                    inserted += conn.execute(_insert_sql(shape, 1), one).rowcount
                except _ROW_ERRORS as exc:
                    bad += 1
                    refused.append((first + done + offset, f"{type(exc).__name__}: {exc}"))
        written += inserted
        duplicates += count - bad - inserted
        done += count
    return WriteResult(written, duplicates, refused)


def _unavailable(exc: BaseException, what: str) -> LogUnavailable:
    error = LogUnavailable(f"{what}: {exc}")
    error.__cause__ = exc
    return error


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` around the block, rolled back if it raises
    (anything: an interrupt must not leave the write lock held)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _create_private_file(path: Path) -> None:
    """Create the database file (and folder) readable by its owner only: it holds prompts."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection set up the way httptrack uses SQLite (WAL, busy timeout, autocommit so
    transactions are explicit)."""
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro",
            uri=True,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
    else:
        _create_private_file(path)
        conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    register_functions(conn)  # httptrack_body(): compressed bodies read as text (see _bodies)
    return conn


# -- schema ---------------------------------------------------------------------------------


def _migrations() -> Any:
    from sqlite_utils import Migrations

    migrations = Migrations("httptrack")

    @migrations(name="m001_create_calls")
    def m001_create_calls(db: Any) -> None:
        # Later migrations add columns only if missing, so a database created by any version
        # ends up with the same table.
        columns = ",\n  ".join(f'"{name}" {sqltype}' for name, sqltype, _ in COLUMNS)
        db.execute(f"CREATE TABLE IF NOT EXISTS calls (\n  {columns},\n  PRIMARY KEY (id)\n)")
        add_missing_columns(db)
        for index, cols in _INDEXES.items():
            db.execute(f"CREATE INDEX IF NOT EXISTS {index} ON calls ({cols})")

    @migrations(name="m002_call_log_views")
    def m002_call_log_views(db: Any) -> None:
        # Daily rollups, full-text search, reporting views and the indexes behind
        # `httptrack stats` and datasette's facets: see _rollup and _views. Existing rows
        # are rolled up and indexed here, once.
        from . import _rollup

        for index, cols in _views.INDEXES.items():
            db.execute(f"CREATE INDEX IF NOT EXISTS {index} ON calls ({cols})")
        _rollup.create_rollups(db.conn)
        _views.create_views(db.conn)
        _views.create_search_index(db.conn)

    @migrations(name="m003_detail_rollup")
    def m003_detail_rollup(db: Any) -> None:
        # Sums per day and combination of provider, model, operation, status and cached,
        # so that `stats --provider openai --by model` or `stats --cached` need not read
        # the calls (see _rollup). Existing rows are rolled up here, once.
        from . import _rollup

        _rollup.create_detail_rollups(db.conn)

    @migrations(name="m004_read_indexes")
    def m004_read_indexes(db: Any) -> None:
        # The indexes the calls pages sort and page by, and those they replace (_schema).
        # On a big log they are built later, when the writer is idle (_indexes): building
        # them here held the write lock for minutes.
        from . import _schema

        _indexes.add_indexes(db.conn, "calls", _schema.READ_INDEXES, drop=_schema.DROPPED_INDEXES)

    @migrations(name="m005_combo_rollup")
    def m005_combo_rollup(db: Any) -> None:
        # Sums per day and combination of user, service and the detail dimensions (see
        # _rollup). On a log with calls already, only a first step of them is rolled up
        # here: the writer does the rest a step at a time, never holding the write lock
        # for long; readers use the table once it has nearly caught up.
        from . import _rollup

        _rollup.create_combo_rollup(db.conn)

    @migrations(name="m006_fewer_write_indexes")
    def m006_fewer_write_indexes(db: Any) -> None:
        # Two indexes other indexes answer for (_schema.WRITE_DROPPED_INDEXES): the writer
        # stops paying for them. On a big log the drops wait for the writer's idle time
        # too (_indexes): dropping frees every page of the index, in one transaction.
        from . import _schema

        _indexes.add_indexes(db.conn, "calls", {}, drop=_schema.WRITE_DROPPED_INDEXES)

    return migrations


#: Indexes for the questions people ask of the log: recent calls, per provider/model/user/
#: service over time, errors, cache hits.
_INDEXES = {
    "idx_calls_started_at": "started_at",  # (dropped by m006: idx_calls_usage starts with it)
    "idx_calls_provider": "provider, started_at",
    "idx_calls_model": "model, started_at",
    "idx_calls_user": "user, started_at",
    "idx_calls_service": "service, started_at",
    "idx_calls_status": "status, started_at",
    "idx_calls_session": "session",
}


def add_missing_columns(db: Any) -> None:
    """Add any column of ``_schema.COLUMNS`` the ``calls`` table lacks (a table made by an
    earlier version). Adding a column keeps every row; it reads NULL there."""
    present = {row[1] for row in db.execute("PRAGMA table_info(calls)").fetchall()}
    for name, sqltype, _ in COLUMNS:
        if name not in present:
            db.execute(f'ALTER TABLE calls ADD COLUMN "{name}" {sqltype}')


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a database to the current schema, in place, losing nothing. Safe against
    several processes doing it at once (the first takes the write lock, the rest find the
    work done)."""
    if is_current(conn):
        return
    from sqlite_utils import Database

    with write_transaction(conn):
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version < SCHEMA_VERSION:
            _migrations().apply(Database(conn))
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        # Also when the version is current: a column added to _schema.COLUMNS is added
        # here even if no migration names it, so inserts never meet a table without it.
        add_missing_columns(conn)


def is_current(conn: sqlite3.Connection) -> bool:
    """The database is at this version's schema: its version, and every column there."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version < SCHEMA_VERSION:
        return False
    present = {row[1] for row in conn.execute("PRAGMA table_info(calls)")}
    return all(name in present for name, _, _ in COLUMNS)


def writer_cache_kib(path: Path) -> int:
    """The writer's page cache for the log at ``path`` (KiB), or 0 for SQLite's default."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return 0
    kib = min(WRITER_CACHE_MAX_KIB, size // 64 // 1024)
    return kib if kib > 2048 else 0


class Store:
    """One database file, as the writer thread sees it: the SQLite ``LogBackend``."""

    def __init__(
        self, path: Path, pause: Callable[[], None] | None = None, retention: Retention | None = None
    ) -> None:
        self.path = path
        self.location = str(path)
        #: Called now and then during long stretches of Python work (see Writer._pause).
        self.pause = pause
        self._conn: sqlite3.Connection | None = None
        self._max_variables = 999
        self._searchable = False
        self._rolled_up = False
        #: Rows written since the search index and the rollup were last brought up to date.
        self.behind = 0
        self._derived_at = -math.inf  # the first write indexes at once (monotonic() may be small)
        self._compressor = Compressor()
        #: HTTPTRACK_RETENTION, applied a step at a time after writes (see _retention).
        self.retention = retention
        self._retain_at = -math.inf
        self._size_debt = SizeDebt()
        self._wal_checked_at = -math.inf
        self._wal_backoff = WAL_CHECK_SECONDS
        #: A migration left indexes to build when the writer is idle (``_indexes``).
        self.indexes_pending = False
        self._wal_wait_ms = WAL_RESTART_WAIT_MS

    def open(self) -> None:
        if self._conn is not None:
            return
        try:
            conn = connect(self.path)
        except (sqlite3.Error, OSError) as exc:
            raise _unavailable(exc, f"could not open {self.path}") from exc
        try:
            conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            cache_kib = writer_cache_kib(self.path)
            if cache_kib:
                conn.execute(f"PRAGMA cache_size=-{cache_kib}")
            migrate(conn)
            self._max_variables = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            self._searchable = _views.search_index_exists(conn)
            self._rolled_up = _views.rollups_exist(conn)
            self.indexes_pending = bool(_indexes.pending(conn))
            if self._rolled_up and self._combo_lags(conn):
                self.behind = max(self.behind, 1)
        except (sqlite3.Error, OSError) as exc:
            conn.close()
            raise _unavailable(exc, f"could not open {self.path}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def write(self, rows: Sequence[tuple[Any, ...]]) -> WriteResult:
        self.open()
        conn = self._conn
        assert conn is not None
        rows = self._compressor.rows(rows)  # long bodies as zstd frames (see _bodies)
        try:
            with write_transaction(conn):
                result = _insert(conn, rows, self._max_variables)
                self.behind += result.written
                if self.due():
                    self._derive(conn)
        except sqlite3.Error as exc:
            # Locked past the busy timeout, disk full, read-only, damaged: nothing was
            # written. The connection is closed (reopened next time: the file may be
            # replaced or repaired meanwhile).
            self.close()
            raise _unavailable(exc, f"could not write to {self.path}") from exc
        if self.retention is not None and time.monotonic() >= self._retain_at:
            self._retain(conn, self.retention)
        if time.monotonic() - self._wal_checked_at >= WAL_CHECK_SECONDS:
            self._bound_wal(conn)
        return result

    def _bound_wal(self, conn: sqlite3.Connection) -> None:
        """Keep the write-ahead log from growing while readers come and go.

        SQLite checkpoints the WAL into the database as it goes (every 1000 pages), but it
        starts writing it from the beginning again only at a moment when no reader is
        using it: with the UI and the CLI reading all the time, such a moment may never
        come, and the WAL grew to hundreds of MB. A ``RESTART`` checkpoint makes one: it
        copies every page back, then waits (briefly) for the readers of older snapshots to
        finish; readers starting meanwhile read the database file alone. The next write
        then starts the WAL again, cut to ``journal_size_limit``. A reader holding one
        snapshot for long still keeps what was written since (SQLite must), until it lets go."""
        self._wal_checked_at = time.monotonic()
        try:
            size = os.stat(f"{self.path}-wal").st_size
        except OSError:
            return
        if size <= WAL_LIMIT_BYTES:
            return
        busy = 1
        try:
            conn.execute(f"PRAGMA busy_timeout={self._wal_wait_ms}")
            try:
                ((busy, _, _),) = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            finally:
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except sqlite3.Error:
            pass
        # Busy: a reader still holds an old snapshot. Wait for readers longer at the next
        # try, up to WAL_RESTART_MAX_WAIT_MS (the writer thread sleeps meanwhile; other
        # writers wait for the write lock); past that (a long query, an export), waiting at
        # every check would cost the writers that much each time: wait longer between
        # tries instead, up to half a minute.
        if not busy:
            self._wal_wait_ms, self._wal_backoff = WAL_RESTART_WAIT_MS, WAL_CHECK_SECONDS
        elif self._wal_wait_ms < WAL_RESTART_MAX_WAIT_MS:
            self._wal_wait_ms = min(self._wal_wait_ms * 2, WAL_RESTART_MAX_WAIT_MS)
        else:
            self._wal_backoff = min(self._wal_backoff * 2, 30.0)
        self._wal_checked_at += self._wal_backoff - WAL_CHECK_SECONDS

    def _retain(self, conn: sqlite3.Connection, policy: Retention) -> None:
        """One step of the retention policy, in a short transaction of its own after a
        batch (a few hundred calls at most): soon again while there is more to do, at
        most a fifth of the writer's time; else in RETAIN_IDLE_SECONDS."""
        from ._retention import retention_step

        started = time.monotonic()
        try:
            with write_transaction(conn):
                done = retention_step(conn, policy, debt=self._size_debt)
        except sqlite3.Error as exc:  # locked, say: the calls are written; try again later
            done = 0
            report_fault("database", f"could not apply HTTPTRACK_RETENTION to {self.path}", exc)
        now = time.monotonic()
        self._retain_at = now + (
            max(RETAIN_BUSY_SECONDS, 4 * (now - started)) if done else RETAIN_IDLE_SECONDS
        )

    def due(self) -> bool:
        # Indexing costs about a millisecond per transaction however few rows it covers:
        # under a steady stream of calls it is done every DERIVE_SECONDS or DERIVE_ROWS,
        # not for each small batch. (Readers add rows past the rollup's bookmark
        # themselves; a call is searchable within DERIVE_SECONDS, or at flush().)
        return self.behind > 0 and (
            self.behind >= DERIVE_ROWS or time.monotonic() - self._derived_at >= DERIVE_SECONDS
        )

    def catch_up(self) -> None:
        """Index what is behind now, in a transaction of its own (flush, idle writer)."""
        conn = self._conn
        if conn is None or not self.behind:
            return
        try:
            with write_transaction(conn):
                self._derive(conn)
        except sqlite3.Error as exc:  # locked: the next write or flush tries again
            raise _unavailable(exc, f"could not index new calls in {self.path}") from exc

    def checkpoint(self) -> None:
        """Copy the WAL into the database file and empty it, if no other connection is
        using the database (never waits for one: the busy timeout is 0 meanwhile). Closing
        the last connection does the same in SQLite; this also covers a process that keeps
        its connection open."""
        conn = self._conn
        if conn is None:
            return
        try:
            conn.execute("PRAGMA busy_timeout=0")
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except sqlite3.Error:
            pass  # another process is at work: the last one to leave checkpoints

    def _derive(self, conn: sqlite3.Connection) -> None:
        """Bring the search index and the daily rollups up to date, in the current
        transaction (see _views, _rollup); a failure here must never cost the rows."""
        self.behind = 0
        self._derived_at = time.monotonic()
        name: FaultKind
        for wanted, name, update in (
            (self._searchable, "search_index", _views.index_new_rows),
            (self._rolled_up, "rollup", self._roll_up),
        ):
            if not wanted:
                continue
            conn.execute(f"SAVEPOINT {name}")
            try:
                update(conn)
            except sqlite3.Error as exc:
                conn.execute(f"ROLLBACK TO {name}")
                what = name.replace("_", " ")
                report_fault(name, f"could not update the {what} (the calls are recorded)", exc)
            conn.execute(f"RELEASE {name}")

    def build_indexes(self, stop: Callable[[], bool]) -> bool:
        """Build the indexes a migration left for later (``_indexes``), giving way (the
        build interrupted and rolled back) as soon as ``stop()`` says so. ``True`` when
        none is left."""
        self.open()
        conn = self._conn
        assert conn is not None
        try:
            done = _indexes.build_pending(conn, stop)
        except sqlite3.Error as exc:  # locked by another process, say: tried again later
            raise _unavailable(exc, f"could not build the new indexes of {self.path}") from exc
        self.indexes_pending = not done
        return done

    def _roll_up(self, conn: sqlite3.Connection) -> None:
        from . import _rollup

        _rollup.roll_up_new_rows(conn, self.pause, step=_rollup.COMBO_STEP)
        if self._combo_lags(conn):
            self.behind = max(self.behind, 1)

    @staticmethod
    def _combo_lags(conn: sqlite3.Connection) -> bool:
        """``calls_rollup_combo`` is still catching up with calls written before it existed
        (m005): the store says it is behind, so that the writer takes a step at each derive
        (every DERIVE_SECONDS at least, also while no calls come)."""
        from . import _rollup

        return _rollup.combo_rollup_exists(conn) and _rollup.combo_lag(conn) > 0

    def forget(self) -> None:
        """Drop the connection without closing it (after fork: it belongs to the parent)."""
        self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
