"""The fake Anthropic API: messages (plain and streaming), count_tokens, models."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._common import (
    _ANTHROPIC_MODELS,
    _CREATED_ISO,
    _REQUEST_ID,
    _RETRYABLE,
    FakeResponse,
    _as_list,
    _Call,
    _content_tokens,
    _json,
    _last_user_text,
    _reply_tokens,
    _sse,
    _stream,
    count_tokens,
)

__all__ = []


def _anthropic_headers(status: int = 200) -> list[tuple[str, str]]:
    headers = [
        ("request-id", _REQUEST_ID),
        ("anthropic-organization-id", "00000000-0000-4000-8000-000000000000"),
        ("anthropic-ratelimit-requests-limit", "4000"),
        ("anthropic-ratelimit-requests-remaining", "3999"),
        ("anthropic-ratelimit-requests-reset", _CREATED_ISO),
    ]
    if status == 429 or status >= 500:
        headers.extend(_RETRYABLE)
    return headers


def _anthropic_error(status: int, type_: str, message: str) -> FakeResponse:
    obj = {"type": "error", "error": {"type": type_, "message": message}, "request_id": _REQUEST_ID}
    return _json(status, obj, _anthropic_headers(status))


def _anthropic_behavior_error(call: _Call) -> FakeResponse | None:
    behavior = call.behavior
    if behavior == "missing-model":
        return _anthropic_error(404, "not_found_error", f"model: {call.model}")
    if behavior == "rate-limited":
        return _anthropic_error(
            429,
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests per minute.",
        )
    if behavior == "server-error":
        return _anthropic_error(500, "api_error", "Internal server error")
    if behavior == "overloaded":
        return _anthropic_error(529, "overloaded_error", "Overloaded")
    return None


@dataclass(slots=True)
class _AnthropicPrompt:
    total: int
    cached: int  # tokens up to and including the last cache_control breakpoint
    ttl_1h: bool


def _anthropic_prompt(data: dict[str, Any]) -> _AnthropicPrompt:
    """Size of tools + system + messages, and of the prefix up to the last ``cache_control``."""
    total, cached, ttl_1h = 3, 0, False

    def add(tokens: int, block: Any) -> None:
        nonlocal total, cached, ttl_1h
        total += tokens
        control = block.get("cache_control") if isinstance(block, dict) else None
        if isinstance(control, dict):
            cached, ttl_1h = total, control.get("ttl") == "1h"

    for tool in _as_list(data.get("tools")):
        clean = {k: v for k, v in tool.items() if k != "cache_control"} if isinstance(tool, dict) else tool
        add(count_tokens(json.dumps(clean, sort_keys=True)), tool)
    system = data.get("system")
    if isinstance(system, str):
        add(count_tokens(system), None)
    for block in _as_list(system):
        add(_content_tokens(block), block)
    for message in _as_list(data.get("messages")):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and content:
            for index, block in enumerate(content):
                add((4 if index == 0 else 0) + _content_tokens(block), block)
        else:
            add(4 + _content_tokens(content), None)
    top = data.get("cache_control")
    if isinstance(top, dict):  # automatic caching: the breakpoint moves to the last block
        cached, ttl_1h = total, top.get("ttl") == "1h"
    return _AnthropicPrompt(total, cached, ttl_1h)


def _anthropic_invalid(call: _Call) -> FakeResponse | None:
    data = call.data
    if not call.model:
        return _anthropic_error(400, "invalid_request_error", "model: Field required")
    if "max_tokens" not in data and call.path.endswith("/messages"):
        return _anthropic_error(400, "invalid_request_error", "max_tokens: Field required")
    if not isinstance(data.get("messages"), list):
        return _anthropic_error(400, "invalid_request_error", "messages: Field required")
    return None


def _anthropic_messages(call: _Call) -> FakeResponse:
    data, model = call.data, call.model
    messages = _as_list(data.get("messages"))
    prompt = _anthropic_prompt(data)
    mode = call.cache_mode
    cache_read = prompt.cached if mode == "read" else 0
    cache_write = prompt.cached if mode == "write" else 0
    input_tokens = prompt.total - cache_read - cache_write
    pieces, cut = _reply_tokens(_last_user_text(messages), data.get("max_tokens"))
    stop_reason = "max_tokens" if cut else "end_turn"
    usage = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": 0 if prompt.ttl_1h else cache_write,
            "ephemeral_1h_input_tokens": cache_write if prompt.ttl_1h else 0,
        },
        "output_tokens": len(pieces),
        "service_tier": "standard",
    }
    message = {
        "id": "msg_fake0001",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "".join(pieces)}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
    if not data.get("stream"):
        return _json(200, message, _anthropic_headers())
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    chunks = [
        _sse({"type": "message_start", "message": start}, "message_start"),
        _sse(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            "content_block_start",
        ),
        b'event: ping\ndata: {"type": "ping"}\n\n',  # sic: the real API puts a space here
    ]
    chunks += [
        _sse(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
            "content_block_delta",
        )
        for piece in pieces
    ]
    delta_usage = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": len(pieces),
    }
    chunks += [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": delta_usage,
            },
            "message_delta",
        ),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return _stream(chunks, _anthropic_headers(), "text/event-stream; charset=utf-8")


def _anthropic_count_tokens(call: _Call) -> FakeResponse:
    return _json(200, {"input_tokens": _anthropic_prompt(call.data).total}, _anthropic_headers())


def _anthropic_model(model_id: str) -> dict[str, Any] | None:
    for mid, name, created in _ANTHROPIC_MODELS:
        if mid == model_id:
            return {"type": "model", "id": mid, "display_name": name, "created_at": created}
    return None


def _anthropic_models(call: _Call) -> FakeResponse:
    data = [_anthropic_model(mid) for mid, _, _ in _ANTHROPIC_MODELS]
    obj = {
        "data": data,
        "has_more": False,
        "first_id": _ANTHROPIC_MODELS[0][0],
        "last_id": _ANTHROPIC_MODELS[-1][0],
    }
    return _json(200, obj, _anthropic_headers())
