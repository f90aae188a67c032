"""The call log in Postgres: connections, the schema's migrations, and
:class:`PostgresStore`, the ``LogBackend`` (see ``_backend``) the background writer writes
through when ``HTTPTRACK_DB`` is a ``postgresql://`` URL. psycopg 3 is imported here only
(``pip install 'httptrack[postgres]'``), when a Postgres URL is used.

The same ``calls`` table as SQLite's (``_schema.COLUMNS``: same names, same meanings), in
Postgres's own types:

- ``started_at`` is ``timestamptz``; the readers give it back as the same ISO-8601 text
  (``2026-01-31T12:00:00.123Z``) SQLite holds.
- ``properties`` is ``jsonb`` (queryable with ``properties->>'team'``, indexable); the
  headers are ``json`` (validated, and kept as written: in the order sent). The bodies stay
  ``text``: they
  are capped at ``HTTPTRACK_MAX_BODY_BYTES`` (a cut body is no JSON), streams are SSE or
  NDJSON (no JSON either), and ``jsonb`` would reorder keys and drop duplicates, so a body
  would no longer be the bytes as sent.
- ``search`` is a stored ``tsvector`` (the JSON string values of the request body, else its
  text, and the generated text), behind a GIN index: ``-q`` is a full-text query.
- ``seq`` numbers rows in the order they were written (SQLite's ``rowid``).

Writes: one transaction per batch, the rows ``COPY``-ed into a temporary table and moved
with ``INSERT … SELECT … ON CONFLICT (id) DO NOTHING`` (a spooled row written twice is a
duplicate, not an error). A batch a row spoils is written again row by row under
savepoints, so only that row is refused. A server that is down, restarting or refusing
connections raises ``LogUnavailable``: the writer keeps the rows (bounded, counted) and
retries with back-off; nothing reaches the app. Messages never carry the URL's password.

Migrations are numbered and recorded in ``httptrack_schema_migrations``, applied under an
advisory lock so that many processes starting at once migrate once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._errors import LogUnavailable
from ._backend import WriteResult
from ._schema import COLUMN_NAMES, COLUMNS
from ._url import DatabaseURL

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "CONNECT_TIMEOUT",
    "JSONB_COLUMNS",
    "MIGRATIONS",
    "PG_TYPES",
    "PostgresStore",
    "connect",
    "detach",
    "migrate",
    "select_list",
    "unavailable",
]

#: Seconds to wait for a connection: a server that is down costs the writer this, never the app.
CONNECT_TIMEOUT = 3
#: Columns held as JSON: ``properties`` as ``jsonb`` (queried by key, indexable), the headers
#: as ``json`` (validated, kept as written: in the order they were sent).
JSONB_COLUMNS = frozenset({"properties", "request_headers", "response_headers"})
_JSON_TYPE = {"properties": "jsonb", "request_headers": "json", "response_headers": "json"}
#: SQLite type → Postgres type (``REAL`` is 8 bytes in SQLite: ``double precision``).
_TYPE = {"TEXT": "text", "INTEGER": "bigint", "REAL": "double precision"}
PG_TYPES: dict[str, str] = {
    name: "timestamptz" if name == "started_at" else _JSON_TYPE.get(name) or _TYPE[sqltype]
    for name, sqltype, _ in COLUMNS
}
#: Text longer than this (per body) is not indexed for search: a ``tsvector`` holds 1 MB.
SEARCH_CHARS = 100_000
#: The advisory lock keys (any constants: they only have to differ from each other).
MIGRATE_LOCK = 0x6874_7472_6163_6B01

_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION httptrack_search_vector(request_body text, response_text text)
RETURNS tsvector LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE prompt tsvector;
BEGIN
  -- The string values of a JSON request (the prompt, not its keys); a body that is no JSON
  -- (plain text, or cut at the size cap) as text.
  BEGIN
    prompt := jsonb_to_tsvector('simple', request_body::jsonb, '["string"]');
  EXCEPTION WHEN others THEN
    prompt := to_tsvector('simple', left(coalesce(request_body, ''), {SEARCH_CHARS}));
  END;
  RETURN prompt || to_tsvector('simple', left(coalesce(response_text, ''), {SEARCH_CHARS}));
EXCEPTION WHEN others THEN  -- too long for a tsvector: the generated text alone, else nothing
  BEGIN
    RETURN to_tsvector('simple', left(coalesce(response_text, ''), {SEARCH_CHARS}));
  EXCEPTION WHEN others THEN
    RETURN ''::tsvector;
  END;
END $$
"""

