"""The ``calls`` table: one row per call. Column names are a contract (DESIGN.md); this is
the one place they are listed, with their SQL types and the descriptions shown in
datasette and ``httptrack show``. Changes to the table are migrations (``_store``)."""

from __future__ import annotations

__all__ = [
    "CALL_LOG_COLUMNS",
    "COLUMNS",
    "COLUMN_NAMES",
    "DESCRIPTIONS",
    "DROPPED_INDEXES",
    "READ_INDEXES",
    "TOKEN_COLUMNS",
    "WRITE_DROPPED_INDEXES",
]

#: (name, SQLite type, description), in table order.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "TEXT", "Call id (a ULID: sorts by time)"),
    ("started_at", "TEXT", "When the request was sent (ISO-8601, UTC)"),
    ("provider", "TEXT", "Provider family: openai, anthropic, ollama, gemini ..."),
    ("host", "TEXT", "Host (and port) the request went to"),
    ("method", "TEXT", "HTTP method"),
    ("endpoint", "TEXT", "URL path"),
    ("url", "TEXT", "Full URL, credentials in the query removed"),
    ("operation", "TEXT", "chat | completion | embeddings | models | other"),
    ("model", "TEXT", "Model requested"),
    ("response_model", "TEXT", "Model the provider says answered (often a dated version)"),
    ("stream", "INTEGER", "1 when the response was streamed"),
    ("status", "TEXT", "success | error"),
    (
        "outcome",
        "TEXT",
        "complete | cut_short (the app stopped reading) | failed | transport_error | cache_miss",
    ),
    ("http_status", "INTEGER", "HTTP status code (NULL when no response arrived)"),
    ("error_code", "TEXT", "Provider's error code, or the exception type for transport errors"),
    ("error_message", "TEXT", "Provider's error message, or the exception text"),
    ("input_tokens", "INTEGER", "All input tokens billed, cache reads and writes included"),
    ("output_tokens", "INTEGER", "All output tokens, reasoning included"),
    ("total_tokens", "INTEGER", "input_tokens + output_tokens"),
    (
        "cached_input_tokens",
        "INTEGER",
        "Input tokens read from the provider's prompt cache (part of input_tokens)",
    ),
    (
        "cache_write_tokens",
        "INTEGER",
        "Input tokens written to the provider's prompt cache (part of input_tokens)",
    ),
    ("reasoning_tokens", "INTEGER", "Reasoning/thinking tokens (part of output_tokens)"),
    ("tokens_estimated", "INTEGER", "1 when token figures were counted locally (provider sent none)"),
    ("cost_usd", "REAL", "What the call cost in USD (0 for cache hits; NULL when it cannot be priced)"),
    ("cost_saved_usd", "REAL", "What a cache hit would have cost at the provider"),
    ("cost_note", "TEXT", "Why cost_usd is NULL, or how it was priced when notable"),
    ("latency_ms", "REAL", "Request sent to last byte received, in milliseconds"),
    ("ttft_ms", "REAL", "Request sent to first body byte (time to first token for streams)"),
    ("cached", "INTEGER", "1 when served from httptrack's response cache"),
    ("cache_key", "TEXT", "Response cache key"),
    ("user", "TEXT", "Who made the call (attribute(), X-Httptrack-User, body user, HTTPTRACK_USER)"),
    ("service", "TEXT", "Which service made the call"),
    ("session", "TEXT", "Session or conversation id"),
    ("properties", "TEXT", "Further attribution properties (JSON object)"),
    ("request_id", "TEXT", "Provider's request id (response header)"),
    ("response_id", "TEXT", "Provider's id for the response (chatcmpl-..., msg_...)"),
    ("finish_reason", "TEXT", "Why generation stopped (stop, length, tool_calls, end_turn ...)"),
    ("request_headers", "TEXT", "Request headers (JSON), credentials removed"),
    ("request_body", "TEXT", "Request body as sent (capped; credentials never stored)"),
    ("request_bytes", "INTEGER", "Size of the request body in bytes"),
    ("response_headers", "TEXT", "Response headers (JSON)"),
    ("response_body", "TEXT", "Response body as received, decompressed; streams verbatim (capped)"),
    ("response_bytes", "INTEGER", "Size of the response body in bytes, as received on the wire"),
    ("response_text", "TEXT", "Generated text, reassembled from the stream or body"),
    ("body_truncated", "INTEGER", "1 when a stored body was cut at HTTPTRACK_MAX_BODY_BYTES"),
    ("parse_notes", "TEXT", "What the parser could not read, if anything"),
    ("pid", "INTEGER", "Process id of the caller"),
)

COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _, _ in COLUMNS)
DESCRIPTIONS: dict[str, str] = {name: description for name, _, description in COLUMNS}
#: The token figures of a call (the normalized convention of DESIGN.md), in table order.
TOKEN_COLUMNS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "tokens_estimated",
)
#: Columns the ``calls`` table of every httptrack call log has had, since its first schema:
#: a ``calls`` table without them is someone else's (readers refuse it; the UI leaves it be).
CALL_LOG_COLUMNS = frozenset({"id", "started_at", "provider", "model", "status", "cost_usd", "latency_ms"})


# -- Indexes for reading (issue 23) -----------------------------------------------------------
# The one place where indexes are added to or dropped from ``calls`` (migration
# m004_read_indexes applies them; the earlier migrations' own are in ``_sqlite._INDEXES``
# and ``_views.INDEXES``). The writer pays for every index on every call: each one here
# answers something no rollup can, and the ones it makes unnecessary are dropped.

#: name -> columns. The calls page sorts by these (a click on a column's header) and pages
#: through them (``?_next=``): each walk starts where the last page ended and stops at the
#: page's end, ties in ``id`` order as datasette pages them (``_datasette/_pages``).
#: ``latency_ms`` also serves the ``slowest_calls`` view.
READ_INDEXES: dict[str, str] = {
    "idx_calls_cost": "cost_usd, id",
    "idx_calls_latency_ms": "latency_ms, id",
    "idx_calls_tokens": "total_tokens, id",
}
#: Indexes earlier schemas made that no reader needs any more: ``idx_calls_latency``
#: (``cached, latency_ms``): ``slowest_calls`` walks ``idx_calls_latency_ms`` instead.
DROPPED_INDEXES: tuple[str, ...] = ("idx_calls_latency",)
#: Indexes m006 drops, each answered by another index at no cost to the writer (each index
#: costs it on every call: ``idx_calls_day``, an expression, ~4-11 µs per row):
#: ``idx_calls_started_at`` (``started_at``): ``idx_calls_usage`` starts with ``started_at``
#: and gives the same order and ranges; ``idx_calls_day`` (``date(started_at)``): a day
#: (datasette's ``?started_at__date=``) is read as the range of ``started_at`` it is
#: (``_datasette/_pages.day_ranges``), the days' totals from the rollups.
WRITE_DROPPED_INDEXES: tuple[str, ...] = ("idx_calls_started_at", "idx_calls_day")
