"""Reading a Postgres call log with the same ``Log`` (``_reader``) as a SQLite one.

The seam is a connection: :class:`ReadConnection` takes the few statements ``Log`` runs,
written in SQLite's dialect, and runs them in Postgres's, giving rows back as SQLite's
``Row`` does (by index and by name, ``started_at`` as ISO text, JSON as text). What it
translates is small and fixed: ``?`` parameters, ``calls.*``, ``WHERE 1``, the full-text
match (FTS5's query → a ``tsquery`` over the ``search`` column), the day of
``started_at``, the ``user`` column (a keyword in Postgres), and the catalogue questions
(``PRAGMA table_info``, ``sqlite_master``, ``PRAGMA user_version``). Rollups are SQLite's
own: without them ``Log`` reads ``calls``, which Postgres aggregates from its indexes.

Listings (``rows()``, ``export``) are streamed from the server row by row (psycopg's
``stream``): memory stays flat however many calls there are. The connection is
read-only and autocommits: a reader never holds a transaction open.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .._errors import LogError
from ._postgres import ISO_SQL, select_list
from ._schema import COLUMN_NAMES
from ._url import DatabaseURL

if TYPE_CHECKING:
    import psycopg

__all__ = ["ReadConnection", "Row", "open_reader", "tsquery"]


class Row(tuple[Any, ...]):
    """A result row: by index (a tuple) and by column name, and ``dict(row)`` (as
    ``sqlite3.Row``)."""

    names: tuple[str, ...] = ()

    def keys(self) -> tuple[str, ...]:
        return self.names

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names.index(key))
        return tuple.__getitem__(self, key)


def _row_factory(cursor: Any) -> Any:
    names = tuple(column.name for column in cursor.description or ())
    cls: type[Row] = type("Row", (Row,), {"names": names, "__slots__": ()})
    if "properties" not in names:
        return cls
    at = names.index("properties")

    def make(values: Sequence[Any]) -> Row:
        # jsonb gives its keys back in its own order: as the writer wrote them (sorted).
        if isinstance(values[at], str):
            values = list(values)
            values[at] = json.dumps(json.loads(values[at]), sort_keys=True)
        return cls(values)

    return make


def tsquery(fts: str) -> str:
    """An FTS5 query as ``_reader.fts_query`` writes it (``"word" "a phrase" "pref"*``) as
    a Postgres ``tsquery`` (``'word' & 'a' <-> 'phrase' & 'pref':*``), lower-cased (the
    ``simple`` configuration the ``search`` column is made with)."""
    terms = []
    for term, star in re.findall(r'"((?:[^"]|"")*)"(\*?)', fts):
        words = [w for w in re.split(r"\W+", term.replace('""', '"').lower()) if w]
        if not words:
            continue
        quoted = [f"'{w}'" for w in words]
        if star:
            quoted[-1] += ":*"
        terms.append(" <-> ".join(quoted) if len(quoted) > 1 else quoted[0])
    return " & ".join(terms) or "''"


_ALL = select_list(COLUMN_NAMES)
#: ``substr(started_at, 1, 10)`` of SQLite's ISO text: the day (UTC).
_DAY = "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
_FTS = re.compile(r"\+?rowid IN \(SELECT rowid FROM calls_fts WHERE calls_fts MATCH \?\)")
_COLUMN = re.compile(r'calls\."(\w+)"')
#: SQLite's compressed bodies read through ``httptrack_body()`` (log/_bodies): text in Postgres.
_BODY = re.compile(r'httptrack_body\((calls\."\w+")\) AS "\w+"')
_WHERE_ALL = re.compile(r"\bWHERE 1(?=\s|$)")
_EDGE = re.compile(r"\b(?:min|max)\(started_at\)")
_USER = re.compile(r'(?<![\w".])user(?![\w"])')


def translate(sql: str, params: Sequence[Any]) -> tuple[str, list[Any]]:
    """One of ``Log``'s statements, and its parameters, for Postgres."""
    params = list(params)
    match = _FTS.search(sql)
    if match:
        index = sql[: match.start()].count("?")
        params[index] = tsquery(str(params[index]))
        sql = sql[: match.start()] + "search @@ to_tsquery('simple', ?)" + sql[match.end() :]
    sql = _BODY.sub(r"\1", sql)
    sql = _COLUMN.sub(lambda m: select_list([m.group(1)]), sql)
    for star in ("SELECT calls.* FROM", "SELECT * FROM"):
        sql = sql.replace(star, f"SELECT {_ALL} FROM")
    sql = _WHERE_ALL.sub("WHERE TRUE", sql)
    sql = sql.replace("substr(started_at, 1, 10)", _DAY)
    sql = _EDGE.sub(lambda m: ISO_SQL.format(m.group(0)), sql)
    sql = _USER.sub('"user"', sql)
    sql = sql.replace("%", "%%").replace("?", "%s")
    return sql, params


