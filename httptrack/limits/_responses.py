"""The 429 a refused call gets: its body shaped like the provider's own errors (each family
says how: ``Provider.limit_error``), so its SDK raises what it raises for a real rate limit
(``openai.RateLimitError``, ``anthropic.RateLimitError``, ``ollama.ResponseError`` ...).

Headers: ``Retry-After`` (whole seconds, at least 1) and ``retry-after-ms``; the limit's
name in ``x-httptrack-limit``; for budgets ``x-should-retry: false``, which the Stainless
SDKs (openai, anthropic, groq ...) obey.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ._engine import Refused

__all__ = ["LIMIT_HEADER", "refusal"]

#: Names the limit that refused the call (the message says it too).
LIMIT_HEADER = "x-httptrack-limit"


def refusal(exchange: Any, refused: Refused) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """``(status, headers, body)`` of the response a refused call gets."""
    try:
        parser = exchange.provider.parser_for(exchange.method, exchange.path)
    except Exception:
        parser = exchange.provider
    body = parser.limit_error(refused.message, refused.error_code, refused.limit.metric)
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
