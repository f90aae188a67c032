"""One call as a page that reads top to bottom (``/<db>/calls/<id>``): what happened (status,
error), who asked which model for what, tokens, cost and its prices, time, the cache, the
conversation and the answer, then the raw bodies and the calls related to it. Built from
the row here; laid out by ``templates/httptrack_call.html``."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from .._format import count, duration, money, short_time
from ..providers._conversation import Message, Part, request_conversation, response_tool_calls, tool_names

__all__ = ["RELATED_LIMIT", "Breakdown", "call_context", "cost_breakdown", "pretty_json", "related_calls"]

#: At most this many of a session's (or a cache key's) other calls are listed.
RELATED_LIMIT = 50
#: The output rate is shown only when generating took at least this long (ms).
MIN_RATE_MS = 50.0
_RELATED_COLUMNS = (
    "id, started_at, coalesce(response_model, model) AS model, status, http_status, cached, "
    "input_tokens, output_tokens, cost_usd, latency_ms, substr(response_text, 1, 200) AS response_text"
)

_OUTCOMES = {
    "cut_short": "The app stopped reading before the end: what arrived is recorded, "
    "and the tokens were counted locally.",
    "failed": "The response broke off while it was being read.",
    "transport_error": "No response arrived: the request failed before the provider answered.",
    "cache_miss": "Replay mode: the answer was not in httptrack's cache, and nothing was sent.",
}


def pretty_json(text: str | None) -> str:
    """A body or header set for reading: JSON indented; anything else (streams) as it is."""
    if not text:
        return ""
    if text.lstrip()[:1] in ("{", "["):
        try:
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except (ValueError, RecursionError):  # not JSON, or nested too deeply to indent
            pass
    return text


def _status_line(row: dict[str, Any]) -> dict[str, Any]:
    """The banner at the top: what kind of outcome, a headline, and why."""
    code = row.get("http_status")
    http = ""
    if code:
        try:
            http = f"HTTP {code} {HTTPStatus(code).phrase}"
        except ValueError:
            http = f"HTTP {code}"
    outcome = row.get("outcome") or "complete"
    if row.get("status") == "error":
        kind, headline = "error", "Failed"
    elif row.get("cached"):
        kind, headline = "cached", "Answered from httptrack's cache (nothing sent, nothing spent)"
    elif outcome != "complete":
        kind, headline = "warning", "Cut short"
    else:
        kind, headline = "success", "Succeeded"
    details = [
        d for d in (http, f"finished: {row['finish_reason']}" if row.get("finish_reason") else "") if d
    ]
    hints: list[tuple[str, str]] = []
    if kind == "error":  # what the provider said about when to try again
        headers = _loads(row.get("response_headers"))
        hints = [
            (name, str(value))
            for name, value in sorted(headers.items())
            if name in ("retry-after", "retry-after-ms") or "ratelimit" in name
        ]
    return {
        "kind": kind,
        "headline": headline,
        "hints": hints,
        "details": " · ".join(details),
        "code": row.get("error_code") or "",
        "message": row.get("error_message") or "",
        "explain": _OUTCOMES.get(outcome, ""),
    }


@dataclass
class Breakdown:
    """The cost of one call, line by line, at the price genai-prices gives for its model."""

    lines: list[tuple[str, str, str, str]]
    """(what, tokens, price per million tokens, cost)."""
    priced_as: str
    total: float
    matches: bool
    """The lines add up to the recorded cost (not, say, under a price override or a batch
    discount, which the recorded figure includes and the lines do not)."""


def cost_breakdown(row: dict[str, Any]) -> Breakdown | None:
    """``row``'s cost by kind of token at genai-prices' price for its model and date, or
    ``None`` (no usage, a model genai-prices does not know, a local model, tiered prices)."""
    if row.get("cached") or not row.get("cost_usd") or row.get("input_tokens") is None:
        return None
    try:
        import genai_prices

        from ..pricing._lookup import Entry, key_for, resolve

        # The genai-prices model the writer priced the call as (the same lookup).
        key = key_for(
            row.get("provider") or "", row.get("response_model") or row.get("model") or "", row.get("host")
        )
        entry = resolve(key.provider, key.model, key.host)
        if not isinstance(entry, Entry) or key.local is not None:
            return None
        inp, out = row.get("input_tokens") or 0, row.get("output_tokens") or 0
        read, write = row.get("cached_input_tokens") or 0, row.get("cache_write_tokens") or 0
        usage = genai_prices.Usage(
            input_tokens=inp, output_tokens=out, cache_read_tokens=read, cache_write_tokens=write
        )
        at = datetime.fromisoformat(str(row["started_at"]).replace("Z", "+00:00"))
        calc = entry.model.calc_price(usage, entry.provider, genai_request_timestamp=at)
    except Exception:  # unknown model, odd row: the page shows the recorded cost alone
        return None
    price = calc.model_price
    lines: list[tuple[str, str, str, str]] = []
    kinds = (
        ("input", inp - read - write, price.input_mtok),
        (
            "cache reads",
            read,
            price.cache_read_mtok if price.cache_read_mtok is not None else price.input_mtok,
        ),
        (
            "cache writes",
            write,
            price.cache_write_mtok if price.cache_write_mtok is not None else price.input_mtok,
        ),
        ("output", out, price.output_mtok),
    )
    for name, tokens, per_million in kinds:
        if not tokens:
            continue
        if per_million is not None and not isinstance(per_million, Decimal):
            return None  # tiered prices: the lines would not be one price each
        rate = float(per_million or 0)
        lines.append((name, count(tokens), money(rate), money(rate * tokens / 1e6)))
    total = float(calc.total_price)
    recorded = float(row["cost_usd"])
    matches = abs(total - recorded) <= 1e-9 + 1e-6 * abs(recorded)
    return Breakdown(lines, f"{calc.provider.name} {calc.model.id}", total, matches)


def _tokens(row: dict[str, Any]) -> list[tuple[str, str]]:
    if row.get("input_tokens") is None and row.get("output_tokens") is None:
        return []
    lines = [("input", count(row.get("input_tokens")))]
    for key, label in (
        ("cached_input_tokens", "read from the prompt cache"),
        ("cache_write_tokens", "written to it"),
    ):
        if row.get(key):
            lines.append((f"… {label}", count(row[key])))
    lines.append(("output", count(row.get("output_tokens"))))
    if row.get("reasoning_tokens"):
        lines.append(("… reasoning", count(row["reasoning_tokens"])))
    lines.append(("total", count(row.get("total_tokens"))))
    return lines


def _timing(row: dict[str, Any]) -> list[tuple[str, str]]:
    lines = [("latency", duration(row.get("latency_ms")))]
    ttft = row.get("ttft_ms")
    if ttft is not None:
        lines.append(("first token after" if row.get("stream") else "first byte after", duration(ttft)))
        generating = (row.get("latency_ms") or 0) - ttft
        if row.get("output_tokens") and generating >= MIN_RATE_MS:
            lines.append(("output rate", f"{row['output_tokens'] * 1000 / generating:,.0f} tokens/s"))
    return lines


def _cache(row: dict[str, Any]) -> str:
    if row.get("cached"):
        saved = row.get("cost_saved_usd")
        return "hit: served by httptrack, not sent" + (f"; saved {money(saved)}" if saved else "")
    if row.get("cache_key"):
        return "miss: sent to the provider"
    return "not used"


def _loads(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _answer_text(text: str, calls: list[Part]) -> str:
    """The generated text without the tool calls the recorder wrote into it (shown apart)."""
    for call in calls:
        if call.raw:
            text = text.replace(call.raw, "", 1)
    return text.strip() if calls else text


def related_calls(conn: sqlite3.Connection, column: str, value: Any, this: str) -> list[dict[str, Any]]:
    """The calls with the same ``session`` or ``cache_key`` as the call ``this``, oldest
    first, that one among them (marked); ``[]`` when it is alone, or when ``column`` has no
    index (a scan of a big log is no job for a page that should open at once: the page
    links to the filtered list instead)."""
    if not value or column not in ("session", "cache_key") or not _indexed(conn, column):
        return []
    cursor = conn.execute(
        f"SELECT {_RELATED_COLUMNS} FROM calls WHERE {column} = ? ORDER BY started_at, id LIMIT ?",
        [value, RELATED_LIMIT],
    )
    names = [d[0] for d in cursor.description]
    calls = [_related(dict(zip(names, r, strict=True)), this) for r in cursor.fetchall()]
    return calls if len(calls) > 1 else []


def _indexed(conn: sqlite3.Connection, column: str) -> bool:
    """Whether an index of ``calls`` starts with ``column``."""
    for index in conn.execute("SELECT name FROM pragma_index_list('calls')").fetchall():
        first = conn.execute("SELECT name FROM pragma_index_info(?) WHERE seqno = 0", [index[0]]).fetchone()
        if first and first[0] == column:
            return True
    return False


def _related(row: dict[str, Any], this: str) -> dict[str, Any]:
    status = "cached" if row["cached"] else row["status"]
    if row["status"] == "error" and row["http_status"]:
        status = f"error {row['http_status']}"
    return {
        "id": row["id"],
        "this": row["id"] == this,
        "time": short_time(row["started_at"]),
        "model": row["model"] or "-",
        "status": status,
        "error": row["status"] == "error",
        "tokens": f"{count(row['input_tokens'])} → {count(row['output_tokens'])}",
        "cost": money(row["cost_usd"]),
        "latency": duration(row["latency_ms"]),
        "text": " ".join((row["response_text"] or "").split())[:120],
    }


def call_context(row: dict[str, Any]) -> dict[str, Any]:
    """What ``httptrack_call.html`` shows of one ``calls`` row (without the related calls)."""
    model = row.get("model") or "-"
    answered = row.get("response_model")
    cost = row.get("cost_usd")
    unknown = "not priced" if row.get("status") == "success" else "-"
    cost_text = unknown if cost is None else money(cost)
    conversation: list[Message] = request_conversation(row.get("request_body"))
    calls = response_tool_calls(row.get("response_body"))
    properties = _loads(row.get("properties"))
    return {
        "id": row["id"],
        "time": short_time(row.get("started_at")),
        "status": _status_line(row),
        "call": [
            ("provider", f"{row.get('provider') or '-'} ({row.get('host') or '-'})"),
            ("operation", (row.get("operation") or "other") + (", streamed" if row.get("stream") else "")),
            ("request", f"{row.get('method') or ''} {row.get('endpoint') or row.get('url') or ''}".strip()),
        ],
        "model": model,
        "response_model": answered if answered and answered != model else None,
        "attribution": [(k, row.get(k)) for k in ("user", "service", "session")],
        "properties": sorted(properties.items()),
        "tokens": _tokens(row),
        "estimated": bool(row.get("tokens_estimated")),
        "cost": cost_text,
        "cost_note": row.get("cost_note") or "",
        "breakdown": cost_breakdown(row),
        "saved": money(row["cost_saved_usd"]) if row.get("cost_saved_usd") else "",
        "timing": _timing(row),
        "cache": _cache(row),
        "cache_key": row.get("cache_key") or "",
        "conversation": conversation,
        "tools": tool_names(row.get("request_body")),
        "response_text": _answer_text(row.get("response_text") or "", calls),
        "response_tool_calls": calls,
        "finish_reason": row.get("finish_reason") or "",
        "ids": [(k, row.get(k)) for k in ("request_id", "response_id") if row.get(k)],
        "sizes": f"{count(row.get('request_bytes'))} bytes sent, {count(row.get('response_bytes'))} received"
        + (" (bodies cut at the size cap)" if row.get("body_truncated") else ""),
        "notes": row.get("parse_notes") or "",
        "raw": [
            (title, pretty_json(row.get(column)), row.get(column) is not None)
            for title, column in (
                ("Request body", "request_body"),
                ("Response body" + (" (as streamed)" if row.get("stream") else ""), "response_body"),
                ("Request headers", "request_headers"),
                ("Response headers", "response_headers"),
            )
        ],
    }