#: ISO-8601 text of a ``timestamptz``, as SQLite holds ``started_at``.
ISO_SQL = """to_char({0} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""


def select_list(columns: Sequence[str], table: str = "calls") -> str:
    """A SELECT list giving ``columns`` back as SQLite has them: ``started_at`` as ISO text,
    the ``jsonb`` columns as JSON text."""
    out = []
    for name in columns:
        ref = f'{table}."{name}"' if table else f'"{name}"'
        if name == "started_at":
            out.append(f'{ISO_SQL.format(ref)} AS "started_at"')
        elif name in JSONB_COLUMNS:
            out.append(f'{ref}::text AS "{name}"')
        else:
            out.append(ref)
    return ", ".join(out)


def _views() -> dict[str, str]:
    """The reporting views of ``_views.VIEWS``, by the same names, over ``calls`` (Postgres
    aggregates the rows themselves; see docs/scaling.md for a materialized rollup)."""
    model = "coalesce(response_model, model)"
    sums = """count(*) AS calls,
    count(*) FILTER (WHERE status = 'error') AS errors,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    round(sum(cost_usd)::numeric, 6) AS cost_usd,
    round(sum(cost_saved_usd)::numeric, 6) AS cost_saved_usd"""
    day = "(started_at AT TIME ZONE 'UTC')::date"

    def by(expr: str, label: str, extra: str = "") -> str:
        return f"""SELECT nullif({expr}, '') AS {label}, {sums},
    round((avg(latency_ms) FILTER (WHERE cached = 0))::numeric, 1) AS avg_latency_ms{extra}
FROM calls GROUP BY 1 ORDER BY sum(cost_usd) DESC NULLS LAST, count(*) DESC"""

    return {
        "cost_per_day": f"""SELECT {day} AS day, {sums}, count(*) FILTER (WHERE cached = 1) AS cache_hits
FROM calls GROUP BY 1 ORDER BY 1 DESC""",
        "cost_by_model": by(
            model,
            "model",
            ",\n    round((sum(cost_usd) / nullif(count(cost_usd), 0))::numeric, 8) AS avg_cost_usd",
        ),
        "cost_by_user": by('"user"', '"user"'),
        "cost_by_service": by("service", "service"),
        "cost_by_provider": by("provider", "provider"),
        "errors": f"""SELECT id, started_at, provider, {model} AS model, operation, http_status, error_code,
    error_message, outcome, "user", service, latency_ms
FROM calls WHERE status = 'error' ORDER BY started_at DESC""",
        "slowest_calls": f"""SELECT id, started_at, provider, {model} AS model, stream, latency_ms, ttft_ms,
    output_tokens,
    round((output_tokens * 1000.0 / nullif(latency_ms - coalesce(ttft_ms, 0), 0))::numeric, 1)
      AS output_tokens_per_s,
    status, "user", service
FROM calls WHERE latency_ms IS NOT NULL AND cached = 0 ORDER BY latency_ms DESC""",
        "cache_savings": f"""SELECT {day} AS day, count(*) AS calls,
    count(*) FILTER (WHERE cached = 1) AS cache_hits,
    round(100.0 * count(*) FILTER (WHERE cached = 1) / count(*), 1) AS hit_rate_pct,
    round(sum(cost_saved_usd)::numeric, 6) AS cost_saved_usd,
    round(sum(cost_usd)::numeric, 6) AS cost_usd
FROM calls GROUP BY 1 ORDER BY 1 DESC""",
        # A daily rollup for dashboards (Grafana, Metabase, Superset): one row per day and
        # provider, model, user, service, operation, status and cached.
        "calls_daily": f"""SELECT {day} AS day, provider, {model} AS model, "user", service, operation,
    status, cached, {sums}, sum(total_tokens) AS total_tokens,
    round((avg(latency_ms) FILTER (WHERE cached = 0))::numeric, 1) AS avg_latency_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE cached = 0) AS p95_latency_ms
