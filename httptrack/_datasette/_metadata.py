"""The datasette metadata for a call log database: which databases are call logs, their
table settings and canned queries."""

from __future__ import annotations

import sqlite3
from typing import Any

from markupsafe import escape

from ..log import _rollup
from ..log._schema import CALL_LOG_COLUMNS, DESCRIPTIONS
from ..log._views import FTS_TABLE, VIEWS

__all__ = [
    "CANNED_QUERIES",
    "FTS_QUERY_FUNCTION",
    "INTERNAL_TABLES",
    "SETTINGS",
    "database_metadata",
    "is_call_log",
    "links_html",
]

#: The SQL function (registered by the plugin on every connection) that turns a user's
#: words into an FTS5 query that cannot be a syntax error, as ``httptrack calls -q`` does.
FTS_QUERY_FUNCTION = "httptrack_fts_query"

#: datasette settings ``httptrack ui`` runs with: facets over a million rows need more than
#: the default 200 ms, and bodies are long.
SETTINGS = {
    "facet_time_limit_ms": 2000,
    "suggest_facets": False,
    "sql_time_limit_ms": 5000,
    "default_page_size": 50,
    "truncate_cells_html": 0,
    "allow_download": False,
}

CANNED_QUERIES: dict[str, dict[str, Any]] = {
    "cost_for_user": {
        "title": "Cost per day for one user",
        "description": "Calls, tokens and cost per day for the user you name.",
        # From the daily rollup (a few rows a day), plus the calls past its bookmark (read by
        # rowid from there on: not rolled up yet), never the user's every call.
        "sql": f"""SELECT day, sum(calls) AS calls, sum(errors) AS errors,
  sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
  round(sum(cost_usd), 6) AS cost_usd, round(sum(cost_saved_usd), 6) AS cost_saved_usd
FROM (
  SELECT day, calls, errors, input_tokens, output_tokens, cost_usd, cost_saved_usd
  FROM {_rollup.ROLLUP_TABLE} WHERE dim = 'user' AND value = :user AND :user != ''
  UNION ALL
  SELECT substr(started_at, 1, 10), 1, status = 'error', input_tokens, output_tokens, cost_usd, cost_saved_usd
  FROM calls NOT INDEXED WHERE rowid > coalesce((SELECT cast(value AS integer) FROM {_rollup.STATE_TABLE}
    WHERE key = '{_rollup.BOOKMARK_KEY}'), 0) AND user = :user
)
GROUP BY day ORDER BY day DESC""",
    },
    "session_calls": {
        "title": "Calls of one session",
        "description": "Every call of a session (conversation), in order, with what it said.",
        "sql": """SELECT id, started_at, provider, coalesce(response_model, model) AS model, status,
  input_tokens, output_tokens, cost_usd, latency_ms, response_text
FROM calls WHERE session = :session ORDER BY started_at, id""",
    },
    "cost_per_hour": {
        "title": "Cost per hour, last 48 hours",
        "description": "Calls, errors and cost per hour (UTC) over the last two days.",
        "sql": """SELECT substr(started_at, 1, 13) || ':00' AS hour, count(*) AS calls,
  sum(status = 'error') AS errors, sum(total_tokens) AS tokens, round(sum(cost_usd), 6) AS cost_usd
FROM calls WHERE started_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-48 hours')
GROUP BY hour ORDER BY hour DESC""",
    },
    "latency_by_model": {
        "title": "Latency percentiles per model",
        "description": "p50 / p95 / max latency and time to first token per model over the last :days days "
        "(cache hits left out).",
        "sql": """WITH recent AS (
  SELECT coalesce(response_model, model) AS model, latency_ms, ttft_ms FROM calls
  WHERE cached = 0 AND latency_ms IS NOT NULL
    AND started_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || :days || ' days')
), ranked AS (
  SELECT model, latency_ms, ttft_ms,
    row_number() OVER (PARTITION BY model ORDER BY latency_ms) AS rank,
    count(*) OVER (PARTITION BY model) AS n
  FROM recent
)
SELECT model, n AS calls,
  max(CASE WHEN rank = CAST(ceil(n * 0.50) AS INTEGER) THEN latency_ms END) AS p50_ms,
  max(CASE WHEN rank = CAST(ceil(n * 0.95) AS INTEGER) THEN latency_ms END) AS p95_ms,
  max(latency_ms) AS max_ms, round(avg(ttft_ms), 1) AS avg_ttft_ms
FROM ranked GROUP BY model ORDER BY calls DESC""",
    },
    "search": {
        "title": "Search prompts and responses",
        "description": 'Full-text search: every word must occur ("a phrase" in quotes, pref* for a prefix).',
        "sql": f"""SELECT id, started_at, provider, coalesce(response_model, model) AS model, user, service,
  substr(response_text, 1, 300) AS response
FROM calls WHERE rowid IN (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH {FTS_QUERY_FUNCTION}(:q))
ORDER BY started_at DESC, id DESC LIMIT 200""",
    },
}