class _Cursor:
    """What ``Log`` uses of a cursor: ``execute``, ``fetchone``/``fetchmany``/``fetchall``,
    iteration, ``close`` (and a ``row_factory`` it may set: rows are ``Row`` anyway)."""

    row_factory: Any = None

    def __init__(self, owner: ReadConnection) -> None:
        self._owner = owner
        self._rows: Iterator[Any] = iter(())

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        self._rows = self._owner._run(sql, params)
        return self

    def fetchone(self) -> Any:
        return next(self._rows, None)

    def fetchmany(self, size: int = 1) -> list[Any]:
        out = []
        for row in self._rows:
            out.append(row)
            if len(out) >= size:
                break
        return out

    def fetchall(self) -> list[Any]:
        return list(self._rows)

    def __iter__(self) -> Iterator[Any]:
        return self._rows

    def close(self) -> None:
        close = getattr(self._rows, "close", None)
        if close is not None:
            close()


class ReadConnection:
    """A read-only Postgres connection that answers ``Log``'s SQLite-dialect statements."""

    def __init__(self, url: DatabaseURL, conn: psycopg.Connection[Any]) -> None:
        self.url = url
        self.conn = conn

    def cursor(self) -> _Cursor:
        return _Cursor(self)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        return self.cursor().execute(sql, params)

    def _run(self, sql: str, params: Sequence[Any]) -> Iterator[Any]:
        import psycopg

        catalogue = self._catalogue(sql, params)
        if catalogue is not None:
            return iter(catalogue)
        text, values = translate(sql, params)
        cursor = self.conn.cursor(row_factory=_row_factory)
        try:
            if "ORDER BY started_at" in text:  # a listing: streamed, not loaded whole
                return self._stream(cursor, text, values)
            return iter(cursor.execute(text, values).fetchall())
        except psycopg.Error as exc:
            raise LogError(self.url.scrub(f"cannot read {self.url}: {exc}")) from None

    def _stream(self, cursor: Any, text: str, values: list[Any]) -> Iterator[Any]:
        import psycopg

        try:
            yield from cursor.stream(text, values)
        except psycopg.Error as exc:
            raise LogError(self.url.scrub(f"cannot read {self.url}: {exc}")) from None

    def _catalogue(self, sql: str, params: Sequence[Any]) -> list[Any] | None:
        """SQLite's catalogue questions, answered from Postgres's."""
        if sql.startswith("PRAGMA table_info(calls)"):
            rows = self.conn.execute(
                "SELECT ordinal_position, column_name FROM information_schema.columns "
                "WHERE table_name = 'calls' AND table_schema = current_schema() ORDER BY ordinal_position"
            ).fetchall()
            return [(n, name) for n, name in rows]
        if sql.startswith("PRAGMA user_version"):
            row = self.conn.execute("SELECT max(version) FROM httptrack_schema_migrations").fetchone()
            return [(row[0] if row else 0,)]
        if "sqlite_master" in sql:
            # The search index is the `search` column (always there); SQLite's rollup
            # tables are not: `Log` reads `calls` instead.
            if list(params) == ["calls_fts"]:
                return [(1,)]
            return [(0,)] if "count(" in sql else []
        return None

    def close(self) -> None:
        self.conn.close()


def open_reader(url: DatabaseURL) -> ReadConnection:
    """A read-only connection to the log at ``url``; ``LogError`` (saying why, without the
    password) when the server cannot be reached or the database holds no call log."""
    import psycopg

    from ._postgres import connect

    try:
        conn = connect(url)
        conn.read_only = True
    except psycopg.Error as exc:
        raise LogError(url.scrub(f"cannot connect to {url}: {exc}")) from None
    try:
        found = conn.execute(
            "SELECT 1 FROM information_schema.tables "
            "WHERE table_name = 'calls' AND table_schema = current_schema()"
        ).fetchone()
    except psycopg.Error as exc:
        conn.close()
        raise LogError(url.scrub(f"cannot read {url}: {exc}")) from None
    if found is None:
        conn.close()
        raise LogError(f"{url} holds no httptrack call log yet (no calls table): make a tracked call first")
    return ReadConnection(url, conn)
