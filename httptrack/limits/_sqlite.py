"""The limit counters in SQLite, in the call log's own database file.

Every step is one ``BEGIN IMMEDIATE`` transaction: SQLite's write lock is taken before the
counters are read, so the read-check-write of a reservation is atomic across every thread
and process that shares the file (WAL journal; writers queue on the busy timeout). One
connection per process and database, behind a lock: threads of one process take turns
here instead of in SQLite's busy handler, which sleeps in coarse steps.

Tables (their own, beside ``calls``; created on first use, never altered by the log's
migrations):

``limit_defs``          each limit seen, by its text: what the CLI and the UI list
``limit_counters``      meter × scope × window: ``used`` and ``calls`` (requests as admitted;
                        usd and tokens as settled)
``limit_reservations``  one row per admitted call and counter, until it settles or expires
``limit_events``        every refused call (``blocked``) and every alert fired (``threshold``,
                        ``exhausted``); an alert's ``dedupe`` key is unique, which is what
                        makes it fire once per window and scope across processes
``limit_meta``          the salt of ``by="key"`` scopes
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._counters import (
    Alert,
    Charge,
    CounterState,
    Event,
    Hold,
    Refusal,
    Settlement,
    Verdict,
    iso,
)
from ._limit import Limit, window_bounds

__all__ = ["RESERVATION_TTL", "SCHEMA", "SqliteCounters", "read_events", "read_usage"]

#: Seconds a reservation holds without being settled. A call's reservation is settled
#: when its row is built (milliseconds after the response ends); one that is still there
#: after this long belongs to a process that was killed, or to a call that ran longer
#: (then it is settled all the same: only the hold on the budget lapsed).
RESERVATION_TTL = 1800.0
#: Expired reservations are deleted at most this often (seconds) per process.
_PURGE_EVERY = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS limit_defs (
  limit_name TEXT PRIMARY KEY,
  meter TEXT NOT NULL,
  metric TEXT NOT NULL,
  amount REAL NOT NULL,
  per TEXT NOT NULL,
  seconds REAL,
  action TEXT NOT NULL,
  definition TEXT NOT NULL,
  first_seen TEXT NOT NULL,
  last_seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS limit_counters (
  meter TEXT NOT NULL,
  scope TEXT NOT NULL,
  window_start REAL NOT NULL,
  window_end REAL NOT NULL,
  used REAL NOT NULL DEFAULT 0,
  calls INTEGER NOT NULL DEFAULT 0,
  updated_at REAL NOT NULL,
  PRIMARY KEY (meter, scope, window_start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS limit_reservations (
  call_id TEXT NOT NULL,
  meter TEXT NOT NULL,
  scope TEXT NOT NULL,
  window_start REAL NOT NULL,
  amount REAL NOT NULL,
  expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS limit_reservations_call ON limit_reservations (call_id);
CREATE INDEX IF NOT EXISTS limit_reservations_counter
  ON limit_reservations (meter, scope, window_start, expires_at, amount);
CREATE TABLE IF NOT EXISTS limit_events (
  id INTEGER PRIMARY KEY,
  at TEXT NOT NULL,
  kind TEXT NOT NULL,
  limit_name TEXT NOT NULL,
  scope TEXT NOT NULL,
  window_start TEXT,
  window_end TEXT,
  used REAL,
  reserved REAL,
  amount REAL,
  fraction REAL,
  requested REAL,
  call_id TEXT,
  message TEXT,
  dedupe TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS limit_events_at ON limit_events (at);
CREATE TABLE IF NOT EXISTS limit_meta (
  name TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
"""

