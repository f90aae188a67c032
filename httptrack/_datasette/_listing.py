"""The calls of a call log as a list a person scans (``/<db>/calls``): one line per call
with its time, provider, model, status, tokens, cost, latency, user, service and the start
of its prompt, each linking to the call's page. Laid out by ``templates/httptrack_list.html``
inside datasette's own table page, so its facets, filters, search and paging stay."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .._format import count, duration, money
from ..log._bodies import body_text
from ..providers._conversation import request_conversation

__all__ = ["LIST_NEEDS", "list_rows", "prompt_snippet"]

#: The columns a list row is made from: without any of them (``?_col=`` picked others),
#: datasette's own table is shown.
LIST_NEEDS = frozenset(
    {
        "id",
        "started_at",
        "provider",
        "model",
        "response_model",
        "status",
        "http_status",
        "error_code",
        "error_message",
        "outcome",
        "cached",
        "input_tokens",
        "output_tokens",
        "tokens_estimated",
        "cost_usd",
        "latency_ms",
        "user",
        "service",
        "request_body",
        "operation",
    }
)
SNIPPET_CHARS = 160
#: Bodies longer than this are not parsed for a snippet (a page shows 50 calls).
_MAX_PARSE = 1 << 20


def prompt_snippet(body: str | bytes | None) -> str:
    """The start of the last thing the user said (a chat's last user message, a prompt, an
    embedding's input), on one line. ``body`` as stored: text, or compressed (bytes)."""
    text: str | None = body_text(body)
    if not text or len(text) > _MAX_PARSE:
        return ""
    for message in reversed(request_conversation(text)):
        if message.role in ("user", "input"):
            text = " ".join(p.text for p in message.parts if p.kind == "text")
            if not text:  # a user turn that only carries tool results
                text = " ".join(p.text for p in message.parts if p.kind == "tool_result")
            text = " ".join(text.split())
            if text:
                return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"
    return ""


#: An error's status when the outcome says more than its HTTP status.
_ERROR_OUTCOMES = {"failed": "broken off", "transport_error": "no response", "cache_miss": "cache miss"}


def _status(row: Mapping[str, Any]) -> tuple[str, str]:
    """(text, kind) of a call's status: ``200``, ``error 429``, ``broken off``, ``cached``,
    ``cut short``."""
    outcome = row["outcome"] or "complete"
    if row["status"] == "error":
        if outcome in _ERROR_OUTCOMES:
            return _ERROR_OUTCOMES[outcome], "error"
        return (f"error {row['http_status']}" if row["http_status"] else "error"), "error"
    if row["cached"]:
        return "cached", "cached"
    if outcome != "complete":
        return outcome.replace("_", " "), "warning"
    return (str(row["http_status"]) if row["http_status"] else "ok"), ""


def list_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """The list's lines for datasette's page rows, or ``None`` when the rows lack a column
    the list needs."""
    out = []
    for row in rows:
        if not set(row.keys()) >= LIST_NEEDS:
            return None
        status, kind = _status(row)
        estimated = "~" if row["tokens_estimated"] else ""
        tokens = ""
        if row["input_tokens"] is not None or row["output_tokens"] is not None:
            tokens = f"{estimated}{count(row['input_tokens'])} → {count(row['output_tokens'])}"
        model = row["model"] or "-"
        answered = row["response_model"]
        error = " ".join(x for x in (row["error_code"], row["error_message"]) if x)
        cost = row["cost_usd"]
        out.append(
            {
                "id": row["id"],
                "time": (row["started_at"] or "")[:19].replace("T", " "),
                "provider": row["provider"] or "-",
                "model": model,
                "model_title": f"{model} → {answered}" if answered and answered != model else model,
                "status": status,
                "kind": kind,
                "error": error,
                "tokens": tokens,
                "cost": money(cost) if cost is not None else ("?" if row["status"] == "success" else "-"),
                "latency": duration(row["latency_ms"]),
                "user": row["user"] or "",
                "service": row["service"] or "",
                "prompt": prompt_snippet(row["request_body"]) or (row["operation"] or ""),
            }
        )
    return out
