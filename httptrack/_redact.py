"""Everything about credentials, in one place: which header and query names carry them,
how headers, queries and URLs are written without them, and how an error text loses any
credential value the request carried.

Used by the recorder (rows), the response cache (keys, stored headers, metadata) and the
CLI's exports alike, so a credential is recognised the same way everywhere.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode

__all__ = [
    "REDACTED",
    "SECRET_HEADERS",
    "SECRET_PARAMS",
    "is_secret_header",
    "redact_headers",
    "redact_query",
    "redacted_headers",
    "render_url",
    "scrub_text",
]

REDACTED = "[redacted]"

#: Request/response headers whose values are credentials. Never written anywhere.
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "set-cookie",
        "x-amz-security-token",
        "ocp-apim-subscription-key",
    }
)
_SECRET_HEADER_PARTS = ("api-key", "apikey", "token", "secret", "password", "auth", "credential")
#: Query parameters that carry credentials (Gemini's ``key=``, SAS signatures, tokens).
SECRET_PARAMS = frozenset(
    {"key", "api_key", "api-key", "apikey", "access_token", "token", "sig", "signature", "secret", "password"}
)


@functools.lru_cache(maxsize=1024)  # a handful of names, asked about for every header of every call
def is_secret_header(name: str) -> bool:
    """Whether a header's value is a credential: never written to the log or the cache, and
    part of the cache key (hashed), so an answer fetched with one is never served to a
    request with another.

    Known names, and any name containing ``api-key``, ``apikey``, ``token``, ``secret``,
    ``password``, ``auth``, ``credential`` or ``key`` (a gateway's ``x-portkey-virtual-key``,
    an app's ``x-custom-key``). Not ``Idempotency-Key``: SDKs send a fresh one per request,
    so keying on it would make every request unique; nor the gateway name *Portkey* by
    itself (``x-portkey-trace-id`` is a tracing id); nor a rate limit's figures
    (``x-ratelimit-remaining-tokens``: a count of tokens, not a token)."""
    name = name.lower()
    if name in SECRET_HEADERS:
        return True
    if "ratelimit" in name:  # x-ratelimit-remaining-tokens, anthropic-ratelimit-tokens-limit: counts
        return False
    if any(part in name for part in _SECRET_HEADER_PARTS):
        return True
    return "key" in name.replace("portkey", "") and "idempotency" not in name


def redact_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Headers as a dict of lower-case names, credentials replaced by ``[redacted]``, repeated
    names joined with ``", "``."""
    return redacted_headers(raw)[0]


#: (raw name, raw value) → (lower-case name, value or ``[redacted]``, the pair as a JSON
#: object member). Most headers repeat call after call (a client sends the same ones, a
#: provider answers with the same ones), so each pair is decoded, checked and encoded once.
_pairs: dict[tuple[bytes, bytes], tuple[str, str, str]] = {}
_PAIRS_MAX = 4096


def _redacted_pair(pair: tuple[bytes, bytes]) -> tuple[str, str, str]:
    name = pair[0].decode("latin-1").lower()
    value = REDACTED if is_secret_header(name) else pair[1].decode("latin-1")
    found = (name, value, f"{json.dumps(name)}: {json.dumps(value)}")
    if len(_pairs) >= _PAIRS_MAX:  # request ids, dates ...: values that never repeat
        _pairs.clear()
    _pairs[pair] = found
    return found


def redacted_headers(raw: list[tuple[bytes, bytes]]) -> tuple[dict[str, str], str, bool]:
    """``redact_headers(raw)``, the same as JSON (exactly ``json.dumps`` of that dict), and
    whether a name was repeated (its values are joined in the dict)."""
    headers: dict[str, str] = {}
    members: list[str] = []
    repeated = False
    memo = _pairs
    for pair in raw:
        if pair.__class__ is not tuple:
            pair = tuple(pair)  # type: ignore[assignment]
        found = memo.get(pair)
        if found is None:
            found = _redacted_pair(pair)
        name, value, member = found
        if name in headers:
            headers[name] = f"{headers[name]}, {value}"
            repeated = True
        else:
            headers[name] = value
        members.append(member)
    if repeated:
        return headers, json.dumps(headers), True
    return headers, "{" + ", ".join(members) + "}", False


def redact_query(query: str) -> str:
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(k.lower() in SECRET_PARAMS for k, _ in pairs):
        return query
    return urlencode([(k, REDACTED if k.lower() in SECRET_PARAMS else v) for k, v in pairs], safe="[]")


_SECRET_NAMES = "|".join(re.escape(p) for p in sorted(SECRET_PARAMS, key=len, reverse=True))
_SECRET_IN_TEXT = re.compile(r"(?i)\b(" + _SECRET_NAMES + r")=([^&\s'\"<>]+)")


def scrub_text(request_headers: Iterable[tuple[bytes, bytes]], text: str) -> str:
    """``text`` (an error message: an exception's words may quote the URL or a header)
    without the request's credentials: ``key=`` query values and secret header values."""
    text = _SECRET_IN_TEXT.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    for name, value in request_headers:
        if value and is_secret_header(name.decode("latin-1")):
            secret = value.decode("latin-1").strip()
            for part in (secret, secret.partition(" ")[2].strip()):  # "Bearer sk-..." and "sk-..."
                if len(part) >= 8 and part in text:
                    text = text.replace(part, REDACTED)
    return text


_DEFAULT_PORTS = {"http": 80, "https": 443}


def render_url(scheme: str, host: str, port: int | None, path: str, query: str) -> str:
    """The URL as stored (rows, cache metadata): the default port left out, an IPv6 host in
    brackets, credential query parameters redacted."""
    netloc = host if ":" not in host or host.startswith("[") else f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc = f"{netloc}:{port}"
    query = redact_query(query)
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")
