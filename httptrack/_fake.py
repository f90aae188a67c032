"""A fake LLM provider that speaks the real OpenAI, Anthropic and Ollama wire formats.

It serves two purposes:

- ``httptrack demo`` and in-process tests: :func:`mock_handler` / :func:`mock_transport` plug it
  into ``httpx.MockTransport`` or ``httpx2.MockTransport`` (no network, no API key);
- tests that need real sockets: :class:`FakeProviderServer` serves the same exchanges over
  HTTP/1.1 on 127.0.0.1, streaming with ``Transfer-Encoding: chunked`` and an optional delay
  between chunks. ``python -m httptrack._fake --port 8123`` runs one until killed.

Everything is produced by the pure function :func:`fake_exchange`, so output is deterministic:
fixed ids (``chatcmpl-fake0001``, ``msg_fake0001`` ...), fixed timestamps, and a reply derived
from the last user message (``"Hello! You said: <first 12 words> ..."``). One token is one match
of :data:`TOKEN_PATTERN` (a word or a punctuation mark with its leading whitespace); streams send
one token per delta, so ``completion_tokens`` equals the number of content deltas.

Routes (matched on the path's suffix, so ``/openai/v1/chat/completions`` works too):

- OpenAI: ``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/responses``;
  ``GET /v1/models``, ``/v1/models/{id}``.
- Anthropic: ``POST /v1/messages``, ``/v1/messages/count_tokens``; ``GET /v1/models`` (chosen
  over OpenAI's when the request has an ``anthropic-version`` header), ``/v1/models/{id}``.
- Ollama: ``POST /api/chat``, ``/api/generate``, ``/api/embed``, ``/api/embeddings``;
  ``GET /api/tags``, ``/api/version``.

Magic model names (or the same value in an ``x-fake-behavior`` request header, to keep a real
model name): ``missing-model`` (404), ``rate-limited`` (429), ``server-error`` (500),
``overloaded`` (Anthropic 529, OpenAI/Ollama 503), ``cut-stream`` (half the body is sent, then
the connection drops). The API key ``invalid-key`` gets a 401. Other request headers:
``x-fake-delay: <seconds>`` between stream chunks; ``x-fake-cache: read|write|none`` selects how
a prompt with ``cache_control`` (Anthropic) or ``prompt_cache_key`` (OpenAI) is accounted.
Model names starting ``o1``/``o3``/``o4``/``gpt-5`` report :data:`REASONING_TOKENS` reasoning tokens.
Retryable errors carry ``retry-after-ms: 10`` so SDK retries stay fast.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "CREATED",
    "EMBEDDING_DIM",
    "MAGIC_MODELS",
    "REASONING_TOKENS",
    "TOKEN_PATTERN",
    "FakeProviderServer",
    "FakeResponse",
    "RecordedRequest",
    "count_tokens",
    "fake_embedding",
    "fake_exchange",
    "fake_reply",
    "main",
    "mock_handler",
    "mock_transport",
    "tokenize",
]

#: Unix time used for every ``created`` field (2025-01-01T00:00:00Z).
CREATED = 1735689600
_CREATED_ISO = "2025-01-01T00:00:00Z"
#: One fake token: a word or one punctuation mark, with the whitespace before it.
TOKEN_PATTERN = re.compile(r"\s*(?:\w+|[^\w\s])")
#: Length of embedding vectors unless the request asks for ``dimensions``.
EMBEDDING_DIM = 8
#: Reasoning tokens reported (inside the output tokens) by reasoning models (o1, o3, o4, gpt-5 ...).
REASONING_TOKENS = 16
#: Model names (or ``x-fake-behavior`` values) that trigger failures.
MAGIC_MODELS = frozenset({"missing-model", "rate-limited", "server-error", "overloaded", "cut-stream"})

_MAX_SNIPPET_WORDS = 12
_IMAGE_TOKENS = 85
_REQUEST_ID = "req_fake0001"
_FINGERPRINT = "fp_fake0001"
_INVALID_KEY = "invalid-key"
_RETRYABLE = (("retry-after-ms", "10"),)
_REASONING_RE = re.compile(r"^(o\d|gpt-5)")

_OPENAI_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-nano", "o3-mini", "text-embedding-3-small")
_ANTHROPIC_MODELS = (
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17T00:00:00Z"),
    ("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15T00:00:00Z"),
)
_OLLAMA_MODELS = (
    ("llama3.2:latest", "llama", "3.2B", 2019393189),
    ("nomic-embed-text:latest", "nomic-bert", "137M", 274302450),
)


# --------------------------------------------------------------------------- public data types


@dataclass(slots=True)
class FakeResponse:
    """One response as a server would send it.

    ``chunks`` are the body split as it goes on the wire: one SSE event or NDJSON line per chunk
    for streams (which have ``transfer-encoding: chunked``), a single chunk for JSON (which has
    ``content-length``). ``delay`` is the pause between chunks (0 lets the transport decide).
    ``abort`` means the connection drops after the chunks, before the body is complete.
    """

    status: int
    headers: list[tuple[str, str]]
    chunks: list[bytes]
    delay: float = 0.0
    abort: bool = False

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def streaming(self) -> bool:
        return any(k == "transfer-encoding" and "chunked" in v for k, v in self.headers)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)


@dataclass(slots=True)
class RecordedRequest:
    """A request as the fake provider received it (header names lower-cased)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    #: ``(host, port)`` of the client socket (server only), to check connection reuse.
    client: tuple[str, int] | None = None

    def json(self) -> Any:
        return json.loads(self.body)


