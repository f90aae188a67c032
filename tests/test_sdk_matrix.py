"""Every supported SDK × sync/async × plain/stream, used as its users use it, each call
checked figure for figure on its one ``calls`` row.

openai and anthropic run on httpx2, ollama and groq on httpx (their own clients, default
hosts, so the provider is known by host). The server is a MockTransport handler that waits
``HEADERS_DELAY`` before answering and, for streams, ``FIRST_CHUNK_DELAY`` more before the
first chunk, so latency and time to first token have known lower bounds; the wall time of
the app's call is their upper bound. Bodies are shaped as each provider's API reference
shows them, with cache reads/writes and reasoning tokens where the provider reports them.
Expected figures are literals (normalized per DESIGN.md: Anthropic's cache tokens added to
the input, ``None`` where the provider says nothing); costs are genai-prices' own figures.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import anthropic
import groq
import httpx
import httpx2
import ollama
import openai
import pytest
from helpers import genai_price, one_row

import httptrack


@pytest.fixture
def db(log_db: Path | str) -> Path | str:
    """Every test here runs on both engines: a SQLite file, and a Postgres log (a real
    throwaway server, tests/pg_server.py)."""
    return log_db


HEADERS_DELAY = 0.030  # seconds before the response (status and headers) comes back
FIRST_CHUNK_DELAY = 0.020  # seconds more before a stream's first chunk
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
SYSTEM = "You answer geography questions in one short sentence. " * 60
TEXT = "The capital of France is Paris."
PIECES = ["The", " capital", " of", " France", " is", " Paris", "."]


def pause(seconds: float) -> None:
    """Sleep at least ``seconds`` by the clock httptrack times with."""
    deadline = time.perf_counter() + seconds
    while (left := deadline - time.perf_counter()) > 0:
        time.sleep(left)


async def apause(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while (left := deadline - time.perf_counter()) > 0:
        await asyncio.sleep(left)


def sse(data: Any, event: str | None = None) -> bytes:
    prefix = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{prefix}data: {payload}\n\n".encode()


# -- OpenAI: chat completions (openai on httpx2) -------------------------------------------
# Plain: a reasoning model reading most of its prompt from the prompt cache. Stream: the app
# does not ask for usage; httptrack adds stream_options.include_usage, and the server sends
# the usage chunk only because of it.

OPENAI_HEADERS = [("x-request-id", "req_7f1c2a9e4b3d4e0f8a6b5c4d3e2f1a0b"), ("openai-processing-ms", "412")]


def openai_answer(body: dict[str, Any], stream: bool) -> tuple[list[tuple[str, str]], list[bytes]]:
    if not stream:
        reply = {
            "id": "chatcmpl-BxQ3v1ZkYc8Lw2Hn5Tq0Rj7Ue9Pa",
            "object": "chat.completion",
            "created": 1754000000,
            "model": "o4-mini-2025-04-16",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": TEXT, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 1180,
                "completion_tokens": 250,
                "total_tokens": 1430,
                "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 192,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": None,
        }
        return [("content-type", "application/json"), *OPENAI_HEADERS], [json.dumps(reply).encode()]
    base = {
        "id": "chatcmpl-BxQ4a8MpWd2Ks6Jy1Fr3Nh5Tg0Lb",
        "object": "chat.completion.chunk",
        "created": 1754000001,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "system_fingerprint": "fp_34a54ae93c",
    }
    with_usage = (body.get("stream_options") or {}).get("include_usage") is True

    def chunk(choices: list[Any], usage: dict[str, Any] | None = None) -> bytes:
        return sse({**base, "choices": choices, **({"usage": usage} if with_usage else {})})

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[Any]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    chunks = [chunk(choice({"role": "assistant", "content": "", "refusal": None}))]
    chunks += [chunk(choice({"content": piece})) for piece in PIECES]
    chunks.append(chunk(choice({}, "stop")))
    if with_usage:
        usage = {
            "prompt_tokens": 1290,
            "completion_tokens": 8,
            "total_tokens": 1298,
            "prompt_tokens_details": {"cached_tokens": 1152, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        chunks.append(chunk([], usage))
    chunks.append(sse("[DONE]"))
    return [("content-type", "text/event-stream; charset=utf-8"), *OPENAI_HEADERS], chunks


def openai_client(transport: Any, asynchronous: bool) -> Any:
    if asynchronous:
        return openai.AsyncOpenAI(api_key="sk-test", http_client=httpx2.AsyncClient(transport=transport))
    return openai.OpenAI(api_key="sk-test", http_client=httpx2.Client(transport=transport))


def openai_args(stream: bool) -> dict[str, Any]:
    if stream:  # no stream_options: what httptrack adds, the app never sees
        return {"model": "gpt-4o-mini", "messages": QUESTION, "stream": True}
    return {"model": "o4-mini", "messages": [{"role": "developer", "content": SYSTEM}, *QUESTION]}


def chat_text(reply: Any) -> str:
    return reply.choices[0].message.content  # type: ignore[no-any-return]


def chat_delta(chunk: Any) -> str:
    assert chunk.usage is None  # the injected usage chunk is kept from the app
    return chunk.choices[0].delta.content or "" if chunk.choices else ""


def openai_call(client: Any, stream: bool) -> str:
    reply = client.chat.completions.create(**openai_args(stream))
    return "".join(chat_delta(c) for c in reply) if stream else chat_text(reply)


async def openai_acall(client: Any, stream: bool) -> str:
    reply = await client.chat.completions.create(**openai_args(stream))
    return "".join([chat_delta(c) async for c in reply]) if stream else chat_text(reply)


# -- Anthropic: messages (anthropic on httpx2) ---------------------------------------------
# Plain: a cached system prompt read and a new block written. Stream: the input figures in
# message_start, the output in message_delta (the documented {"output_tokens": N} form).

ANTHROPIC_HEADERS = [("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy"), ("anthropic-organization-id", "org-1")]


def anthropic_answer(body: dict[str, Any], stream: bool) -> tuple[list[tuple[str, str]], list[bytes]]:
    if not stream:
        message = {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6",
            "content": [{"type": "text", "text": TEXT}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 21,
                "cache_creation_input_tokens": 310,
                "cache_read_input_tokens": 1800,
                "cache_creation": {"ephemeral_5m_input_tokens": 310, "ephemeral_1h_input_tokens": 0},
                "output_tokens": 12,
                "service_tier": "standard",
            },
        }
        return [("content-type", "application/json"), *ANTHROPIC_HEADERS], [json.dumps(message).encode()]
    start = {
        "id": "msg_01Ka8rYv3bQ7ZtWm2Hc5NdPx",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 14,
            "cache_creation_input_tokens": 512,
            "cache_read_input_tokens": 1536,
            "cache_creation": {"ephemeral_5m_input_tokens": 512, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 1,
            "service_tier": "standard",
        },
    }
    chunks = [
        sse({"type": "message_start", "message": start}, "message_start"),
        sse(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            "content_block_start",
        ),
        b'event: ping\ndata: {"type": "ping"}\n\n',
    ]
    chunks += [
        sse(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
            "content_block_delta",
        )
        for piece in PIECES
    ]
    chunks += [
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 9},
            },
            "message_delta",
        ),
        sse({"type": "message_stop"}, "message_stop"),
    ]
    return [("content-type", "text/event-stream; charset=utf-8"), *ANTHROPIC_HEADERS], chunks


def anthropic_client(transport: Any, asynchronous: bool) -> Any:
    if asynchronous:
        return anthropic.AsyncAnthropic(
            api_key="sk-ant-test", http_client=httpx2.AsyncClient(transport=transport)
        )
    return anthropic.Anthropic(api_key="sk-ant-test", http_client=httpx2.Client(transport=transport))


def anthropic_args(stream: bool) -> dict[str, Any]:
    system = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
    model = "claude-haiku-4-5" if stream else "claude-sonnet-4-6"
    return {"model": model, "max_tokens": 256, "system": system, "messages": QUESTION}


def anthropic_call(client: Any, stream: bool) -> str:
    if not stream:
        return client.messages.create(**anthropic_args(stream)).content[0].text  # type: ignore[no-any-return]
    with client.messages.stream(**anthropic_args(stream)) as events:
        return "".join(events.text_stream)


async def anthropic_acall(client: Any, stream: bool) -> str:
    if not stream:
        return (await client.messages.create(**anthropic_args(stream))).content[0].text  # type: ignore[no-any-return]
    async with client.messages.stream(**anthropic_args(stream)) as events:
        return "".join([text async for text in events.text_stream])


# -- Ollama: native /api/chat (ollama on httpx) --------------------------------------------
# No request id header, no cache or reasoning figures; the counts are in the final line.


def ollama_stats(prompt: int, output: int) -> dict[str, int]:
    return {
        "total_duration": 412_339_208,
        "load_duration": 20_114_625,
        "prompt_eval_count": prompt,
        "prompt_eval_duration": 61_000_000,
        "eval_count": output,
        "eval_duration": 330_000_000,
    }


def ollama_answer(body: dict[str, Any], stream: bool) -> tuple[list[tuple[str, str]], list[bytes]]:
    base = {"model": body["model"], "created_at": "2025-08-01T10:00:00.123456Z"}
    if not stream:
        reply = {
            **base,
            "message": {"role": "assistant", "content": TEXT},
            "done_reason": "stop",
            "done": True,
            **ollama_stats(31, 8),
        }
        return [("content-type", "application/json; charset=utf-8")], [json.dumps(reply).encode()]
    lines = [{**base, "message": {"role": "assistant", "content": p}, "done": False} for p in PIECES]
    lines.append(
        {
            **base,
            "message": {"role": "assistant", "content": ""},
            "done_reason": "stop",
            "done": True,
            **ollama_stats(44, 7),
        }
    )
    return [("content-type", "application/x-ndjson")], [json.dumps(line).encode() + b"\n" for line in lines]


def ollama_client(transport: Any, asynchronous: bool) -> Any:
    kind = ollama.AsyncClient if asynchronous else ollama.Client
    return kind(host="http://localhost:11434", transport=transport)


def ollama_args(stream: bool) -> dict[str, Any]:
    model = "qwen3:8b" if stream else "llama3.2"
    return {"model": model, "messages": QUESTION, "stream": stream}


def ollama_call(client: Any, stream: bool) -> str:
    reply = client.chat(**ollama_args(stream))
    return "".join(part.message.content for part in reply) if stream else reply.message.content  # type: ignore[no-any-return]


async def ollama_acall(client: Any, stream: bool) -> str:
    reply = await client.chat(**ollama_args(stream))
    if stream:
        return "".join([part.message.content async for part in reply])
    return reply.message.content  # type: ignore[no-any-return]


# -- Groq: chat completions (groq on httpx) -----------------------------------------------
# Its timings beside the counts; a stream's usage in the last chunk's x_groq (nothing added
# to the request).

GROQ_HEADERS = [("x-request-id", "req_01k1x9z3c8fq6b2m4t7v5w0y9n")]


def groq_answer(body: dict[str, Any], stream: bool) -> tuple[list[tuple[str, str]], list[bytes]]:
    model = body["model"]
    timings = {"queue_time": 0.0374, "prompt_time": 0.0068, "completion_time": 0.0247, "total_time": 0.0315}
    if not stream:
        reply = {
            "id": "chatcmpl-f51b2cd2-bef7-417e-964e-a08f0b513c22",
            "object": "chat.completion",
            "created": 1754000002,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": TEXT},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {**timings, "prompt_tokens": 48, "completion_tokens": 8, "total_tokens": 56},
            "usage_breakdown": None,
            "system_fingerprint": "fp_3f3b593e33",
            "x_groq": {"id": "req_01k1x9z3c8fq6b2m4t7v5w0y9n"},
        }
        return [("content-type", "application/json"), *GROQ_HEADERS], [json.dumps(reply).encode()]
    base = {
        "id": "chatcmpl-0c6d1f3e-5a8b-4c2d-9e7f-1a2b3c4d5e6f",
        "object": "chat.completion.chunk",
        "created": 1754000003,
        "model": model,
        "system_fingerprint": "fp_c5356a8f3b",
    }
    x_groq = {"id": "req_01k1x9z3c8fq6b2m4t7v5w0y9n"}
    usage = {**timings, "prompt_tokens": 52, "completion_tokens": 7, "total_tokens": 59}
    chunks = [
        sse(
            {
                **base,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                ],
                "x_groq": x_groq,
            }
        )
    ]
    chunks += [
        sse({**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]})
        for p in PIECES
    ]
    chunks.append(
        sse(
            {
                **base,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "x_groq": {**x_groq, "usage": usage},
            }
        )
    )
    chunks.append(sse("[DONE]"))
    return [("content-type", "text/event-stream"), *GROQ_HEADERS], chunks


def groq_client(transport: Any, asynchronous: bool) -> Any:
    if asynchronous:
        return groq.AsyncGroq(api_key="gsk-test", http_client=httpx.AsyncClient(transport=transport))
    return groq.Groq(api_key="gsk-test", http_client=httpx.Client(transport=transport))


def groq_args(stream: bool) -> dict[str, Any]:
    model = "llama-3.1-8b-instant" if stream else "llama-3.3-70b-versatile"
    return {"model": model, "messages": QUESTION, "stream": stream}


def groq_call(client: Any, stream: bool) -> str:
    reply = client.chat.completions.create(**groq_args(stream))
    if stream:
        return "".join(c.choices[0].delta.content or "" for c in reply if c.choices)
    return chat_text(reply)


async def groq_acall(client: Any, stream: bool) -> str:
    reply = await client.chat.completions.create(**groq_args(stream))
    if stream:
        return "".join([c.choices[0].delta.content or "" async for c in reply if c.choices])
    return chat_text(reply)


# -- the matrix ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sdk:
    lib: ModuleType  # the HTTP library the SDK runs on
    answer: Callable[[dict[str, Any], bool], tuple[list[tuple[str, str]], list[bytes]]]
    client: Callable[[Any, bool], Any]
    call: Callable[[Any, bool], str]
    acall: Callable[[Any, bool], Awaitable[str]]


SDKS = {
    "openai": Sdk(httpx2, openai_answer, openai_client, openai_call, openai_acall),
    "anthropic": Sdk(httpx2, anthropic_answer, anthropic_client, anthropic_call, anthropic_acall),
    "ollama": Sdk(httpx, ollama_answer, ollama_client, ollama_call, ollama_acall),
    "groq": Sdk(httpx, groq_answer, groq_client, groq_call, groq_acall),
}

#: The row each (sdk, stream) must produce, but for cost (priced below), attribution and
#: timings. Tokens normalized: input includes cache reads and writes, output includes
#: reasoning; None where the provider reports no such figure.
EXPECTED: dict[tuple[str, bool], dict[str, Any]] = {
    ("openai", False): {
        "provider": "openai",
        "host": "api.openai.com",
        "endpoint": "/v1/chat/completions",
        "model": "o4-mini",
        "response_model": "o4-mini-2025-04-16",
        "input_tokens": 1180,
        "output_tokens": 250,
        "total_tokens": 1430,
        "cached_input_tokens": 1024,
        "cache_write_tokens": None,
        "reasoning_tokens": 192,
        "request_id": "req_7f1c2a9e4b3d4e0f8a6b5c4d3e2f1a0b",
        "response_id": "chatcmpl-BxQ3v1ZkYc8Lw2Hn5Tq0Rj7Ue9Pa",
        "finish_reason": "stop",
    },
    ("openai", True): {
        "provider": "openai",
        "host": "api.openai.com",
        "endpoint": "/v1/chat/completions",
        "model": "gpt-4o-mini",
        "response_model": "gpt-4o-mini-2024-07-18",
        "input_tokens": 1290,
        "output_tokens": 8,
        "total_tokens": 1298,
        "cached_input_tokens": 1152,
        "cache_write_tokens": None,
        "reasoning_tokens": 0,
        "request_id": "req_7f1c2a9e4b3d4e0f8a6b5c4d3e2f1a0b",
        "response_id": "chatcmpl-BxQ4a8MpWd2Ks6Jy1Fr3Nh5Tg0Lb",
        "finish_reason": "stop",
    },
    ("anthropic", False): {
        "provider": "anthropic",
        "host": "api.anthropic.com",
        "endpoint": "/v1/messages",
        "model": "claude-sonnet-4-6",
        "response_model": "claude-sonnet-4-6",
        "input_tokens": 21 + 1800 + 310,
        "output_tokens": 12,
        "total_tokens": 2131 + 12,
        "cached_input_tokens": 1800,
        "cache_write_tokens": 310,
        "reasoning_tokens": None,
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
        "response_id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "finish_reason": "end_turn",
    },
    ("anthropic", True): {
        "provider": "anthropic",
        "host": "api.anthropic.com",
        "endpoint": "/v1/messages",
        "model": "claude-haiku-4-5",
        "response_model": "claude-haiku-4-5-20251001",
        "input_tokens": 14 + 1536 + 512,
        "output_tokens": 9,
        "total_tokens": 2062 + 9,
        "cached_input_tokens": 1536,
        "cache_write_tokens": 512,
        "reasoning_tokens": None,
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
        "response_id": "msg_01Ka8rYv3bQ7ZtWm2Hc5NdPx",
        "finish_reason": "end_turn",
    },
    ("ollama", False): {
        "provider": "ollama",
        "host": "localhost:11434",
        "endpoint": "/api/chat",
        "model": "llama3.2",
        "response_model": "llama3.2",
        "input_tokens": 31,
        "output_tokens": 8,
        "total_tokens": 39,
        "cached_input_tokens": None,
        "cache_write_tokens": None,
        "reasoning_tokens": None,
        "request_id": None,
        "response_id": None,
        "finish_reason": "stop",
    },
    ("ollama", True): {
        "provider": "ollama",
        "host": "localhost:11434",
        "endpoint": "/api/chat",
        "model": "qwen3:8b",
        "response_model": "qwen3:8b",
        "input_tokens": 44,
        "output_tokens": 7,
        "total_tokens": 51,
        "cached_input_tokens": None,
        "cache_write_tokens": None,
        "reasoning_tokens": None,
        "request_id": None,
        "response_id": None,
        "finish_reason": "stop",
    },
    ("groq", False): {
        "provider": "groq",
        "host": "api.groq.com",
        "endpoint": "/openai/v1/chat/completions",
        "model": "llama-3.3-70b-versatile",
        "response_model": "llama-3.3-70b-versatile",
        "input_tokens": 48,
        "output_tokens": 8,
        "total_tokens": 56,
        "cached_input_tokens": None,
        "cache_write_tokens": None,
        "reasoning_tokens": None,
        "request_id": "req_01k1x9z3c8fq6b2m4t7v5w0y9n",
        "response_id": "chatcmpl-f51b2cd2-bef7-417e-964e-a08f0b513c22",
        "finish_reason": "stop",
    },
    ("groq", True): {
        "provider": "groq",
        "host": "api.groq.com",
        "endpoint": "/openai/v1/chat/completions",
        "model": "llama-3.1-8b-instant",
        "response_model": "llama-3.1-8b-instant",
        "input_tokens": 52,
        "output_tokens": 7,
        "total_tokens": 59,
        "cached_input_tokens": None,
        "cache_write_tokens": None,
        "reasoning_tokens": None,
        "request_id": "req_01k1x9z3c8fq6b2m4t7v5w0y9n",
        "response_id": "chatcmpl-0c6d1f3e-5a8b-4c2d-9e7f-1a2b3c4d5e6f",
        "finish_reason": "stop",
    },
}


def expected_cost(row: dict[str, Any]) -> float:
    """genai-prices' own figure for the expected usage (Ollama's local models are free)."""
    if row["provider"] == "ollama":
        return 0.0
    return genai_price(
        row["provider"],
        row["response_model"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cache_read=row["cached_input_tokens"] or 0,
        cache_write=row["cache_write_tokens"] or 0,
    )


class Server:
    """A MockTransport handler for ``sdk``: answers after ``HEADERS_DELAY`` (a stream's
    first chunk ``FIRST_CHUNK_DELAY`` later) and keeps the request bodies it received."""

    def __init__(self, sdk: Sdk, asynchronous: bool) -> None:
        self.sdk = sdk
        self.bodies: list[dict[str, Any]] = []
        self.transport = sdk.lib.MockTransport(self.ahandle if asynchronous else self.handle)

    def respond(self, request: Any) -> Any:
        body = json.loads(request.content)
        self.bodies.append(body)
        stream = body.get("stream") is True
        headers, chunks = self.sdk.answer(body, stream)
        if not stream:
            headers = [*headers, ("content-length", str(len(chunks[0])))]
        delay = FIRST_CHUNK_DELAY if stream else 0.0
        return self.sdk.lib.Response(200, headers=headers, stream=delayed_stream(self.sdk.lib, chunks, delay))

    def handle(self, request: Any) -> Any:
        pause(HEADERS_DELAY)
        return self.respond(request)

    async def ahandle(self, request: Any) -> Any:
        await apause(HEADERS_DELAY)
        return self.respond(request)


def delayed_stream(lib: ModuleType, chunks: list[bytes], first_delay: float) -> Any:
    """``lib``'s byte stream (sync and async) yielding ``chunks``, the first after ``first_delay``.
    A cursor, as a connection is: iterating again continues where the last one stopped."""

    class Delayed(lib.SyncByteStream, lib.AsyncByteStream):  # type: ignore[name-defined,misc]
        sent = 0

        def __iter__(self) -> Any:
            if self.sent == 0 and first_delay:
                pause(first_delay)
            while self.sent < len(chunks):
                self.sent += 1
                yield chunks[self.sent - 1]

        async def __aiter__(self) -> Any:
            if self.sent == 0 and first_delay:
                await apause(first_delay)
            while self.sent < len(chunks):
                self.sent += 1
                yield chunks[self.sent - 1]

    return Delayed()


CASES = list(itertools.product(SDKS, ("sync", "async"), ("plain", "stream")))


@pytest.mark.parametrize(("sdk_name", "mode", "kind"), CASES, ids=["-".join(c) for c in CASES])
def test_sdk_call_is_recorded_exactly(sdk_name: str, mode: str, kind: str, db: Path) -> None:
    sdk, asynchronous, stream = SDKS[sdk_name], mode == "async", kind == "stream"
    number = CASES.index((sdk_name, mode, kind))
    who = {"user": f"user-{number:02d}", "service": f"{sdk_name}-{mode}", "session": f"sess-{kind}-{number}"}
    server = Server(sdk, asynchronous)
    tracking = httptrack.AsyncTrackingTransport if asynchronous else httptrack.TrackingTransport
    client = sdk.client(tracking(server.transport, db=db, cache=False), asynchronous)

    if asynchronous:

        async def run() -> tuple[str, float]:
            with httptrack.attribute(**who):
                started = time.perf_counter()
                text = await sdk.acall(client, stream)
                return text, (time.perf_counter() - started) * 1000

        text, wall_ms = asyncio.run(run())
    else:
        with httptrack.attribute(**who):
            started = time.perf_counter()
            text = sdk.call(client, stream)
            wall_ms = (time.perf_counter() - started) * 1000

    assert text == TEXT  # the app sees what the server sent
    row = one_row(db)
    expected = {
        **EXPECTED[sdk_name, stream],
        "operation": "chat",
        "stream": int(stream),
        "status": "success",
        "outcome": "complete",
        "http_status": 200,
        "tokens_estimated": 0,  # every figure is the provider's own, streams included
        "cached": 0,
        "response_text": TEXT,
        **who,
    }
    assert {name: row[name] for name in expected} == expected
    assert row["cost_usd"] == expected_cost(expected)

    # The request on the wire: the usage chunk asked for only where httptrack may add it.
    (sent,) = server.bodies
    injected = sdk_name == "openai" and stream
    assert sent.get("stream_options") == ({"include_usage": True} if injected else None)
    assert "stream_options" not in json.loads(row["request_body"])  # recorded as the app sent it

    assert HEADERS_DELAY * 1000 <= row["latency_ms"] <= wall_ms
    if stream:
        assert (HEADERS_DELAY + FIRST_CHUNK_DELAY) * 1000 <= row["ttft_ms"] <= row["latency_ms"]
    else:
        assert row["ttft_ms"] is None
