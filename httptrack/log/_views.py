"""What the call log database carries besides the ``calls`` table, so that anything that
opens it (``httptrack``, ``datasette``, ``sqlite3``) can answer the usual questions fast:

- ``calls_fts``: a full-text index (SQLite FTS5) over the prompt text and the generated
  text of every call, brought up to date by the writer at most once a second (or every
  ``DERIVE_ROWS`` calls) and at every ``flush()``.
- reporting views: cost per day, by model, by user, by service, errors, slowest calls,
  cache savings.
- indexes that keep listing, totals and breakdowns under a second on a million calls.

Created by the ``m002_call_log_views`` migration (``_store``). The SQL is here, in one
place, because indexing and un-indexing a row must agree exactly.
"""

from __future__ import annotations

import sqlite3

from ._bodies import BODY_FUNCTION, register_functions
from ._rollup import ROLLUP_TABLE, roll_up_new_rows, rollups_exist

__all__ = [
    "FTS_TABLE",
    "INDEXES",
    "PROMPT_TEXT_KEYS",
    "VIEWS",
    "create_search_index",
    "create_views",
    "drop_views",
    "has_fts5",
    "index_new_rows",
    "prompt_text_sql",
    "rebuild_search_index",
    "roll_up_new_rows",
    "rollups_exist",
    "search_index_exists",
    "unindex",
]

FTS_TABLE = "calls_fts"

#: JSON keys whose string values are prompt text in the request bodies of the supported APIs:
#: chat ``messages[].content`` (a string, or parts with ``text``), Anthropic's ``system``,
#: the Responses API's ``input``/``instructions``, Ollama's ``prompt``, Gemini's
#: ``contents[].parts[].text``, embeddings' ``input``. Keys such as ``role``, ``model`` and
#: ``type`` are left out so that searching for "user" or "system" finds words, not JSON.
PROMPT_TEXT_KEYS = ("content", "text", "prompt", "input", "system", "instructions")


def prompt_text_sql(body: str) -> str:
    """An SQL expression: the prompt text of the request body ``body`` (a column reference).
    A body that is not valid JSON (plain text, or cut at the size cap) is indexed as it is."""
    keys = ", ".join(f"'{k}'" for k in PROMPT_TEXT_KEYS)
    return (
        f"CASE WHEN {body} IS NULL THEN NULL WHEN json_valid({body}) THEN ("
        f"SELECT group_concat(value, char(10)) FROM json_tree({body}) WHERE type = 'text' AND "
        f"(key IN ({keys}) OR (typeof(key) = 'integer' AND path IN ('$.input', '$.prompt')))"
        f") ELSE {body} END"
    )


#: The rows to index, each request body as text (decompressed once, in a materialized CTE:
#: the prompt expression names it four times).
_BODIES = f"SELECT rowid, {BODY_FUNCTION}(request_body) AS body, response_text FROM calls"


def has_fts5(conn: sqlite3.Connection) -> bool:
    """Whether this SQLite build has FTS5 (CPython's usually does)."""
    try:
        return bool(conn.execute("SELECT sqlite_compileoption_used('ENABLE_FTS5')").fetchone()[0])
    except sqlite3.Error:
        return False


def create_search_index(conn: sqlite3.Connection) -> bool:
    """Create ``calls_fts`` and index the rows already there. Returns ``False`` (and creates
    nothing) where SQLite lacks FTS5: ``-q`` then falls back to a slower substring search."""
    if not has_fts5(conn):
        return False
    # Contentless: the index holds tokens only, never a second copy of the text. Its rowids
    # are those of `calls`. (Not external content over a view: FTS5 refuses views that call
    # json_tree, and the prompt text has to be picked out of the request JSON.)
    conn.execute(f"""CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(
        prompt, response, content='', tokenize='unicode61 remove_diacritics 2')""")
    index_new_rows(conn)
    return True