_UPSERT_USED = """
INSERT INTO limit_counters (meter, scope, window_start, window_end, used, calls, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (meter, scope, window_start)
DO UPDATE SET used = used + excluded.used, calls = calls + excluded.calls, updated_at = excluded.updated_at
"""
_RESERVED = """
SELECT total(amount) FROM limit_reservations
WHERE meter = ? AND scope = ? AND window_start = ? AND expires_at > ?
"""
_USED = "SELECT used FROM limit_counters WHERE meter = ? AND scope = ? AND window_start = ?"
#: A counter's settled use and its live reservations, in one statement.
_STATE = """
SELECT
  (SELECT used FROM limit_counters WHERE meter = ?1 AND scope = ?2 AND window_start = ?3),
  (SELECT total(amount) FROM limit_reservations
   WHERE meter = ?1 AND scope = ?2 AND window_start = ?3 AND expires_at > ?4)
"""
_EVENT = """
INSERT OR IGNORE INTO limit_events
  (at, kind, limit_name, scope, window_start, window_end, used, reserved, amount, fraction,
   requested, call_id, message, dedupe)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

#: How long a step waits for the database's write lock before giving up (the call then
#: goes ahead unlimited, and the fault is reported), as the call log's own busy timeout.
LOCK_TIMEOUT = 5.0
#: The waits between attempts to take it: short first. SQLite's own busy handler sleeps
#: 1 ms, then 2, 5, 10 ...: a call that met the writer's transaction (a few hundred µs)
#: would wait a whole millisecond or more for it.
_FIRST_PAUSE = 0.00005
_LONGEST_PAUSE = 0.002

#: A sum of floats compared with a limit: within this (relative) margin it fits.
_EPSILON = 1e-9

#: Connections left behind in a forked child. Never closed there: closing a WAL connection
#: that the parent still uses can checkpoint and remove the parent's journal.
_abandoned: list[sqlite3.Connection] = []
_instances: weakref.WeakSet[SqliteCounters] = weakref.WeakSet()


def _begin(conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``: the write lock, taken before anything is read, so the step's
    read-check-write is atomic across threads and processes. Retried while another
    connection (the writer, another process) holds it, up to :data:`LOCK_TIMEOUT`."""
    pause = _FIRST_PAUSE
    deadline = 0.0
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            now = time.monotonic()
            if not deadline:
                deadline = now + LOCK_TIMEOUT
            elif now >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, _LONGEST_PAUSE)


def _over(total: float, limit: float) -> bool:
    return total > limit + _EPSILON * max(1.0, abs(limit))


def _scope_of(text: str) -> dict[str, str | None]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"scope": text}
    return value if isinstance(value, dict) else {"scope": text}