# --------------------------------------------------------------------------- text, tokens, vectors


def tokenize(text: str) -> list[str]:
    """Split ``text`` into fake tokens; ``"".join(tokenize(t)) == t.rstrip()`` for ``t`` without
    leading whitespace."""
    return TOKEN_PATTERN.findall(text)


def count_tokens(text: str) -> int:
    return len(TOKEN_PATTERN.findall(text))


def fake_reply(prompt: str) -> str:
    """The assistant text the fake answers to a prompt (before any ``max_tokens`` truncation)."""
    words = prompt.split()
    if not words:
        return "Hello! You said nothing."
    snippet = " ".join(words[:_MAX_SNIPPET_WORDS])
    if len(words) > _MAX_SNIPPET_WORDS:
        snippet += " ..."
    return f"Hello! You said: {snippet}"


def fake_embedding(text: str, dimensions: int = EMBEDDING_DIM) -> list[float]:
    """A deterministic vector for ``text``; values are multiples of 1/128 (exact in float32)."""
    out: list[float] = []
    counter = 0
    while len(out) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        out.extend((b - 128) / 128 for b in digest)
        counter += 1
    return out[:dimensions]


def _reply_tokens(prompt: str, limit: Any) -> tuple[list[str], bool]:
    """Reply tokens, and whether they were cut by a max-tokens ``limit``."""
    pieces = tokenize(fake_reply(prompt))
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < len(pieces):
        return pieces[:limit], True
    return pieces, False


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(t for t in (_text_of(part) for part in content) if t)
    if isinstance(content, dict):
        for key in ("text", "content", "output", "input"):
            value = content.get(key)
            if isinstance(value, str | list):
                return _text_of(value)
    return ""


def _images_in(content: Any) -> int:
    if isinstance(content, list):
        return sum(_images_in(part) for part in content)
    if isinstance(content, dict):
        if content.get("type") in ("image_url", "input_image", "image"):
            return 1
        return _images_in(content.get("content"))
    return 0


def _content_tokens(content: Any) -> int:
    return count_tokens(_text_of(content)) + _IMAGE_TOKENS * _images_in(content)


def _tools_tokens(tools: Any) -> int:
    if not isinstance(tools, list) or not tools:
        return 0
    return count_tokens(json.dumps(tools, sort_keys=True))


def _messages_tokens(messages: list[Any]) -> int:
    """Chat-format prompt size: 3 + (4 + content) per message (OpenAI's cookbook formula)."""
    return 3 + sum(4 + _content_tokens(m.get("content") if isinstance(m, dict) else m) for m in messages)


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# --------------------------------------------------------------------------- request context


@dataclass(slots=True)
class _Call:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    data: Any = None

    @property
    def model(self) -> str:
        model = self.data.get("model") if isinstance(self.data, dict) else None
        return model if isinstance(model, str) else ""

    @property
    def behavior(self) -> str:
        return self.headers.get("x-fake-behavior") or self.model

    @property
    def cache_mode(self) -> str:
        return self.headers.get("x-fake-cache", "read").strip().lower()


def _dumps(obj: Any, *, pretty: bool = False) -> bytes:
    if pretty:
        return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _json(
    status: int,
    obj: Any,
    headers: list[tuple[str, str]],
    *,
    pretty: bool = False,
    content_type: str = "application/json",
) -> FakeResponse:
    body = _dumps(obj, pretty=pretty)
    return FakeResponse(
        status, [("content-type", content_type), *headers, ("content-length", str(len(body)))], [body]
    )


