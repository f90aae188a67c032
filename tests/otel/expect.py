"""What a call's span must say, written out from its row (independently of httptrack's own
mapping in ``otel/_conventions``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .receiver import Span

SPAN_KIND_CLIENT = 3
STATUS_ERROR = 2


def expected_attributes(
    row: dict[str, Any], provider: str, operation: str, *, latest: bool = False
) -> dict[str, Any]:
    """What the conventions (and httptrack's own names) say of this row, written out here."""
    host, _, port = row["host"].partition(":")
    expected: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": row["model"],
        "gen_ai.response.model": row["response_model"],
        "gen_ai.usage.input_tokens": row["input_tokens"],
        "gen_ai.usage.output_tokens": row["output_tokens"],
        "gen_ai.usage.cache_read.input_tokens": row["cached_input_tokens"],
        "gen_ai.usage.cache_creation.input_tokens": row["cache_write_tokens"],
        "gen_ai.usage.reasoning.output_tokens": row["reasoning_tokens"],
        "gen_ai.response.finish_reasons": (row["finish_reason"],) if row["finish_reason"] else None,
        "gen_ai.response.id": row["response_id"],
        "gen_ai.conversation.id": row["session"],
        "server.address": host,
        "server.port": int(port) if port else 443,
        "http.response.status_code": row["http_status"],
        "httptrack.call_id": row["id"],
        "httptrack.cost_usd": row["cost_usd"],
        "httptrack.cost_saved_usd": row["cost_saved_usd"],
        "httptrack.cached": bool(row["cached"]),
        "httptrack.user": row["user"],
        "httptrack.service": row["service"],
        "httptrack.session": row["session"],
        "httptrack.properties": row["properties"],
        "httptrack.outcome": row["outcome"],
        "httptrack.request_id": row["request_id"],
        "httptrack.ttft_ms": row["ttft_ms"],
        "httptrack.tokens_estimated": True if row["tokens_estimated"] else None,
        "error.type": (row["error_code"] or str(row["http_status"])) if row["status"] == "error" else None,
    }
    if not latest:
        expected["gen_ai.system"] = provider
    return {k: v for k, v in expected.items() if v is not None}


def started_ns(row: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(row["started_at"].replace("Z", "+00:00")).timestamp() * 1e9)


def check_span(
    span: Span,
    row: dict[str, Any],
    provider: str,
    operation: str = "chat",
    service: str = "otel-test-app",
    **kw: Any,
) -> None:
    assert span.resource["service.name"] == service
    assert span.name == f"{operation} {row['model']}"
    assert span.kind == SPAN_KIND_CLIENT
    assert span.scope == "httptrack"
    assert span.attributes == expected_attributes(row, provider, operation, **kw)
    # Real times: the row's start (stored to the millisecond) and its measured latency.
    assert abs(span.start_ns - started_ns(row)) < 1_000_000
    assert abs((span.end_ns - span.start_ns) / 1e6 - row["latency_ms"]) < 0.01
    if row["status"] == "error":
        assert span.status_code == STATUS_ERROR