class SqliteCounters:
    """:class:`~httptrack.limits._counters.Counters` in a SQLite file (the call log's)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        reservation_ttl: float = RESERVATION_TTL,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.reservation_ttl = reservation_ttl
        self.readonly = readonly
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._salt: bytes | None = None
        self._registered: set[str] = set()
        self._next_purge = 0.0
        _instances.add(self)

    # -- connection and transactions -----------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            from ..log._sqlite import connect

            conn = connect(self.path, readonly=self.readonly)
            if not self.readonly:
                conn.execute("PRAGMA busy_timeout=0")  # waits are _begin's, finer than SQLite's
                try:
                    _begin(conn)
                    for statement in SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    conn.close()
                    raise
            self._conn = conn
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            _begin(conn)
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._connection()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        if self._conn is not None:
            _abandoned.append(self._conn)
            self._conn = None

    # -- the seam -------------------------------------------------------------------------

    def key_salt(self) -> bytes:
        salt = self._salt
        if salt is None:
            with self._transaction() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO limit_meta (name, value) VALUES ('key_salt', ?)",
                    (secrets.token_hex(32),),
                )
                (text,) = conn.execute("SELECT value FROM limit_meta WHERE name = 'key_salt'").fetchone()
            salt = self._salt = bytes.fromhex(text)
        return salt

    def register(self, limits: Sequence[Limit], now: float) -> None:
        # Once per process and limit: a transport made per request does not write each time.
        new = [limit for limit in limits if limit.key not in self._registered]
        if not new:
            return
        seen = iso(now)
        with self._transaction() as conn:
            for limit in new:
                conn.execute(
                    """
                    INSERT INTO limit_defs (limit_name, meter, metric, amount, per, seconds, action,
                      definition, first_seen, last_seen)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (limit_name) DO UPDATE SET last_seen = excluded.last_seen
                    """,
                    (
                        limit.key,
                        limit.meter,
                        limit.metric,
                        limit.amount,
                        str(limit.per),
                        limit.seconds,
                        limit.action,
                        json.dumps(limit.as_dict(), sort_keys=True),
                        seen,
                        seen,
                    ),
                )
        self._registered.update(limit.key for limit in new)

    def reserve(self, call_id: str, charges: Sequence[Charge], now: float) -> Verdict:
        groups: dict[tuple[str, str, float], list[Charge]] = {}
        for charge in charges:
            groups.setdefault((charge.limit.meter, charge.scope, charge.start), []).append(charge)
        with self._transaction() as conn:
            if now >= self._next_purge:
                conn.execute("DELETE FROM limit_reservations WHERE expires_at <= ?", (now,))
                self._next_purge = now + _PURGE_EVERY
            states: list[tuple[list[Charge], float, float, float]] = []
            refusals: list[Refusal] = []
            for (meter, scope, start), group in groups.items():
                used, reserved = conn.execute(_STATE, (meter, scope, start, now)).fetchone()
                used = used or 0.0
                amount = max(charge.amount for charge in group)
                for charge in group:
                    if charge.limit.blocks and _over(used + reserved + amount, charge.limit.amount):
                        refusals.append(Refusal(charge, used, reserved))
                states.append((group, used, reserved, amount))
            if refusals:
                return Verdict(False, refusals=tuple(refusals))
            holds: list[Hold] = []
            alerts: list[Alert] = []
            for group, used, reserved, amount in states:
                first = group[0]
                limit = first.limit
                limits = tuple(charge.limit for charge in group)
                if limit.metric == "requests":
                    conn.execute(
                        _UPSERT_USED, (limit.meter, first.scope, first.start, first.end, amount, 1, now)
                    )
                    alerts += self._crossings(
                        conn,
                        limits,
                        first.scope,
                        first.start,
                        first.end,
                        used,
                        used + amount,
                        reserved,
                        now,
                        call_id,
                    )
                    continue
                # Counted (used, calls) when settled; meanwhile held by a reservation.
                if amount > 0:
                    conn.execute(
                        "INSERT INTO limit_reservations VALUES (?, ?, ?, ?, ?, ?)",
                        (call_id, limit.meter, first.scope, first.start, amount, now + self.reservation_ttl),
                    )
                holds.append(
                    Hold(limit.meter, limit.metric, first.scope, first.start, first.end, amount, limits)
                )
        return Verdict(True, holds=tuple(holds), alerts=tuple(alerts))

    def refused(self, call_id: str, refusal: Refusal, now: float, message: str) -> tuple[Alert, ...]:
        charge = refusal.charge
        limit = charge.limit
        known = math.isfinite(refusal.used)  # NaN: refused before counting (a call it cannot price)
        with self._transaction() as conn:
            conn.execute(
                _EVENT,
                (
                    iso(now),
                    "blocked",
                    limit.key,
                    charge.scope,
                    iso(charge.start),
                    iso(charge.end),
                    refusal.used if known else None,
                    refusal.reserved if known else None,
                    limit.amount,
                    None,
                    charge.amount if math.isfinite(charge.amount) else None,
                    call_id,
                    message,
                    None,
                ),
            )
            if not limit.alert_at or not known:
                return ()
            alert = Alert(
                "exhausted",
                limit,
                _scope_of(charge.scope),
                refusal.used,
                refusal.reserved,
                None,
                charge.start,
                charge.end,
                now,
                call_id,
            )
            if self._claim(conn, alert, charge.scope):
                return (alert,)
        return ()

    def reconcile(self, settlements: Sequence[Settlement], now: float) -> tuple[Alert, ...]:
        alerts: list[Alert] = []
        if not settlements:
            return ()
        with self._transaction() as conn:
            for settlement in settlements:
                conn.execute("DELETE FROM limit_reservations WHERE call_id = ?", (settlement.call_id,))
                for hold in settlement.holds:
                    value = settlement.actual.get(hold.metric)
                    actual = float(value) if value is not None and math.isfinite(value) and value > 0 else 0.0
                    alerting = actual and any(limit.alert_at for limit in hold.limits)
                    used = 0.0
                    if alerting:
                        row = conn.execute(_USED, (hold.meter, hold.scope, hold.start)).fetchone()
                        used = row[0] if row else 0.0
                    conn.execute(_UPSERT_USED, (hold.meter, hold.scope, hold.start, hold.end, actual, 1, now))
                    if alerting:
                        alerts += self._crossings(
                            conn,
                            hold.limits,
                            hold.scope,
                            hold.start,
                            hold.end,
                            used,
                            used + actual,
                            None,
                            now,
                            settlement.call_id,
                        )
        return tuple(alerts)

    def _crossings(
        self,
        conn: sqlite3.Connection,
        limits: tuple[Limit, ...],
        scope: str,
        start: float,
        end: float,
        before: float,
        after: float,
        reserved: float | None,
        now: float,
        call_id: str,
    ) -> list[Alert]:
        """The alerts whose threshold ``before → after`` crossed, that this step claimed."""
        fired: list[Alert] = []
        for limit in limits:
            for fraction in limit.alert_at:
                threshold = fraction * limit.amount
                if _over(threshold, after) or not _over(threshold, before):
                    continue  # not reached yet, or reached before this step
                if reserved is None:
                    (reserved,) = conn.execute(_RESERVED, (limit.meter, scope, start, now)).fetchone()
                    reserved = float(reserved or 0.0)
                alert = Alert(
                    "threshold", limit, _scope_of(scope), after, reserved, fraction, start, end, now, call_id
                )
                if self._claim(conn, alert, scope):
                    fired.append(alert)
        return fired

    @staticmethod
    def _claim(conn: sqlite3.Connection, alert: Alert, scope: str) -> bool:
        """Insert the alert's event; ``False`` when another step (any process) already did."""
        limit = alert.limit
        # The limit's meter and amount, not its text: changing its action or fractions does
        # not fire again what already fired in this window.
        dedupe = "|".join(
            (
                alert.kind,
                limit.meter,
                repr(limit.amount),
                scope,
                repr(alert.window_start),
                repr(alert.fraction),
            )
        )
        cursor = conn.execute(
            _EVENT,
            (
                iso(alert.at),
                alert.kind,
                limit.key,
                scope,
                iso(alert.window_start),
                iso(alert.window_end),
                alert.used,
                alert.reserved,
                limit.amount,
                alert.fraction,
                None,
                alert.call_id,
                alert.text,
                dedupe,
            ),
        )
        return cursor.rowcount == 1

    def usage(self, now: float) -> list[CounterState]:
        with self._reading() as conn:
            return read_usage(conn, now)

    def events(self, limit: int = 100, kind: str | None = None) -> list[Event]:
        with self._reading() as conn:
            return read_events(conn, limit, kind)