def _stream(chunks: list[bytes], headers: list[tuple[str, str]], content_type: str) -> FakeResponse:
    return FakeResponse(
        200,
        [
            ("content-type", content_type),
            *headers,
            ("cache-control", "no-cache"),
            ("transfer-encoding", "chunked"),
        ],
        chunks,
    )


def _sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else _dumps(data).decode()
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {payload}\n\n".encode()


# --------------------------------------------------------------------------- OpenAI


def _openai_headers(status: int = 200) -> list[tuple[str, str]]:
    headers = [
        ("x-request-id", _REQUEST_ID),
        ("openai-organization", "org-fake"),
        ("openai-processing-ms", "42"),
        ("openai-version", "2020-10-01"),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-limit-tokens", "30000000"),
        ("x-ratelimit-remaining-tokens", "29999000"),
    ]
    if status == 429 or status >= 500:
        headers.extend(_RETRYABLE)
    return headers


def _openai_error(
    status: int, message: str, type_: str, code: str | None = None, param: str | None = None
) -> FakeResponse:
    obj = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return _json(status, obj, _openai_headers(status), pretty=True)


def _openai_behavior_error(call: _Call) -> FakeResponse | None:
    behavior, model = call.behavior, call.model
    if behavior == "missing-model":
        return _openai_error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        )
    if behavior == "rate-limited":
        return _openai_error(
            429,
            f"Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
            "Limit 3, Used 3, Requested 1. Please try again in 20s.",
            "requests",
            "rate_limit_exceeded",
        )
    if behavior == "server-error":
        return _openai_error(
            500, "The server had an error while processing your request. Sorry about that!", "server_error"
        )
    if behavior == "overloaded":
        return _openai_error(
            503, "The engine is currently overloaded, please try again later.", "server_error"
        )
    return None


def _openai_cached(prompt_tokens: int, call: _Call) -> int:
    data = call.data
    wanted = call.headers.get("x-fake-cache", "").lower() == "read" or (
        isinstance(data, dict) and data.get("prompt_cache_key") and call.cache_mode == "read"
    )
    return prompt_tokens // 2 if wanted else 0


def _openai_chat_usage(prompt: int, visible: int, model: str, call: _Call) -> dict[str, Any]:
    reasoning = REASONING_TOKENS if _REASONING_RE.match(model) else 0
    completion = visible + reasoning
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": _openai_cached(prompt, call), "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _include_usage(data: dict[str, Any]) -> bool:
    options = data.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _openai_chat(call: _Call) -> FakeResponse:
    data, model = call.data, call.model
    messages = _as_list(data.get("messages"))
    prompt = _messages_tokens(messages) + _tools_tokens(data.get("tools"))
    limit = data.get("max_completion_tokens") or data.get("max_tokens")
    pieces, cut = _reply_tokens(_last_user_text(messages), limit)
    finish = "length" if cut else "stop"
    usage = _openai_chat_usage(prompt, len(pieces), model, call)
    if not data.get("stream"):
        obj = {
            "id": "chatcmpl-fake0001",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "".join(pieces),
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }
        return _json(200, obj, _openai_headers(), pretty=True)

    with_usage = _include_usage(data)

    def chunk(choices: list[Any], final_usage: dict[str, Any] | None = None) -> bytes:
        obj: dict[str, Any] = {
            "id": "chatcmpl-fake0001",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
            "choices": choices,
        }
        if with_usage:
            obj["usage"] = final_usage
        return _sse(obj)

    def choice(delta: dict[str, Any], finish_reason: str | None = None) -> list[Any]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

    chunks = [chunk(choice({"role": "assistant", "content": "", "refusal": None}))]
    chunks += [chunk(choice({"content": piece})) for piece in pieces]
    chunks.append(chunk(choice({}, finish)))
    if with_usage:
        chunks.append(chunk([], usage))
    chunks.append(_sse("[DONE]"))
    return _stream(chunks, _openai_headers(), "text/event-stream; charset=utf-8")