#: Tables httptrack keeps for itself (rollups, bookmarks, migrations, the search index):
#: hidden from datasette's lists, still one click away under "hidden tables".
INTERNAL_TABLES = (
    _rollup.ROLLUP_TABLE,
    _rollup.LATENCY_TABLE,
    _rollup.DETAIL_TABLE,
    _rollup.DETAIL_LATENCY_TABLE,
    _rollup.COMBO_TABLE,
    _rollup.STATE_TABLE,
    FTS_TABLE,
    "_sqlite_migrations",
)


def links_html(dashboard_url: str, calls_url: str) -> str:
    """The way in to a call log: its dashboard and its calls, for the top of datasette's
    pages."""
    return (
        '<p class="httptrack-links" style="font-size: 1.15em">'
        f'<a class="httptrack-dashboard" href="{escape(dashboard_url)}"><strong>Dashboard</strong></a>: '
        "cost, calls, errors and latency over time &nbsp;·&nbsp; "
        f'<a class="httptrack-calls" href="{escape(calls_url)}"><strong>Calls</strong></a>: '
        "every call, newest first, searchable; click one for all of it</p>"
    )


def database_metadata(dashboard_url: str = "/-/httptrack", calls_url: str = "calls") -> dict[str, Any]:
    """Metadata for one call log database (the same for every one), a new copy each time:
    datasette merges the user's own metadata (``-m metadata.json``) into what the plugin
    returns, in place, so a shared copy would carry one database's settings to another (and
    to the next ``Datasette`` in the process). Building it takes microseconds."""
    tables: dict[str, Any] = {
        "calls": {
            "title": "Calls",
            "description": "One row per LLM API call recorded by httptrack, newest first. "
            "The search box searches prompts and generated text.",
            "sort_desc": "started_at",
            # datasette's column and date facets, read from the rollups when they can be (_facets).
            "facets": [
                *({"httptrack_column": c} for c in ("provider", "model", "user", "service", "status")),
                {"httptrack_date": "started_at"},
            ],
            "columns": dict(DESCRIPTIONS),
            "fts_table": FTS_TABLE,
            "fts_pk": "rowid",
            "size": 50,
        },
        **{name: {"hidden": True} for name in INTERNAL_TABLES},
        # limits/: its tables (reservations and the salt of key scopes are its own business).
        "limit_events": {
            "description": "Calls refused by a limit (blocked) and limit alerts fired "
            "(threshold, exhausted).",
            "sort_desc": "id",
            "facets": ["kind", "limit_name"],
        },
        "limit_counters": {
            "description": "Limit counters: per meter, scope and window (Unix seconds), what was "
            "used and how many calls were counted.",
        },
        "limit_defs": {"description": "Every limit an app has used with this database."},
        "limit_reservations": {"hidden": True},
        "limit_meta": {"hidden": True},
    }
    for name, (description, _) in VIEWS.items():
        tables[name] = {"description": description}
    return {
        "title": "httptrack call log",
        "description_html": "<p>Every LLM API call, with its tokens, cost and latency.</p>"
        + links_html(dashboard_url, calls_url),
        "tables": tables,
        "queries": {name: dict(query) for name, query in CANNED_QUERIES.items()},
    }


_detected: dict[tuple[str, str], bool] = {}


def is_call_log(path: str | None) -> bool:
    """Whether the SQLite file at ``path`` is an httptrack call log: a ``calls`` table with
    httptrack's columns (cached per path). A log of an older schema (no views, no rollups)
    is one too: the pages read it as it is."""
    if not path:
        return False
    key = ("path", path)
    if key not in _detected:
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                columns = {r[1] for r in conn.execute("PRAGMA table_info(calls)")}
            finally:
                conn.close()
            _detected[key] = columns >= CALL_LOG_COLUMNS
        except sqlite3.Error:
            _detected[key] = False
    return _detected[key]
