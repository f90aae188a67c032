"""Prices that depend on how a call ran, not only on its tokens: OpenAI's service tiers
(flex, priority), Anthropic's fast mode, audio billed by the second (whisper-1) and speech
billed by the character (tts-1). Each row's cost is genai-prices' own figure for the same
usage and price variant; usage no price covers is NULL with the reason, never a silent 0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import genai_prices
import httpx2
import pytest
from helpers import chunk_stream, one_row

import httptrack

OPENAI_CHAT = "https://api.openai.com/v1/chat/completions"


def record(
    db: Path, url: str, request: dict[str, Any], body: bytes, content_type: str = "application/json"
) -> dict[str, Any]:
    def handler(req: Any) -> Any:
        return httpx2.Response(
            200, headers={"content-type": content_type}, stream=chunk_stream(httpx2, [body])
        )

    transport = httptrack.TrackingTransport(
        httpx2.MockTransport(handler), db=db, cache=False, include_usage=False
    )
    with httpx2.Client(transport=transport) as client:
        reply = client.post(url, json=request, headers={"authorization": "Bearer sk-test"})
        assert reply.content == body
    return one_row(db)


def genai(model: str, provider: str, context: dict[str, str] | None = None, **usage: float) -> float:
    return float(
        genai_prices.calc_price(
            genai_prices.Usage(**usage), model, provider_id=provider, price_context=context
        ).total_price
    )


def chat_body(tier: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-5-2025-08-07",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 1024},
            "completion_tokens_details": {"reasoning_tokens": 128},
        },
    }
    if tier is not None:
        body["service_tier"] = tier
    return body


@pytest.mark.parametrize("tier", ["flex", "priority"])
def test_openai_service_tier_the_response_names_is_priced_at_that_tier(tier: str, db: Path) -> None:
    # Asked for "auto": the response says which tier served (and bills) the call.
    row = record(
        db, OPENAI_CHAT, {"model": "gpt-5", "service_tier": "auto"}, json.dumps(chat_body(tier)).encode()
    )
    expected = genai(
        "gpt-5",
        "openai",
        {"service_tier": tier},
        input_tokens=1200,
        output_tokens=300,
        cache_read_tokens=1024,
    )
    standard = genai("gpt-5", "openai", input_tokens=1200, output_tokens=300, cache_read_tokens=1024)
    assert expected != standard  # the variant is a price of its own
    assert row["cost_usd"] == expected
    assert f"service_tier {tier} price" in row["cost_note"]


@pytest.mark.parametrize("tier", ["default", None])
def test_openai_default_tier_is_the_standard_price_without_a_note(tier: str | None, db: Path) -> None:
    row = record(db, OPENAI_CHAT, {"model": "gpt-5"}, json.dumps(chat_body(tier)).encode())
    assert row["cost_usd"] == genai(
        "gpt-5", "openai", input_tokens=1200, output_tokens=300, cache_read_tokens=1024
    )
    assert row["cost_note"] is None


def test_a_requested_tier_prices_the_call_when_the_response_does_not_say(db: Path) -> None:
    row = record(
        db, OPENAI_CHAT, {"model": "gpt-5", "service_tier": "flex"}, json.dumps(chat_body(None)).encode()
    )
    assert row["cost_usd"] == genai(
        "gpt-5",
        "openai",
        {"service_tier": "flex"},
        input_tokens=1200,
        output_tokens=300,
        cache_read_tokens=1024,
    )


def test_a_tier_with_no_price_of_its_own_is_the_standard_price_with_a_note(db: Path) -> None:
    body = chat_body("flex")
    body["model"] = "gpt-4o-2024-08-06"  # genai-prices has priority but no flex price for gpt-4o
    row = record(db, OPENAI_CHAT, {"model": "gpt-4o"}, json.dumps(body).encode())
    assert row["cost_usd"] == genai(
        "gpt-4o", "openai", input_tokens=1200, output_tokens=300, cache_read_tokens=1024
    )
    assert row["cost_note"] == "service_tier flex: no price of its own known, standard price"


def test_openai_stream_tier_is_read_from_the_usage_chunk(db: Path) -> None:
    chunks = [
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": "gpt-5-2025-08-07",
            "service_tier": "priority",
            "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
        },
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": "gpt-5-2025-08-07",
            "service_tier": "priority",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        },
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": "gpt-5-2025-08-07",
            "service_tier": "priority",
            "choices": [],
            "usage": {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57},
        },
    ]
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    row = record(db, OPENAI_CHAT, {"model": "gpt-5", "stream": True}, body, "text/event-stream")
    assert (row["input_tokens"], row["output_tokens"], row["tokens_estimated"]) == (50, 7, 0)
    assert row["cost_usd"] == genai(
        "gpt-5", "openai", {"service_tier": "priority"}, input_tokens=50, output_tokens=7
    )


def test_anthropic_fast_mode_is_priced_at_the_fast_price(db: Path) -> None:
    model = "claude-opus-5"
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": 100,
            "cache_read_input_tokens": 2000,
            "cache_creation_input_tokens": 0,
            "output_tokens": 40,
            "speed": "fast",
        },
    }
    row = record(
        db,
        "https://api.anthropic.com/v1/messages",
        {"model": model, "speed": "fast"},
        json.dumps(message).encode(),
    )
    expected = genai(
        model, "anthropic", {"speed": "fast"}, input_tokens=2100, output_tokens=40, cache_read_tokens=2000
    )
    assert expected != genai(model, "anthropic", input_tokens=2100, output_tokens=40, cache_read_tokens=2000)
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (2100, 2000, 40)
    assert row["cost_usd"] == expected
    assert "speed fast price" in row["cost_note"]


def test_whisper_is_priced_by_the_seconds_of_audio(db: Path) -> None:
    row = record(
        db,
        "https://api.openai.com/v1/audio/transcriptions",
        {"model": "whisper-1"},
        json.dumps({"text": "hello there", "usage": {"type": "duration", "seconds": 61}}).encode(),
    )
    assert row["cost_usd"] == genai("whisper-1", "openai", audio_seconds=61, input_audio_seconds=61) == 0.0061
    assert row["input_tokens"] is None and row["output_tokens"] is None


def test_tts_is_priced_by_the_characters_of_the_input(db: Path) -> None:
    text = "The quick brown fox jumps ov"  # 28 characters
    row = record(
        db,
        "https://api.openai.com/v1/audio/speech",
        {"model": "tts-1", "input": text, "voice": "alloy"},
        b"ID3\x04fake-mp3-bytes",
        "audio/mpeg",
    )
    assert row["cost_usd"] == genai("tts-1", "openai", input_characters=28) == 0.00042


def test_speech_no_price_covers_is_null_with_the_reason_not_zero(db: Path) -> None:
    # gpt-4o-mini-tts is priced by tokens, which the speech response does not report.
    row = record(
        db,
        "https://api.openai.com/v1/audio/speech",
        {"model": "gpt-4o-mini-tts", "input": "hello", "voice": "alloy"},
        b"ID3\x04fake-mp3-bytes",
        "audio/mpeg",
    )
    assert row["cost_usd"] is None
    assert row["cost_note"] == "no price for input_characters of 'gpt-4o-mini-tts'"