def _openai_completions(call: _Call) -> FakeResponse:
    data, model = call.data, call.model
    prompts = data.get("prompt")
    prompt_list = prompts if isinstance(prompts, list) else [prompts if prompts is not None else ""]
    prompt_text = prompt_list[0] if prompt_list and isinstance(prompt_list[0], str) else ""
    prompt = sum(count_tokens(p) if isinstance(p, str) else len(_as_list(p)) for p in prompt_list)
    limit = data.get("max_tokens", 16)  # the legacy endpoint's default is 16
    pieces, cut = _reply_tokens(prompt_text, limit)
    finish = "length" if cut else "stop"
    usage = {"prompt_tokens": prompt, "completion_tokens": len(pieces), "total_tokens": prompt + len(pieces)}
    base = {"id": "cmpl-fake0001", "object": "text_completion", "created": CREATED, "model": model}
    if not data.get("stream"):
        obj = {
            **base,
            "choices": [{"text": "".join(pieces), "index": 0, "logprobs": None, "finish_reason": finish}],
            "usage": usage,
            "system_fingerprint": None,
        }
        return _json(200, obj, _openai_headers(), pretty=True)
    with_usage = _include_usage(data)

    def chunk(choices: list[Any], final_usage: dict[str, Any] | None = None) -> bytes:
        obj = {**base, "choices": choices, "system_fingerprint": None}
        if with_usage:
            obj["usage"] = final_usage
        return _sse(obj)

    chunks = [
        chunk([{"text": piece, "index": 0, "logprobs": None, "finish_reason": None}]) for piece in pieces
    ]
    chunks.append(chunk([{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}]))
    if with_usage:
        chunks.append(chunk([], usage))
    chunks.append(_sse("[DONE]"))
    return _stream(chunks, _openai_headers(), "text/event-stream; charset=utf-8")


def _embedding_inputs(value: Any) -> list[tuple[str, int]]:
    """(text to embed, token count) per input: strings, token arrays, or lists of either."""
    if isinstance(value, str):
        return [(value, count_tokens(value))]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [(" ".join(map(str, value)), len(value))]
    out: list[tuple[str, int]] = []
    for item in _as_list(value):
        if isinstance(item, str):
            out.append((item, count_tokens(item)))
        elif isinstance(item, list):
            out.append((" ".join(map(str, item)), len(item)))
    return out


def _dimensions(data: dict[str, Any]) -> int:
    dims = data.get("dimensions")
    if isinstance(dims, int) and not isinstance(dims, bool) and 0 < dims <= 4096:
        return dims
    return EMBEDDING_DIM


def _openai_embeddings(call: _Call) -> FakeResponse:
    data = call.data
    inputs = _embedding_inputs(data.get("input"))
    if not inputs:
        return _openai_error(400, "'$.input' is invalid.", "invalid_request_error", param="input")
    dims = _dimensions(data)
    as_base64 = data.get("encoding_format") == "base64"
    items = []
    for index, (text, _) in enumerate(inputs):
        vector = fake_embedding(text, dims)
        embedding: Any = vector
        if as_base64:
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        items.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(n for _, n in inputs)
    obj = {
        "object": "list",
        "data": items,
        "model": call.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return _json(200, obj, _openai_headers(), pretty=True)


def _openai_model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": "system"}


def _openai_models(call: _Call) -> FakeResponse:
    obj = {"object": "list", "data": [_openai_model(m) for m in _OPENAI_MODELS]}
    return _json(200, obj, _openai_headers(), pretty=True)


def _responses_input(data: dict[str, Any]) -> tuple[int, str]:
    """(input tokens, last user text) of a Responses API request."""
    raw = data.get("input")
    items: list[Any] = [{"role": "user", "content": raw}] if isinstance(raw, str) else _as_list(raw)
    messages = [i for i in items if isinstance(i, dict)]
    instructions = data.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages = [{"role": "developer", "content": instructions}, *messages]
    tokens = _messages_tokens(messages) + _tools_tokens(data.get("tools"))
    return tokens, _last_user_text(messages)


def _openai_responses(call: _Call) -> FakeResponse:
    data, model = call.data, call.model
    input_tokens, prompt = _responses_input(data)
    pieces, cut = _reply_tokens(prompt, data.get("max_output_tokens"))
    text = "".join(pieces)
    reasoning = REASONING_TOKENS if _REASONING_RE.match(model) else 0
    output_tokens = len(pieces) + reasoning
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": _openai_cached(input_tokens, call)},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    item_status = "incomplete" if cut else "completed"
    item = {
        "id": "msg_fake0001",
        "type": "message",
        "status": item_status,
        "content": [part],
        "role": "assistant",
    }

    def response(status: str, output: list[Any], final_usage: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": "resp_fake0001",
            "object": "response",
            "created_at": CREATED,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if cut and status == "incomplete" else None,
            "instructions": data.get("instructions"),
            "max_output_tokens": data.get("max_output_tokens"),
            "model": model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": data.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": data.get("store", True),
            "temperature": data.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": data.get("tool_choice", "auto"),
            "tools": data.get("tools", []),
            "top_p": data.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": final_usage,
            "user": None,
            "metadata": data.get("metadata", {}),
        }

    final_status = "incomplete" if cut else "completed"
    if not data.get("stream"):
        return _json(200, response(final_status, [item], usage), _openai_headers(), pretty=True)

    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response("in_progress", [], None)},
        {"type": "response.in_progress", "response": response("in_progress", [], None)},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            "item_id": "msg_fake0001",
            "output_index": 0,
            "content_index": 0,
            "part": {**part, "text": ""},
        },
    ]
    where = {"item_id": "msg_fake0001", "output_index": 0, "content_index": 0}
    events += [
        {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []} for piece in pieces
    ]
    events += [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": f"response.{final_status}", "response": response(final_status, [item], usage)},
    ]
    chunks = [_sse({**event, "sequence_number": n}, event["type"]) for n, event in enumerate(events)]
    return _stream(chunks, _openai_headers(), "text/event-stream; charset=utf-8")


