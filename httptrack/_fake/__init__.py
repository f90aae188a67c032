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

from ._common import (
    CREATED,
    EMBEDDING_DIM,
    MAGIC_MODELS,
    REASONING_TOKENS,
    TOKEN_PATTERN,
    FakeResponse,
    RecordedRequest,
    count_tokens,
    fake_embedding,
    fake_reply,
    tokenize,
)
from ._mock import mock_handler, mock_transport
from ._routes import fake_exchange
from ._server import FakeProviderServer, main

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
