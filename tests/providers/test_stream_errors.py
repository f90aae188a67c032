"""A stream that ends in an error keeps the usage that arrived with the error: the call is an
error, and its figures are the ones the provider billed, not a local estimate. (OpenRouter's
recorded error chunk is a fixture: openrouter/openrouter_stream_error_chunk_usage_recorded.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from helpers import one_row

import httptrack


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)


def replay(db: Path, url: str, request: dict[str, Any], body: bytes) -> dict[str, Any]:
    def handler(sent: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    transport = httptrack.TrackingTransport(
        httpx2.MockTransport(handler), db=db, cache=False, include_usage=False
    )
    with httpx2.Client(transport=transport) as client:
        client.post(url, json=request)
    transport.close()
    return one_row(db)


def test_groq_error_beside_its_usage(db: Path) -> None:
    base = {"id": "c", "object": "chat.completion.chunk", "model": "llama-3.1-8b-instant"}
    body = sse(
        {**base, "choices": [{"index": 0, "delta": {"content": "Par"}, "finish_reason": None}]},
        {
            **base,
            "choices": [],
            "x_groq": {
                "error": {"message": "stream stopped", "type": "internal_server_error"},
                "usage": {"prompt_tokens": 21, "completion_tokens": 4, "total_tokens": 25},
            },
        },
    )
    row = replay(
        db,
        "https://api.groq.com/openai/v1/chat/completions",
        {"model": "llama-3.1-8b-instant", "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
        body,
    )
    assert (row["status"], row["error_code"]) == ("error", "internal_server_error")
    assert (row["input_tokens"], row["output_tokens"], row["tokens_estimated"]) == (21, 4, 0)


def test_gemini_error_chunk_with_usage_metadata(db: Path) -> None:
    usage = {"promptTokenCount": 12, "candidatesTokenCount": 3, "totalTokenCount": 15}
    body = sse(
        {
            "candidates": [{"content": {"parts": [{"text": "Par"}], "role": "model"}}],
            "modelVersion": "gemini-2.0-flash",
        },
        {"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}, "usageMetadata": usage},
    )
    row = replay(
        db,
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]},
        body,
    )
    assert (row["status"], row["error_code"]) == ("error", "INTERNAL")
    assert (row["input_tokens"], row["output_tokens"], row["tokens_estimated"]) == (12, 3, 0)


@pytest.mark.parametrize("chunk_usage", [True, False])
def test_openai_style_error_chunk(chunk_usage: bool, db: Path) -> None:
    """With usage on the error chunk, it is the call's; without, what arrived is counted."""
    base = {"id": "gen-1", "object": "chat.completion.chunk", "model": "gpt-4o-mini"}
    error: dict[str, Any] = {
        **base,
        "error": {"code": "server_error", "message": "Provider disconnected"},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    }
    if chunk_usage:
        error["usage"] = {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32}
    body = sse(
        {**base, "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]}, error
    )
    row = replay(
        db,
        "https://openrouter.ai/api/v1/chat/completions",
        {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
        body,
    )
    assert (row["status"], row["error_code"]) == ("error", "server_error")
    if chunk_usage:
        assert (row["input_tokens"], row["output_tokens"], row["tokens_estimated"]) == (30, 2, 0)
    else:
        assert row["tokens_estimated"] == 1 and row["input_tokens"] != 30