# --------------------------------------------------------------------------- Anthropic


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


# --------------------------------------------------------------------------- Ollama

_OLLAMA_JSON = "application/json; charset=utf-8"


def _ollama_error(status: int, message: str) -> FakeResponse:
    headers = list(_RETRYABLE) if status == 429 or status >= 500 else []
    return _json(status, {"error": message}, headers, content_type=_OLLAMA_JSON)


def _ollama_behavior_error(call: _Call) -> FakeResponse | None:
    behavior = call.behavior
    if behavior == "missing-model":
        return _ollama_error(404, f'model "{call.model}" not found, try pulling it first')
    if behavior == "rate-limited":
        return _ollama_error(429, "too many requests")
    if behavior == "server-error":
        return _ollama_error(500, "llama runner process has terminated: exit status 2")
    if behavior == "overloaded":
        return _ollama_error(503, "server busy, please try again.  maximum pending requests exceeded")
    return None


def _ollama_stats(prompt: int, output: int) -> dict[str, int]:
    load, prompt_ns, eval_ns = 5_000_000, prompt * 1_000_000, output * 10_000_000
    return {
        "total_duration": load + prompt_ns + eval_ns + 1_000_000,
        "load_duration": load,
        "prompt_eval_count": prompt,
        "prompt_eval_duration": prompt_ns,
        "eval_count": output,
        "eval_duration": eval_ns,
    }


def _ollama_limit(data: dict[str, Any]) -> Any:
    options = data.get("options")
    return options.get("num_predict") if isinstance(options, dict) else None


def _ollama_generation(
    call: _Call, prompt_tokens: int, prompt: str, key: str, *, empty: bool
) -> FakeResponse:
    """Shared by /api/chat (``key="message"``) and /api/generate (``key="response"``)."""
    data, model = call.data, call.model
    base = {"model": model, "created_at": _CREATED_ISO}

    def payload(text: str) -> Any:
        return {"role": "assistant", "content": text} if key == "message" else text

    if empty:  # an empty request only loads the model
        obj = {**base, key: payload(""), "done_reason": "load", "done": True}
        return _json(200, obj, [], content_type=_OLLAMA_JSON)
    pieces, cut = _reply_tokens(prompt, _ollama_limit(data))
    done = {"done_reason": "length" if cut else "stop", "done": True}
    stats = _ollama_stats(prompt_tokens, len(pieces))
    extra = {"context": list(range(1, prompt_tokens + len(pieces) + 1))} if key == "response" else {}
    if data.get("stream") is False:
        obj = {**base, key: payload("".join(pieces)), **done, **extra, **stats}
        return _json(200, obj, [], content_type=_OLLAMA_JSON)
    chunks = [_dumps({**base, key: payload(piece), "done": False}) + b"\n" for piece in pieces]
    chunks.append(_dumps({**base, key: payload(""), **done, **extra, **stats}) + b"\n")
    return _stream(chunks, [], "application/x-ndjson")


