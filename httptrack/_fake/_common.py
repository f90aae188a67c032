"""Shared pieces of the fake provider: constants, data types, token counting, the request
context, response builders."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CREATED",
    "EMBEDDING_DIM",
    "MAGIC_MODELS",
    "REASONING_TOKENS",
    "TOKEN_PATTERN",
    "FakeResponse",
    "RecordedRequest",
    "count_tokens",
    "fake_embedding",
    "fake_reply",
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
