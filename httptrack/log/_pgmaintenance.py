"""``prune`` and ``reindex`` for a Postgres call log (``_maintenance`` does SQLite's): the
same plan (``_maintenance._plan``: which calls go, which lose their bodies), run in short
transactions of ``_CHUNK`` rows so that writers never wait long. The search vector is a
column of the row: deleting a row, or clearing its bodies, updates it too. Space freed is
reused by Postgres (autovacuum); ``--vacuum`` runs ``VACUUM`` on ``calls``."""

from __future__ import annotations

from datetime import datetime

from ._maintenance import BODY_COLUMNS, PruneResult, _Part, _plan
from ._postgres import connect, migrate
from ._url import DatabaseURL

__all__ = ["count_prunable", "prune", "reindex"]

_CHUNK = 20_000


def _pg(where: str) -> str:
    return where.replace("?", "%s")


def count_prunable(
    url: DatabaseURL,
    older_than: str | datetime | None,
    *,
    bodies_only: bool = False,
    keep_bodies: str | datetime | None = None,
) -> tuple[str | None, int, str | None, int]:
    """As ``_maintenance.count_prunable``, for a Postgres log (read-only)."""
    calls, bodies = _plan(older_than, bodies_only, keep_bodies)
    with connect(url) as conn:

        def count(where: str, params: list[str]) -> int:
            row = conn.execute(f"SELECT count(*) FROM calls WHERE {_pg(where)}", params).fetchone()
            return int(row[0]) if row else 0

        n_calls = count(calls.where, [calls.cutoff]) if calls else 0
        n_bodies = 0
        if bodies is not None:
            if calls is not None and not calls.clear:
                n_bodies = count(f"{bodies.where} AND started_at >= ?", [bodies.cutoff, calls.cutoff])
            else:
                n_bodies = count(bodies.where, [bodies.cutoff])
    return (calls.cutoff if calls else None), n_calls, (bodies.cutoff if bodies else None), n_bodies


def _size(conn: object) -> int:
    row = conn.execute("SELECT pg_total_relation_size('calls')").fetchone()  # type: ignore[attr-defined]
    return int(row[0]) if row else 0


def prune(
    url: DatabaseURL,
    older_than: str | datetime | None = None,
    *,
    bodies_only: bool = False,
    keep_bodies: str | datetime | None = None,
    vacuum: bool = False,
) -> PruneResult:
    """As ``_maintenance.prune``, for a Postgres log."""
    calls, bodies = _plan(older_than, bodies_only, keep_bodies)
    with connect(url) as conn:
        migrate(conn)
        before = _size(conn)
        n_calls = _prune_part(conn, calls) if calls else 0
        n_bodies = _prune_part(conn, bodies) if bodies else 0
        if vacuum:
            conn.execute("VACUUM (ANALYZE) calls")
        after = _size(conn)
    return PruneResult(
        cutoff=calls.cutoff if calls else None,
        calls=n_calls,
        bodies_only=bodies_only,
        bytes_before=before,
        bytes_after=after,
        bodies_cutoff=bodies.cutoff if bodies else None,
        bodies=n_bodies,
    )


def _prune_part(conn: object, part: _Part) -> int:
    total = 0
    chunk = f"seq IN (SELECT seq FROM calls WHERE {_pg(part.where)} ORDER BY started_at LIMIT {_CHUNK})"
    while True:
        if part.clear:
            sets = ", ".join(f"{c} = NULL" for c in BODY_COLUMNS)
            sql = f"UPDATE calls SET {sets} WHERE {chunk}"
        else:
            sql = f"DELETE FROM calls WHERE {chunk}"
        done: int = conn.execute(sql, [part.cutoff]).rowcount  # type: ignore[attr-defined]
        total += done
        if done < _CHUNK:
            return total


def reindex(url: DatabaseURL) -> int:
    """Bring the schema up to date and count the calls (the search vector is a column of
    each row, the views read ``calls``: there is nothing to rebuild)."""
    with connect(url) as conn:
        migrate(conn)
        row = conn.execute("SELECT count(*) FROM calls").fetchone()
    return int(row[0]) if row else 0