def _ollama_chat(call: _Call) -> FakeResponse:
    messages = _as_list(call.data.get("messages"))
    prompt_tokens = _messages_tokens(messages) + _tools_tokens(call.data.get("tools"))
    return _ollama_generation(call, prompt_tokens, _last_user_text(messages), "message", empty=not messages)


def _ollama_generate(call: _Call) -> FakeResponse:
    data = call.data
    prompt = data.get("prompt") if isinstance(data.get("prompt"), str) else ""
    system = data.get("system") if isinstance(data.get("system"), str) else ""
    messages = [{"role": "system", "content": system}] if system else []
    prompt_tokens = _messages_tokens([*messages, {"role": "user", "content": prompt}])
    return _ollama_generation(call, prompt_tokens, prompt, "response", empty=not prompt)


def _ollama_embed(call: _Call) -> FakeResponse:
    data = call.data
    inputs = _embedding_inputs(data.get("input"))
    dims = _dimensions(data)
    tokens = sum(n for _, n in inputs)
    stats = _ollama_stats(tokens, 0)
    obj = {
        "model": call.model,
        "embeddings": [fake_embedding(text, dims) for text, _ in inputs],
        "total_duration": stats["total_duration"],
        "load_duration": stats["load_duration"],
        "prompt_eval_count": tokens,
    }
    return _json(200, obj, [], content_type=_OLLAMA_JSON)


def _ollama_embeddings_legacy(call: _Call) -> FakeResponse:
    prompt = call.data.get("prompt")
    vector = fake_embedding(prompt, _dimensions(call.data)) if isinstance(prompt, str) and prompt else []
    return _json(200, {"embedding": vector}, [], content_type=_OLLAMA_JSON)


def _ollama_tags(call: _Call) -> FakeResponse:
    models = [
        {
            "name": name,
            "model": name,
            "modified_at": _CREATED_ISO,
            "size": size,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": family,
                "families": [family],
                "parameter_size": params,
                "quantization_level": "Q4_K_M" if family == "llama" else "F16",
            },
        }
        for name, family, params, size in _OLLAMA_MODELS
    ]
    return _json(200, {"models": models}, [], content_type=_OLLAMA_JSON)


def _ollama_version(call: _Call) -> FakeResponse:
    return _json(200, {"version": "0.12.0"}, [], content_type=_OLLAMA_JSON)


# --------------------------------------------------------------------------- routing

_Route = Callable[[_Call], FakeResponse]
# (method, provider, handler) by path suffix / exact Ollama path; checked in order.
_SUFFIX_ROUTES: tuple[tuple[str, str, str, _Route], ...] = (
    ("/chat/completions", "POST", "openai", _openai_chat),
    ("/completions", "POST", "openai", _openai_completions),
    ("/embeddings", "POST", "openai", _openai_embeddings),
    ("/responses", "POST", "openai", _openai_responses),
    ("/messages/count_tokens", "POST", "anthropic", _anthropic_count_tokens),
    ("/messages", "POST", "anthropic", _anthropic_messages),
)
_OLLAMA_ROUTES: dict[str, tuple[str, _Route]] = {
    "/api/chat": ("POST", _ollama_chat),
    "/api/generate": ("POST", _ollama_generate),
    "/api/embed": ("POST", _ollama_embed),
    "/api/embeddings": ("POST", _ollama_embeddings_legacy),
    "/api/tags": ("GET", _ollama_tags),
    "/api/version": ("GET", _ollama_version),
}
_MODEL_PATH = re.compile(r"/models/([^/]+)$")


def _resolve(call: _Call) -> tuple[str, _Route] | None:
    """(provider, handler) for the call, or None when no route matches."""
    path = call.path.rstrip("/") or "/"
    if path in _OLLAMA_ROUTES:
        method, route = _OLLAMA_ROUTES[path]
        return ("ollama", route) if call.method == method else None
    anthropic = "anthropic-version" in call.headers
    if path.endswith("/models") and call.method == "GET":
        return ("anthropic", _anthropic_models) if anthropic else ("openai", _openai_models)
    match = _MODEL_PATH.search(path)
    if match and call.method == "GET":
        model_id = match.group(1)
        if anthropic:
            return "anthropic", lambda c: _anthropic_model_route(c, model_id)
        return "openai", lambda c: _openai_model_route(c, model_id)
    for suffix, method, provider, route in _SUFFIX_ROUTES:
        if path.endswith(suffix) and call.method == method:
            return provider, route
    return None