FROM calls GROUP BY 1, 2, 3, 4, 5, 6, 7, 8""",
    }


#: Indexes for the questions people ask of the log (as SQLite's ``_INDEXES`` and
#: ``_views.INDEXES``), and the search index.
_INDEXES = {
    "idx_calls_started_at": "(started_at)",
    "idx_calls_provider": "(provider, started_at)",
    "idx_calls_model": "(model, started_at)",
    "idx_calls_user": '("user", started_at)',
    "idx_calls_service": "(service, started_at)",
    "idx_calls_status": "(status, started_at)",
    "idx_calls_session": "(session)",
    "idx_calls_seq": "(seq)",
    "idx_calls_latency": "(cached, latency_ms)",
    "idx_calls_search": "USING gin (search)",
}


def _m001_create_calls(conn: psycopg.Connection[Any]) -> None:
    columns = ",\n  ".join(f'"{name}" {PG_TYPES[name]}' for name in COLUMN_NAMES)
    conn.execute(_FUNCTIONS)
    conn.execute(f"""CREATE TABLE IF NOT EXISTS calls (
  seq bigint GENERATED ALWAYS AS IDENTITY,
  {columns},
  search tsvector GENERATED ALWAYS AS (httptrack_search_vector(request_body, response_text)) STORED,
  PRIMARY KEY (id)
)""")
    for name, spec in _INDEXES.items():
        conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON calls {spec}")


def _m002_views(conn: psycopg.Connection[Any]) -> None:
    for name, select in _views().items():
        conn.execute(f"CREATE OR REPLACE VIEW {name} AS\n{select}")
    for name, _, description in COLUMNS:
        conn.execute(f"COMMENT ON COLUMN calls.\"{name}\" IS '{description.replace(chr(39), chr(39) * 2)}'")


#: (version, name, function), applied in order; each recorded once it is done.
MIGRATIONS: tuple[tuple[int, str, Callable[[psycopg.Connection[Any]], None]], ...] = (
    (1, "create_calls", _m001_create_calls),
    (2, "views", _m002_views),
)


def migrate(conn: psycopg.Connection[Any]) -> None:
    """Bring the database to the current schema, in place, in one transaction; safe with many
    processes at once (an advisory lock: the first migrates, the rest find it done)."""
    latest = MIGRATIONS[-1][0]
    try:
        row = conn.execute("SELECT max(version) FROM httptrack_schema_migrations").fetchone()
        if row is not None and row[0] is not None and row[0] >= latest and _has_columns(conn):
            return
    except Exception:
        if not conn.autocommit:
            conn.rollback()
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATE_LOCK])
        conn.execute("""CREATE TABLE IF NOT EXISTS httptrack_schema_migrations (
  version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())""")
        done = {v for (v,) in conn.execute("SELECT version FROM httptrack_schema_migrations").fetchall()}
        for version, name, apply in MIGRATIONS:
            if version not in done:
                apply(conn)
                conn.execute(
                    "INSERT INTO httptrack_schema_migrations (version, name) VALUES (%s, %s)", [version, name]
                )
        # A column added to _schema.COLUMNS is added here even without a migration naming it.
        for name in COLUMN_NAMES:
            conn.execute(f'ALTER TABLE calls ADD COLUMN IF NOT EXISTS "{name}" {PG_TYPES[name]}')


def _has_columns(conn: psycopg.Connection[Any]) -> bool:
    present = {
        name
        for (name,) in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'calls' AND table_schema = current_schema()"
        ).fetchall()
    }
    return all(name in present for name in COLUMN_NAMES)


def unavailable(url: DatabaseURL, exc: BaseException, what: str) -> LogUnavailable:
    """A ``LogUnavailable`` for ``exc``, its text scrubbed of the URL's password."""
    error = LogUnavailable(url.scrub(f"{what} {url}: {exc}".strip()))
    error.__cause__ = None
    return error


