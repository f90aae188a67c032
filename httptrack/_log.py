"""Reading the call log from Python: ``httptrack.open_log()``. The CLI is built on this.

```python
log = httptrack.open_log()                      # HTTPTRACK_DB or the default path
for call in log.calls(since="1d", user="alice"):
    print(call.model, call.total_tokens, call.cost_usd)
log.stats(by="model")                           # totals per model
```

The database is opened read-only, so reading never blocks the app's writer.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ._records import CallRecord
from ._settings import Settings
from ._store import connect, migrate

__all__ = ["STATS_GROUPS", "Log", "open_log", "parse_when"]

#: ``stats(by=...)`` groupings and the SQL expression each groups on.
STATS_GROUPS = {
    "provider": "provider",
    "model": "coalesce(response_model, model)",
    "user": "user",
    "service": "service",
    "operation": "operation",
    "status": "status",
    "day": "substr(started_at, 1, 10)",
}

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(value: str | datetime, *, now: datetime | None = None) -> str:
    """``2h``/``7d`` (that long ago), an ISO date or datetime, or a ``datetime`` → the
    ``started_at`` text form, for comparisons in SQL."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        match = _RELATIVE.match(value)
        if match:
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            moment = (now or datetime.now(UTC)) - timedelta(seconds=seconds)
        else:
            try:
                moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"not a time: {value!r} (use e.g. 2h, 7d, 2026-01-31 or 2026-01-31T12:00)") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Log:
    """A call log database, opened for reading."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no httptrack database at {self.path}")
        self._conn = connect(self.path, readonly=True)
        self._conn.row_factory = sqlite3.Row

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _where(
        self,
        *,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        provider: str | None = None,
        model: str | None = None,
        user: str | None = None,
        service: str | None = None,
        session: str | None = None,
        status: str | None = None,
        operation: str | None = None,
        cached: bool | None = None,
        query: str | None = None,
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("started_at >= ?")
            params.append(parse_when(since))
        if until is not None:
            clauses.append("started_at < ?")
            params.append(parse_when(until))
        for column, value in (("provider", provider), ("user", user), ("service", service),
                              ("session", session), ("status", status), ("operation", operation)):  # fmt: skip
            if value is not None:
                clauses.append(f'"{column}" = ?')
                params.append(value)
        if model is not None:
            clauses.append("(model = ? OR response_model = ?)")
            params.extend([model, model])
        if cached is not None:
            clauses.append("cached = ?")
            params.append(int(cached))
        if query:
            clauses.append("(request_body LIKE ? OR response_text LIKE ? OR response_body LIKE ?)")
            params.extend([f"%{query}%"] * 3)
        return (" AND ".join(clauses) or "1"), params

    def calls(self, *, limit: int | None = None, newest_first: bool = True, **filters: Any) -> Iterator[CallRecord]:
        """Recorded calls matching the filters (``since``, ``until``, ``provider``, ``model``,
        ``user``, ``service``, ``session``, ``status``, ``operation``, ``cached``, ``query``)."""
        where, params = self._where(**filters)
        sql = f"SELECT * FROM calls WHERE {where} ORDER BY id {'DESC' if newest_first else 'ASC'}"
        if limit:
            sql += f" LIMIT {int(limit)}"
        for row in self._conn.execute(sql, params):
            yield CallRecord.from_row(dict(row))

    def get(self, call_id: str) -> CallRecord | None:
        """One call by id (or by a unique prefix of its id)."""
        rows = self._conn.execute("SELECT * FROM calls WHERE id = ? OR id LIKE ? LIMIT 2",
                                  [call_id, f"{call_id}%"]).fetchall()  # fmt: skip
        exact = [r for r in rows if r["id"] == call_id]
        if exact:
            return CallRecord.from_row(dict(exact[0]))
        return CallRecord.from_row(dict(rows[0])) if len(rows) == 1 else None

    def stats(self, *, by: str | None = None, **filters: Any) -> list[dict[str, Any]]:
        """Totals (one row), or totals per ``by`` group (see ``STATS_GROUPS``), largest cost
        first."""
        where, params = self._where(**filters)
        group = STATS_GROUPS.get(by) if by else None
        if by and group is None:
            raise ValueError(f"cannot group by {by!r} (choose from {', '.join(STATS_GROUPS)})")
        select = f"{group} AS {by}, " if group else ""
        sql = f"""
            SELECT {select}
                count(*) AS calls,
                sum(status = 'error') AS errors,
                sum(cached) AS cache_hits,
                sum(input_tokens) AS input_tokens,
                sum(output_tokens) AS output_tokens,
                sum(total_tokens) AS total_tokens,
                sum(cached_input_tokens) AS cached_input_tokens,
                round(sum(cost_usd), 10) AS cost_usd,
                round(sum(cost_saved_usd), 10) AS cost_saved_usd,
                sum(cost_usd IS NULL AND status = 'success') AS unpriced,
                round(avg(latency_ms), 3) AS avg_latency_ms
            FROM calls WHERE {where}
            {f"GROUP BY {group} ORDER BY cost_usd DESC, calls DESC" if group else ""}
        """
        return [dict(row) for row in self._conn.execute(sql, params)]


def open_log(path: str | Path | None = None) -> Log:
    """Open the call log at ``path`` (default: ``HTTPTRACK_DB`` or the default location)
    for reading, bringing an older database's schema up to date first."""
    target = Path(path) if path is not None else Settings().db
    if target.exists():
        try:
            conn = connect(target)
            try:
                migrate(conn)
            finally:
                conn.close()
        except (sqlite3.Error, OSError):
            pass  # a read-only copy: read it as it is
    return Log(target)
