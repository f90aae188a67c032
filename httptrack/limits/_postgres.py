"""The limit counters in Postgres, beside a Postgres call log: one budget for every process
on every machine that shares the log.

The same tables, steps and rules as ``_sqlite`` (this class *is* ``SqliteCounters``'s
logic, run on a Postgres connection): each step (reserve, refuse, reconcile) is one
transaction that first takes a transaction-scoped advisory lock, so its read-check-write
is atomic across every connection to the database, exactly as SQLite's ``BEGIN
IMMEDIATE`` makes it across processes. (A lock per counter row, ``SELECT … FOR UPDATE``,
would let unrelated scopes proceed in parallel, but a call charges several counters at
once and a reservation reads the reservations' sum too: one lock, held for the few
statements of one step, is simpler and cannot deadlock.)

A server that is down makes the step raise: the engine reports the fault and the call
goes ahead unlimited (a tracking fault never breaks the app's call). Error texts never
carry the URL's password.
"""

from __future__ import annotations

import atexit
import contextlib
import re
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..log._url import DatabaseURL
from ._counters import CounterState, Event
from ._sqlite import LOCK_TIMEOUT, RESERVATION_TTL, SqliteCounters, read_events, read_usage

if TYPE_CHECKING:
    import psycopg

__all__ = ["LIMITS_LOCK", "PG_SCHEMA", "RETRY_SECONDS", "PostgresCounters"]

#: After a failed connection, steps fail at once (the call unlimited) for this long.
RETRY_SECONDS = 5.0
#: The advisory lock every step takes (a constant of httptrack's own).
LIMITS_LOCK = 0x6874_7472_6163_6B02

PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS limit_defs (
  limit_name text PRIMARY KEY,
  meter text NOT NULL,
  metric text NOT NULL,
  amount double precision NOT NULL,
  per text NOT NULL,
  seconds double precision,
  action text NOT NULL,
  definition text NOT NULL,
  first_seen text NOT NULL,
  last_seen text NOT NULL
);
CREATE TABLE IF NOT EXISTS limit_counters (
  meter text NOT NULL,
  scope text NOT NULL,
  window_start double precision NOT NULL,
  window_end double precision NOT NULL,
  used double precision NOT NULL DEFAULT 0,
  calls bigint NOT NULL DEFAULT 0,
  updated_at double precision NOT NULL,
  PRIMARY KEY (meter, scope, window_start)
);
CREATE TABLE IF NOT EXISTS limit_reservations (
  call_id text NOT NULL,
  meter text NOT NULL,
  scope text NOT NULL,
  window_start double precision NOT NULL,
  amount double precision NOT NULL,
  expires_at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS limit_reservations_call ON limit_reservations (call_id);
CREATE INDEX IF NOT EXISTS limit_reservations_counter
  ON limit_reservations (meter, scope, window_start, expires_at, amount);
CREATE TABLE IF NOT EXISTS limit_events (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at text NOT NULL,
  kind text NOT NULL,
  limit_name text NOT NULL,
  scope text NOT NULL,
  window_start text,
  window_end text,
  used double precision,
  reserved double precision,
  amount double precision,
  fraction double precision,
  requested double precision,
  call_id text,
  message text,
  dedupe text UNIQUE
);
CREATE INDEX IF NOT EXISTS limit_events_at ON limit_events (at);
CREATE TABLE IF NOT EXISTS limit_meta (
  name text PRIMARY KEY,
  value text NOT NULL
)
"""

_NUMBERED = re.compile(r"\?(\d+)")
_TOTAL = re.compile(r"\btotal\(([^()]*)\)")
_translated: dict[str, tuple[str, tuple[int, ...] | None]] = {}


def translate(sql: str) -> tuple[str, tuple[int, ...] | None]:
    """``_sqlite``'s SQL in Postgres's dialect, and for ``?N`` parameters the order to pass
    them in. The statements are few and fixed: each is translated once."""
    done = _translated.get(sql)
    if done is not None:
        return done
    text = _TOTAL.sub(r"coalesce(sum(\1), 0)", sql)
    if "INSERT OR IGNORE" in text:
        text = text.replace("INSERT OR IGNORE", "INSERT").rstrip() + " ON CONFLICT DO NOTHING"
    text = text.replace("used = used +", "used = limit_counters.used +")
    text = text.replace("calls = calls +", "calls = limit_counters.calls +")
    order: tuple[int, ...] | None = None
    if _NUMBERED.search(text):
        order = tuple(int(n) - 1 for n in _NUMBERED.findall(text))
        text = _NUMBERED.sub("%s", text)
    text = text.replace("?", "%s")
    _translated[sql] = (text, order)
    return text, order


class _Connection:
    """A psycopg connection that takes ``_sqlite``'s statements as they are written."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        text, order = translate(sql)
        if order is not None:
            params = [params[i] for i in order]
        return self.conn.execute(text, list(params))


class PostgresCounters(SqliteCounters):
    """:class:`~httptrack.limits._counters.Counters` in a Postgres database (the log's)."""

    def __init__(
        self, url: DatabaseURL, *, reservation_ttl: float = RESERVATION_TTL, readonly: bool = False
    ) -> None:
        super().__init__(url.spool_folder(), reservation_ttl=reservation_ttl, readonly=readonly)
        self.url = url
        self._pg: psycopg.Connection[Any] | None = None
        self._down_until = 0.0
        _instances.add(self)

    def _pg_connection(self) -> psycopg.Connection[Any]:
        conn = self._pg
        if conn is None or conn.closed:
            from ..log._postgres import connect

            if time.monotonic() < self._down_until:
                # The server was unreachable a moment ago: the call goes ahead unlimited
                # at once, instead of each call waiting for a connection timeout.
                raise RuntimeError(f"{self.url} was unreachable less than {RETRY_SECONDS:g} s ago")
            try:
                conn = connect(self.url)
                # A step waits for the limits' lock at most as long as with SQLite: then the
                # call goes ahead unlimited, the fault reported; a session that holds the
                # lock and hangs does not hang every app's call.
                try:
                    conn.execute("SELECT set_config('lock_timeout', %s, false)", [f"{LOCK_TIMEOUT:g}s"])
                except BaseException:
                    conn.close()
                    raise
            except Exception:
                self._down_until = time.monotonic() + RETRY_SECONDS
                raise
            if not self.readonly:
                try:
                    with conn.transaction():
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", [LIMITS_LOCK])
                        for statement in PG_SCHEMA.split(";"):
                            if statement.strip():
                                conn.execute(statement)
                except BaseException:
                    conn.close()
                    raise
            self._pg = conn
        return conn

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        """psycopg's errors as plain ``RuntimeError``s without the password, and a broken
        connection dropped (the next step reconnects: the server may be back)."""
        import psycopg

        try:
            yield
        except psycopg.Error as exc:
            if self._pg is not None and (self._pg.closed or isinstance(exc, psycopg.OperationalError)):
                self._drop()
            raise RuntimeError(self.url.scrub(f"{self.url}: {type(exc).__name__}: {exc}")) from None

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._lock, self._guarded():
            conn = self._pg_connection()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [LIMITS_LOCK])
                yield _Connection(conn)

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        with self._lock, self._guarded():
            yield _Connection(self._pg_connection())

    def usage(self, now: float) -> list[CounterState]:
        import psycopg

        with self._reading() as conn:
            try:
                with conn.conn.transaction():
                    return read_usage(conn, now)
            except psycopg.errors.UndefinedTable:
                return []  # no limit was ever used with this database

    def events(self, limit: int = 100, kind: str | None = None) -> list[Event]:
        import psycopg

        with self._reading() as conn:
            try:
                with conn.conn.transaction():
                    return read_events(conn, limit, kind)
            except psycopg.errors.UndefinedTable:
                return []

    def _drop(self) -> None:
        conn, self._pg = self._pg, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _after_fork_in_child(self) -> None:
        from ..log._postgres import detach

        self._lock = threading.Lock()
        conn, self._pg = self._pg, None
        if conn is not None:
            detach(conn)  # the parent's session: let go of it without ending it


_instances: weakref.WeakSet[PostgresCounters] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Close the counters' connections at exit (a clean goodbye to the server)."""
    for counters in list(_instances):
        with contextlib.suppress(Exception):
            counters._drop()