def connect(url: DatabaseURL, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection to the log at ``url`` (``psycopg.Error`` if it cannot be made)."""
    import psycopg

    return psycopg.connect(
        url.url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT, application_name="httptrack"
    )


#: The temporary table a batch is copied into (per connection), in the SQLite types the rows
#: come in; moved into ``calls`` with casts.
_INCOMING = "httptrack_incoming"
_COPY_TYPES = {"TEXT": "text", "INTEGER": "bigint", "REAL": "double precision"}
_QUOTED = ", ".join(f'"{name}"' for name in COLUMN_NAMES)
_CASTS = ", ".join(
    f'"{name}"::{PG_TYPES[name]}' if PG_TYPES[name] in ("json", "jsonb", "timestamptz") else f'"{name}"'
    for name in COLUMN_NAMES
)
_MOVE = (
    f"INSERT INTO calls ({_QUOTED}) SELECT {_CASTS} FROM {_INCOMING} ORDER BY n ON CONFLICT (id) DO NOTHING"
)
_INSERT_ONE = (
    f"INSERT INTO calls ({_QUOTED}) VALUES ("
    + ", ".join(
        f"%s::{PG_TYPES[name]}" if PG_TYPES[name] in ("json", "jsonb", "timestamptz") else "%s"
        for name in COLUMN_NAMES
    )
    + ") ON CONFLICT (id) DO NOTHING"
)


def _clean(row: Sequence[Any]) -> tuple[Any, ...]:
    """A row's values as Postgres takes them: ``text`` cannot hold NUL characters (SQLite's
    can), so a NUL in a body or a message becomes U+FFFD."""
    return tuple(v.replace("\x00", "\ufffd") if type(v) is str and "\x00" in v else v for v in row)


class PostgresStore:
    """One Postgres log, as the writer thread sees it: the Postgres ``LogBackend``. One
    connection per process (one writer thread per process; a pool would hold idle ones)."""

    def __init__(self, url: DatabaseURL, pause: Callable[[], None] | None = None) -> None:
        self.url = url
        self.location = str(url)
        self.pause = pause
        #: The search vector and the views are computed by Postgres: nothing is ever behind.
        self.behind = 0
        #: Postgres builds its indexes when the schema is made (``CREATE INDEX`` does not
        #: block writers for long there): none is ever left for later.
        self.indexes_pending = False
        self._conn: psycopg.Connection[Any] | None = None

    def open(self) -> None:
        if self._conn is not None and not self._conn.closed:
            return
        import psycopg

        try:
            conn = connect(self.url)
        except psycopg.Error as exc:
            raise unavailable(self.url, exc, "could not connect to") from None
        try:
            migrate(conn)
            # Outside any batch's transaction: a batch rolled back must not take it along.
            types = ", ".join(f'"{name}" {_COPY_TYPES[sqltype]}' for name, sqltype, _ in COLUMNS)
            conn.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {_INCOMING} (n integer, {types}) ON COMMIT DELETE ROWS"
            )
        except psycopg.Error as exc:
            conn.close()
            raise unavailable(self.url, exc, "could not set up the call log in") from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def write(self, rows: Sequence[tuple[Any, ...]]) -> WriteResult:
        import psycopg

        self.open()
        conn = self._conn
        assert conn is not None
        rows = [_clean(row) for row in rows]
        try:
            try:
                with conn.transaction():
                    written = self._copy(conn, rows)
                return WriteResult(written, len(rows) - written, [])
            except (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.InternalError_, ValueError):
                pass  # a row spoils the batch: find it (below)
            return self._one_by_one(conn, rows)
        except psycopg.Error as exc:
            # Down, restarting, out of disk, killed connection: nothing was written. Reconnect
            # next time (the server may be back).
            self.close()
            raise unavailable(self.url, exc, "could not write to") from None

    def _copy(self, conn: psycopg.Connection[Any], rows: Sequence[tuple[Any, ...]]) -> int:
        with conn.cursor() as cursor:
            with cursor.copy(f"COPY {_INCOMING} (n, {_QUOTED}) FROM STDIN") as copy:
                for n, row in enumerate(rows):
                    copy.write_row((n, *row))
            cursor.execute(_MOVE)
            return max(cursor.rowcount, 0)

    def _one_by_one(self, conn: psycopg.Connection[Any], rows: Sequence[tuple[Any, ...]]) -> WriteResult:
        import psycopg

        written = duplicates = 0
        refused: list[tuple[int, str]] = []
        with conn.transaction():
            for index, row in enumerate(rows):
                try:
                    with conn.transaction():  # a savepoint: a refused row undoes itself only
                        cursor = conn.execute(_INSERT_ONE, row)
                except (
                    psycopg.DataError,
                    psycopg.IntegrityError,
                    psycopg.errors.InternalError_,
                    ValueError,
                ) as exc:
                    refused.append((index, self.url.scrub(f"{type(exc).__name__}: {exc}")))
                    continue
                if cursor.rowcount == 1:
                    written += 1
                else:
                    duplicates += 1
        return WriteResult(written, duplicates, refused)

    def due(self) -> bool:
        return False

    def catch_up(self) -> None:
        """Nothing to do: the search vector is computed as each row is inserted."""

    def build_indexes(self, stop: Callable[[], bool]) -> bool:
        return True  # none left (see ``indexes_pending``)

    def checkpoint(self) -> None:
        """Nothing to do: Postgres's write-ahead log is the server's business."""

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection: nothing to close cleanly
                conn.close()

    def forget(self) -> None:
        """After fork: the connection's socket is the parent's (see ``detach``)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            detach(conn)


def detach(conn: Any) -> None:
    """Let go of a connection inherited through ``fork()`` without ending the parent's
    session: closing it here would send the server a Terminate on the socket the parent
    still uses. This process's copy of the socket's descriptor is pointed at /dev/null
    first, so the goodbye goes nowhere, and the connection is then closed quietly."""
    import os

    try:
        fd = conn.pgconn.socket
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
        conn.close()
    except Exception:  # pragma: no cover - already closed: nothing of the parent's here
        pass