def _openai_model_route(call: _Call, model_id: str) -> FakeResponse:
    if model_id in MAGIC_MODELS or model_id not in _OPENAI_MODELS:
        return _openai_error(
            404,
            f"The model '{model_id}' does not exist",
            "invalid_request_error",
            "model_not_found",
            "model",
        )
    return _json(200, _openai_model(model_id), _openai_headers(), pretty=True)


def _anthropic_model_route(call: _Call, model_id: str) -> FakeResponse:
    model = _anthropic_model(model_id)
    if model is None:
        return _anthropic_error(404, "not_found_error", f"model: {model_id}")
    return _json(200, model, _anthropic_headers())


def _bad_body(provider: str, call: _Call) -> FakeResponse:
    if provider == "anthropic":
        return _anthropic_error(400, "invalid_request_error", "Request body must be a JSON object")
    if provider == "ollama":
        return _ollama_error(400, "invalid character in request body")
    return _openai_error(
        400,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
        "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid "
        "JSON. If you have trouble figuring out how to fix this, please contact us through our help "
        "center at help.openai.com.)",
        "invalid_request_error",
    )


def _unauthorized(provider: str, call: _Call) -> FakeResponse | None:
    if provider == "openai" and call.headers.get("authorization", "") == f"Bearer {_INVALID_KEY}":
        return _openai_error(
            401,
            "Incorrect API key provided: invalid-key. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )
    if provider == "anthropic" and call.headers.get("x-api-key") == _INVALID_KEY:
        return _anthropic_error(401, "authentication_error", "invalid x-api-key")
    if provider == "ollama" and call.headers.get("authorization", "") == f"Bearer {_INVALID_KEY}":
        return _ollama_error(401, "unauthorized")
    return None


def _cut(response: FakeResponse) -> FakeResponse:
    """Keep the first half of the body (whole chunks for streams) and mark it to be aborted."""
    if len(response.chunks) > 1:
        chunks = response.chunks[: max(1, len(response.chunks) // 2)]
    else:
        body = response.body
        chunks = [body[: len(body) // 2]]
    return FakeResponse(response.status, response.headers, chunks, response.delay, abort=True)


def fake_exchange(
    method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
) -> FakeResponse:
    """Answer one HTTP request the way OpenAI, Anthropic or Ollama would. Pure and deterministic."""
    lowered = {k.lower(): v for k, v in headers.items()}
    call = _Call(method.upper(), path or "/", parse_qs(query or ""), lowered, body or b"")
    resolved = _resolve(call)
    if resolved is None:
        response = _openai_error(404, f"Invalid URL ({call.method} {call.path})", "invalid_request_error")
    else:
        provider, route = resolved
        response = _dispatch(provider, route, call)
    try:
        delay = float(lowered.get("x-fake-delay", "0"))
    except ValueError:
        delay = 0.0
    response.delay = max(0.0, delay)
    return response


def _dispatch(provider: str, route: _Route, call: _Call) -> FakeResponse:
    if call.method == "POST":
        try:
            call.data = json.loads(call.body or b"null")
        except ValueError:
            return _bad_body(provider, call)
        if not isinstance(call.data, dict):
            return _bad_body(provider, call)
    else:
        call.data = {}
    if (denied := _unauthorized(provider, call)) is not None:
        return denied
    if call.method == "POST":
        if provider == "anthropic":
            if (invalid := _anthropic_invalid(call)) is not None:
                return invalid
            error = _anthropic_behavior_error(call)
        elif provider == "ollama":
            if not call.model:
                return _ollama_error(400, "model is required")
            error = _ollama_behavior_error(call)
        else:
            if not call.model:
                return _openai_error(
                    400, "you must provide a model parameter", "invalid_request_error", param="model"
                )
            error = _openai_behavior_error(call)
        if error is not None:
            return error
    response = route(call)
    if call.behavior == "cut-stream" and response.status == 200:
        response = _cut(response)
    return response


# --------------------------------------------------------------------------- httpx / httpx2 mock

_STREAM_CLASSES: dict[str, type] = {}


def _stream_class(lib: ModuleType) -> type:
    """A byte stream for ``lib`` (httpx or httpx2) that is both sync- and async-iterable."""
    cached = _STREAM_CLASSES.get(lib.__name__)
    if cached is not None:
        return cached

    class FakeByteStream(lib.SyncByteStream, lib.AsyncByteStream):  # type: ignore[name-defined,misc]
        def __init__(self, response: FakeResponse, request: Any) -> None:
            self._response = response
            self._request = request
            # A cursor, as a connection is: iterating again continues where the last
            # iteration stopped (SDKs drain a response's stream after its end marker).
            self._next = 0

        def _broken(self) -> Exception:
            message = "peer closed connection without sending complete message body"
            if self._response.streaming:
                message += " (incomplete chunked read)"
            return lib.RemoteProtocolError(message, request=self._request)  # type: ignore[no-any-return]

        def __iter__(self) -> Iterator[bytes]:
            delay, chunks = self._response.delay, self._response.chunks
            while self._next < len(chunks):
                if self._next and delay > 0:
                    time.sleep(delay)
                self._next += 1
                yield chunks[self._next - 1]
            if self._response.abort:
                raise self._broken()

        async def __aiter__(self) -> AsyncIterator[bytes]:
            delay, chunks = self._response.delay, self._response.chunks
            while self._next < len(chunks):
                if self._next and delay > 0:
                    import anyio

                    await anyio.sleep(delay)
                self._next += 1
                yield chunks[self._next - 1]
            if self._response.abort:
                raise self._broken()

    _STREAM_CLASSES[lib.__name__] = FakeByteStream
    return FakeByteStream


def mock_handler(lib: ModuleType, *, record: list[RecordedRequest] | None = None) -> Callable[[Any], Any]:
    """A handler for ``lib.MockTransport`` (``lib`` is the ``httpx`` or ``httpx2`` module).

    It works for sync and async clients alike: the response's stream yields
    :attr:`FakeResponse.chunks` one by one (sleeping ``delay`` between them) and raises
    ``lib.RemoteProtocolError`` where a real connection would drop. Requests are appended to
    ``record`` when given.
    """
    stream_class = _stream_class(lib)

    def handler(request: Any) -> Any:
        query = request.url.query
        query = query.decode("ascii") if isinstance(query, bytes) else str(query)
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = bytes(request.content)
        if record is not None:
            record.append(RecordedRequest(request.method, request.url.path, query, headers, body))
        response = fake_exchange(request.method, request.url.path, query, headers, body)
        return lib.Response(response.status, headers=response.headers, stream=stream_class(response, request))

    return handler


def mock_transport(lib: ModuleType, *, record: list[RecordedRequest] | None = None) -> Any:
    """``lib.MockTransport(mock_handler(lib))``: a fake provider for ``httpx``/``httpx2`` clients."""
    return lib.MockTransport(mock_handler(lib, record=record))


# --------------------------------------------------------------------------- real HTTP server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: FakeProviderServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client that went away
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "httptrack-fake/1.0"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        body = self._read_body()
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        owner._record(
            RecordedRequest(self.command, parts.path, parts.query, headers, body, self.client_address[:2])
        )
        response = fake_exchange(self.command, parts.path, parts.query, headers, body)
        delay = response.delay if response.delay > 0 else owner.chunk_delay
        chunked = response.streaming
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("connection", "close")
        self.end_headers()
        try:
            for index, chunk in enumerate(response.chunks):
                if not chunk:
                    continue
                if index and delay > 0:
                    time.sleep(delay)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                self.wfile.flush()
            if response.abort:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class FakeProviderServer:
    """The fake provider on a real socket: ``with FakeProviderServer() as server: ... server.url``.

    Streams use ``Transfer-Encoding: chunked``, flushed chunk by chunk, ``chunk_delay`` seconds
    apart (an ``x-fake-delay`` request header overrides it). Connections are kept alive.
    ``requests`` lists what was received, oldest first.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, chunk_delay: float = 0.0) -> None:
        self.host = host
        self.chunk_delay = chunk_delay
        self._requested_port = port
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeProviderServer is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def start(self) -> FakeProviderServer:
        if self._server is not None:
            return self
        server = _Server((self.host, self._requested_port), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-provider", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # wake handler threads blocked on keep-alive reads
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeProviderServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"<FakeProviderServer {where}>"


def main(argv: list[str] | None = None) -> int:
    """``python -m httptrack._fake [--host H] [--port P] [--chunk-delay S]``: print the URL, serve."""
    parser = argparse.ArgumentParser(
        prog="python -m httptrack._fake",
        description="Serve the fake OpenAI/Anthropic/Ollama provider: print its URL, serve until killed.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream chunks")
    args = parser.parse_args(argv)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    with FakeProviderServer(args.host, args.port, chunk_delay=args.chunk_delay) as server:
        print(server.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