def search_index_exists(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", [FTS_TABLE]).fetchone() is not None


def index_new_rows(conn: sqlite3.Connection) -> int:
    """Index the calls added since the index was last brought up to date (the writer calls
    this in a write transaction at most once a second, and at flush). Returns how many
    were indexed.

    Why the writer and not triggers: FTS5 writes a segment per statement, so a trigger
    (one FTS statement per row) made each insert ~3x as expensive; one ``INSERT ... SELECT``
    per batch costs a fraction of that (``benchmarks/bench_log.py --writer``). Rows added by
    a writer that does not do this are picked up by the next one that does, since the
    bookmark is the index's own highest rowid."""
    (last,) = conn.execute(f"SELECT coalesce(max(id), 0) FROM {FTS_TABLE}_docsize").fetchone()
    register_functions(conn)
    cursor = conn.execute(
        f"""INSERT INTO {FTS_TABLE}(rowid, prompt, response)
        WITH new AS MATERIALIZED ({_BODIES} WHERE rowid > ?)
        SELECT rowid, {prompt_text_sql("body")}, response_text FROM new""",
        [last],
    )
    return cursor.rowcount


def unindex(conn: sqlite3.Connection, where: str, params: list[object]) -> None:
    """Remove the calls matching ``where`` from the search index (before deleting them, or
    before dropping their bodies). A contentless index forgets a row only when handed back
    the exact text it indexed, which the same expression over the row gives."""
    register_functions(conn)
    conn.execute(
        f"""INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, prompt, response)
        WITH old AS MATERIALIZED ({_BODIES} WHERE ({where}) AND rowid IN (SELECT id FROM {FTS_TABLE}_docsize))
        SELECT 'delete', rowid, {prompt_text_sql("body")}, response_text FROM old""",
        params,
    )


def rebuild_search_index(conn: sqlite3.Connection) -> None:
    """Index every row again (after a ``VACUUM`` that renumbered rows, or to repair)."""
    conn.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('delete-all')")
    index_new_rows(conn)


#: ``coalesce(response_model, model)``: the model that answered, else the one asked for.
_MODEL = "coalesce(response_model, model)"
_SUMS = """sum(calls) AS calls,
    sum(errors) AS errors,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    round(sum(cost_usd), 6) AS cost_usd,
    round(sum(cost_saved_usd), 6) AS cost_saved_usd"""


def _by(dim: str, label: str, extra: str = "") -> str:
    """A cost breakdown by one dimension, from the daily rollup (instant on any size)."""
    return f"""SELECT nullif(value, '') AS {label}, {_SUMS},
    round(sum(latency_sum) / nullif(sum(latency_n), 0), 1) AS avg_latency_ms{extra}
FROM {ROLLUP_TABLE} WHERE dim = '{dim}' GROUP BY value ORDER BY sum(cost_usd) DESC, sum(calls) DESC"""


#: name -> (description, SELECT). Shown in datasette with their descriptions. The cost
#: views read the daily rollup (``_rollup``), so they answer at once on millions of calls.
VIEWS: dict[str, tuple[str, str]] = {
    "cost_per_day": (
        "Calls, tokens and cost per day (UTC), newest day first",
        f"""SELECT day, {_SUMS}, sum(cache_hits) AS cache_hits
FROM {ROLLUP_TABLE} WHERE dim = '' GROUP BY day ORDER BY day DESC""",
    ),
    "cost_by_model": (
        "Calls, tokens and cost per model (the model that answered), most expensive first",
        _by(
            "model",
            "model",
            ",\n    round(sum(cost_usd) / nullif(sum(calls) - sum(unpriced), 0), 8) AS avg_cost_usd",
        ),
    ),
    "cost_by_user": ("Calls, tokens and cost per user, most expensive first", _by("user", "user")),
    "cost_by_service": (
        "Calls, tokens and cost per service, most expensive first",
        _by("service", "service"),
    ),
    "cost_by_provider": (
        "Calls, tokens and cost per provider, most expensive first",
        _by("provider", "provider"),
    ),
    "errors": (
        "Failed calls, newest first: HTTP errors, error events in streams, transport errors",
        f"""SELECT id, started_at, provider, {_MODEL} AS model, operation, http_status, error_code,
    error_message, outcome, user, service, latency_ms
FROM calls WHERE status = 'error' ORDER BY started_at DESC""",
    ),
    "slowest_calls": (
        "Calls by latency, slowest first, with time to first token and output speed",
        f"""SELECT id, started_at, provider, {_MODEL} AS model, stream, latency_ms, ttft_ms, output_tokens,
    round(output_tokens * 1000.0 / nullif(latency_ms - coalesce(ttft_ms, 0), 0), 1) AS output_tokens_per_s,
    status, user, service
FROM calls WHERE latency_ms IS NOT NULL AND cached = 0 ORDER BY latency_ms DESC""",
    ),
    "cache_savings": (
        "httptrack response cache per day: hits, hit rate, and what the hits would have cost",
        f"""SELECT day, sum(calls) AS calls, sum(cache_hits) AS cache_hits,
    round(100.0 * sum(cache_hits) / sum(calls), 1) AS hit_rate_pct,
    round(sum(cost_saved_usd), 6) AS cost_saved_usd,
    round(sum(cost_usd), 6) AS cost_usd
FROM {ROLLUP_TABLE} WHERE dim = '' GROUP BY day ORDER BY day DESC""",
    ),
}


def create_views(conn: sqlite3.Connection) -> None:
    for name, (_, select) in VIEWS.items():
        conn.execute(f"CREATE VIEW IF NOT EXISTS {name} AS\n{select}")


def drop_views(conn: sqlite3.Connection) -> None:
    """Drop the reporting views (a later migration that changes one drops and recreates)."""
    for name in VIEWS:
        conn.execute(f"DROP VIEW IF EXISTS {name}")


#: Indexes added for the CLI, the Python API and datasette's facets (m001 made the
#: per-column ``(column, started_at)`` ones, which serve the facets on those columns).
INDEXES: dict[str, str] = {
    # Covers every figure `stats` sums: what the daily rollup cannot answer (two dimensions
    # at once, the partial days at the edges of a range) reads this, not the rows and
    # their bodies.
    "idx_calls_usage": "started_at, provider, model, response_model, user, service, operation, status, "
    "cached, input_tokens, output_tokens, total_tokens, cached_input_tokens, cost_usd, cost_saved_usd, "
    "latency_ms",
    # The slowest_calls view.
    "idx_calls_latency": "cached, latency_ms",
    # datasette's facet by day (date(started_at)): 1.1 s -> 0.1 s on a million calls.
    # (Dropped by m006: the facet reads the rollups, a day's calls are a range of started_at.)
    "idx_calls_day": "date(started_at)",
}
