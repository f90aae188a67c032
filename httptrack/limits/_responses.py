"""The 429 a refused call gets: shaped like its provider's own, so its SDK raises what it
raises for a real rate limit (``openai.RateLimitError``, ``anthropic.RateLimitError``,
``ollama.ResponseError`` ...).

======================== ========================================================================
API shape                body
======================== ========================================================================
OpenAI and compatible    ``{"error": {"message", "type", "param": null, "code"}}`` (``type`` as
(Groq, Mistral, Azure..) OpenAI's: ``insufficient_quota`` for budgets, ``requests``/``tokens``)
Anthropic Messages       ``{"type": "error", "error": {"type": "rate_limit_error", "message"}}``
Ollama (native API)      ``{"error": "..."}``
Gemini                   ``{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message"}}``
======================== ========================================================================

``code``/``error_code`` is ``budget_exceeded`` (usd) or ``rate_limited`` (requests, tokens).
Headers: ``Retry-After`` (whole seconds, at least 1) and ``retry-after-ms``; for budgets
``x-should-retry: false``, which the Stainless SDKs (openai, anthropic, groq ...) obey.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ._engine import Refused

__all__ = ["LIMIT_HEADER", "refusal"]

#: Names the limit that refused the call (the message says it too).
LIMIT_HEADER = "x-httptrack-limit"
_OPENAI_TYPES = {"usd": "insufficient_quota", "requests": "requests", "tokens": "tokens"}


def _shape(parser: Any) -> str:
    """The error shape of the API a request went to (by the parser its path uses, so the
    Anthropic API served by Ollama or Azure gets Anthropic's)."""
    from ..providers.anthropic import Anthropic
    from ..providers.gemini import Gemini
    from ..providers.ollama import Ollama

    if isinstance(parser, Anthropic):
        return "anthropic"
    if isinstance(parser, Gemini):
        return "gemini"
    if isinstance(parser, Ollama):
        return "ollama"
    return "openai"


def refusal(exchange: Any, refused: Refused) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """``(status, headers, body)`` of the response a refused call gets."""
    try:
        parser = exchange.provider.parser_for(exchange.method, exchange.path)
    except Exception:
        parser = exchange.provider
    shape = _shape(parser)
    message = refused.message
    body: dict[str, Any]
    if shape == "anthropic":
        body = {"type": "error", "error": {"type": "rate_limit_error", "message": message}}
    elif shape == "gemini":
        body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": message}}
    elif shape == "ollama":
        body = {"error": message}
    else:
        body = {
            "error": {
                "message": message,
                "type": _OPENAI_TYPES[refused.limit.metric],
                "param": None,
                "code": refused.error_code,
            }
        }
    content = json.dumps(body).encode()
    retry_after = max(refused.retry_after, 0.0)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        (b"retry-after", str(max(math.ceil(retry_after), 1)).encode()),
        (b"retry-after-ms", str(max(math.ceil(retry_after * 1000), 1)).encode()),
        (LIMIT_HEADER.encode(), refused.limit.key.encode("utf-8", "replace")),
    ]
    if refused.limit.metric == "usd":
        headers.append((b"x-should-retry", b"false"))
    return 429, headers, content