def read_usage(conn: sqlite3.Connection, now: float) -> list[CounterState]:
    """Every registered limit's counters in their current windows, read on ``conn`` (also
    datasette's read-only connection, for the dashboard)."""
    states: list[CounterState] = []
    try:
        defs = conn.execute(
            "SELECT limit_name, meter, metric, amount, per, seconds, action, definition, last_seen "
            "FROM limit_defs ORDER BY limit_name"
        ).fetchall()
        for name, meter, metric, amount, per, seconds, action, definition, last_seen in defs:
            per_value: str | float = per if per.isalpha() else float(per)
            start, end = window_bounds(per_value, seconds, now)
            counters = {
                scope: (used, calls)
                for scope, used, calls in conn.execute(
                    "SELECT scope, used, calls FROM limit_counters WHERE meter = ? AND window_start = ?",
                    (meter, start),
                )
            }
            reserved = dict(
                conn.execute(
                    "SELECT scope, total(amount) FROM limit_reservations "
                    "WHERE meter = ? AND window_start = ? AND expires_at > ? GROUP BY scope",
                    (meter, start, now),
                ).fetchall()
            )
            scopes = sorted(set(counters) | set(reserved))
            if not scopes and not json.loads(definition).get("by"):
                scopes = ["{}"]
            for scope in scopes:
                used, calls = counters.get(scope, (0.0, 0))
                states.append(
                    CounterState(
                        name,
                        meter,
                        metric,
                        amount,
                        action,
                        _scope_of(scope),
                        start,
                        end,
                        used,
                        float(reserved.get(scope, 0.0)),
                        calls,
                        last_seen,
                    )
                )
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []  # no limit was ever used with this database
        raise
    return states


def read_events(conn: sqlite3.Connection, limit: int = 100, kind: str | None = None) -> list[Event]:
    """The latest refusals and alerts, newest first, read on ``conn``."""
    sql = (
        "SELECT id, at, kind, limit_name, scope, used, reserved, amount, fraction, requested, call_id, "
        "message, window_end FROM limit_events"
    )
    params: list[Any] = []
    if kind is not None:
        sql += " WHERE kind = ?"
        params.append(kind)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    try:
        rows = conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    return [
        Event(
            id=r[0],
            at=r[1],
            kind=r[2],
            limit=r[3],
            scope=_scope_of(r[4]),
            used=r[5],
            reserved=r[6],
            amount=r[7],
            fraction=r[8],
            requested=r[9],
            call_id=r[10],
            message=r[11],
            window_end=r[12],
        )
        for r in rows
    ]


def _reset_after_fork() -> None:
    for counters in list(_instances):
        counters._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
