"""Everything about credentials, in one place: which header, query and body-field names
carry them, how headers, queries and URLs are written without them, and how every text a
call stores loses each credential *value* the call carried or received.

Used by the recorder (rows), the response cache (keys, stored headers, metadata) and the
CLI's exports alike, so a credential is recognised the same way everywhere.

Two nets, one after the other:

- **By name.** Secret headers (``Authorization``, anything named like a key, token, secret
  ...), query parameters (``key=``, ``subscription-key=``, ``sig=`` ...) and body fields
  (``api_key``, ``access_token``, ``client_secret``, ``assertion``, ``password`` ...; and a
  new key's ``value`` on the endpoints that mint keys) are recognised by their names.
- **By value.** Every value found so (:class:`Credentials`) is then removed from every
  text of the call's row, raw, JSON-escaped and URL-encoded: a 401 that quotes the key, an
  SSE error event, a custom header that echoes it, an answer that repeats it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlencode

__all__ = [
    "CREDENTIAL_IN_RESPONSE",
    "MIN_VALUE",
    "REDACTED",
    "SECRET_HEADERS",
    "SECRET_PARAMS",
    "Credentials",
    "HeadersRead",
    "is_credential_field",
    "is_secret_header",
    "is_secret_param",
    "read_headers",
    "redact_headers",
    "redact_query",
    "redacted_headers",
    "render_url",
    "scrub_text",
    "server_url",
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
#: Query parameters that carry credentials by these very names (``-`` read as ``_``):
#: Gemini's ``key=``, SAS signatures, Azure Functions' ``code=``, tokens.
SECRET_PARAMS = frozenset(
    {
        "key",
        "api_key",
        "apikey",
        "access_token",
        "token",
        "sig",
        "signature",
        "secret",
        "password",
        "code",
        "auth",
    }
)
_SECRET_PARAM_ENDS = ("key", "token", "secret", "password", "signature", "credential", "credentials")


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


#: A header as read for the log: (lower-case name, value or ``[redacted]``, the pair as a
#: JSON object member, the credential values it carries). See :func:`header_pairs`.
HeaderPair = tuple[str, str, str, tuple[str, ...]]
#: (raw name, raw value) → its :data:`HeaderPair`. Most headers repeat call after call (a
#: client sends the same ones, a provider answers with the same ones), so each pair is
#: decoded, checked and encoded once.
_pairs: dict[tuple[bytes, bytes], HeaderPair] = {}
_PAIRS_MAX = 4096
#: raw name → (lower-case name, secret, the name as JSON): the names repeat even where the
#: values do not (dates, request ids, rate-limit figures).
_names: dict[bytes, tuple[str, bool, str]] = {}
#: ``json.dumps`` of a string, without the call into the encoder around it (the same C
#: function does the work).
_json_str = json.encoder.encode_basestring_ascii
_CARRIES = operator.itemgetter(3)


def _read_pair(pair: tuple[bytes, bytes]) -> HeaderPair:
    raw_name, raw_value = pair
    named = _names.get(raw_name)
    if named is None:
        name = raw_name.decode("latin-1").lower()
        named = (name, is_secret_header(name), _json_str(name))
        if len(_names) >= _PAIRS_MAX:
            _names.clear()
        _names[raw_name] = named
    name, secret, name_json = named
    if secret:
        value = REDACTED
        carries = _header_credentials(name, raw_value)
    else:
        value = raw_value.decode("latin-1")
        carries = ()
    found = (name, value, f"{name_json}: {_json_str(value)}", carries)
    if len(_pairs) >= _PAIRS_MAX:  # request ids, dates ...: values that never repeat
        _pairs.clear()
    _pairs[pair] = found
    return found


def header_pairs(raw: Iterable[tuple[bytes, bytes]]) -> list[HeaderPair]:
    """Each raw header (name, value) as a :data:`HeaderPair`, in order."""
    try:
        return list(map(_pairs.__getitem__, raw))  # every pair seen before: in C
    except (KeyError, TypeError):  # a new pair; a pair given as a list
        pass
    found = []
    memo = _pairs
    for pair in raw:
        if pair.__class__ is not tuple:
            pair = tuple(pair)  # type: ignore[assignment]
        known = memo.get(pair)
        found.append(_read_pair(pair) if known is None else known)
    return found


#: What :func:`read_headers` gives: (the headers as :func:`redact_headers` gives them, the
#: same as JSON, whether a name was repeated, the credential values the headers carry).
#: The dict may be shared between calls: read it, never change it.
HeadersRead = tuple[dict[str, str], str, bool, tuple[str, ...]]
_NO_HEADERS: HeadersRead = ({}, "{}", False, ())
#: The pairs of a header list but its last (or last two) → what :func:`read_headers` read
#: of them. A client sends the same headers call after call but for ``Content-Length``,
#: which httpx adds last (``client.post(json=...)``: just before ``Content-Type``): all the
#: others are read once per client; the last one or two, from ``_pairs``.
_heads: dict[tuple[tuple[bytes, bytes], ...], HeadersRead] = {}
_HEADS_MAX = 256


def read_headers(raw: Sequence[tuple[bytes, bytes]]) -> HeadersRead:
    """Headers as the log keeps them (:data:`HeadersRead`): each name in lower case, each
    secret value ``[redacted]``, the values of a repeated name joined with ``", "``; the
    JSON is exactly ``json.dumps`` of the dict."""
    if not raw:
        return _NO_HEADERS
    try:
        two = len(raw) > 1 and raw[-2][0].lower() == b"content-length"
        key = tuple(raw[:-2] if two else raw[:-1])
        head = _heads.get(key)
        last = _pairs.get(raw[-1])
        length = _pairs.get(raw[-2]) if two else None
    except (TypeError, AttributeError):  # a pair given as a list, a name that is not bytes
        return _read_all(header_pairs(raw))
    if head is None:
        head = _read_all(header_pairs(key))
        if len(_heads) >= _HEADS_MAX:
            _heads.clear()
        _heads[key] = head
    if last is None:
        last = _read_pair(raw[-1])
    before, text, repeated, carries = head
    name, value, member, also = last
    if repeated or name in before:
        return _read_all(header_pairs(raw))
    headers = before.copy()
    if two:
        if length is None:
            length = _read_pair(raw[-2])
        length_name, length_value, length_member, length_also = length
        if length_name in before or length_name == name:
            return _read_all(header_pairs(raw))
        headers[length_name] = length_value
        member = f"{length_member}, {member}"
        also = length_also + also
    headers[name] = value
    return headers, f"{text[:-1]}, {member}}}" if before else f"{{{member}}}", False, carries + also


def _read_all(pairs: list[HeaderPair]) -> HeadersRead:
    if not pairs:
        return _NO_HEADERS
    names, values, members, carries = zip(*pairs, strict=True)
    headers = dict(zip(names, values, strict=True))
    credentials = tuple(chain.from_iterable(carries))
    if len(headers) == len(pairs):
        return headers, "{" + ", ".join(members) + "}", False, credentials
    headers = {}
    for name, value in zip(names, values, strict=True):
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers, json.dumps(headers), True, credentials


def redacted_headers(raw: Sequence[tuple[bytes, bytes]]) -> tuple[dict[str, str], str, bool]:
    """``redact_headers(raw)``, the same as JSON (exactly ``json.dumps`` of that dict), and
    whether a name was repeated (its values are joined in the dict)."""
    headers, text, repeated, _ = read_headers(raw)
    return dict(headers), text, repeated


@functools.lru_cache(maxsize=1024)
def is_secret_param(name: str) -> bool:
    """Whether a query parameter's value is a credential: the names in
    :data:`SECRET_PARAMS`, and any name ending in ``key``, ``token``, ``secret``,
    ``password``, ``signature`` or ``credential`` (Azure API Management's
    ``subscription-key``, ``x-api-key``, ``client_secret``, ``X-Amz-Signature``), but not a
    list's ``page_token`` / ``pageToken``."""
    name = name.lower().replace("-", "_")
    if name in SECRET_PARAMS:
        return True
    return name.endswith(_SECRET_PARAM_ENDS) and not name.endswith(("page_token", "pagetoken"))


def redact_query(query: str) -> str:
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(is_secret_param(k) for k, _ in pairs):
        return query
    return urlencode([(k, REDACTED if is_secret_param(k) else v) for k, v in pairs], safe="[]")


#: ``name=value`` in free text (an exception's words quoting some URL) where the name says
#: the value is a credential.
_SECRET_IN_TEXT = re.compile(
    r"(?i)\b((?:[\w.-]*?)(?:key|token|secret|password|signature|sig|credentials?))=([^&\s'\"<>]+)"
)


def scrub_text(request_headers: Iterable[tuple[bytes, bytes]], text: str) -> str:
    """``text`` (an error message: an exception's words may quote a URL or a header)
    without credentials: the values of ``name=value`` pairs named like credentials, and the
    values of the request's secret headers. (A row's texts also lose the call's other
    credentials, its body fields' included: see :meth:`Credentials.scrub_row`.)"""
    if "=" in text:
        text = _SECRET_IN_TEXT.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    found = Credentials()
    found.add_headers(request_headers)
    return found.scrub(text) if found.values else text


# -- by value -----------------------------------------------------------------------------

#: Values shorter than this are not looked for in other texts (they would match ordinary
#: words); a body field this short is still redacted where it stands (see ``Credentials``).
MIN_VALUE = 8

#: Body fields whose string values are credentials, compared in lower case without ``_``
#: and ``-``, by how the name ends: OAuth's and OIDC's (``access_token``,
#: ``refresh_token``, ``id_token``, ``client_secret``, ``assertion``, ``client_assertion``,
#: ``subject_token``, ``password``), a gateway's upstream key (``api_key``, ``apiKey``,
#: ``openai_api_key``), ChatKit's ``client_secret``, private and secret keys. Not ``token``
#: or ``key`` alone (log-probabilities have a ``token``), not ``max_tokens`` (ends in s).
_FIELD_ENDS = (
    "apikey",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "sessiontoken",
    "authtoken",
    "bearertoken",
    "subjecttoken",
    "actortoken",
    "secret",
    "password",
    "passwd",
    "assertion",
    "privatekey",
    "secretkey",
    "secretaccesskey",
)
#: The last path segment of endpoints whose answer's top-level ``value`` is a new
#: credential: OpenAI's admin API keys, a service account's API keys, realtime client
#: secrets. (A credential field holding an object has its ``value`` taken anywhere:
#: a service account's ``api_key``, a realtime session's ``client_secret``.)
MINTING_ENDPOINTS = frozenset({"admin_api_keys", "api_keys", "client_secrets"})
#: Objects are searched this deep (lists are not entered: messages, tools, and the other
#: places a conversation's content lives are lists, and content is never redacted by name).
_FIELD_DEPTH = 6


@functools.lru_cache(maxsize=4096)
def is_credential_field(name: str) -> bool:
    """Whether a body field (a JSON member, a form field) holds a credential, by its name."""
    return name.lower().replace("_", "").replace("-", "").endswith(_FIELD_ENDS)


#: Field name → :func:`is_credential_field`, for the walk through every response: a plain
#: dict is read in the loop itself, without a call.
_fields: dict[str, bool] = {}


def _is_field(name: str) -> bool:
    secret = is_credential_field(name)
    if len(_fields) >= 4096:
        _fields.clear()
    if name.__class__ is str:
        _fields[name] = secret
    return secret


#: value → the texts it is looked for as (longest first); the same keys come with every call.
_forms: dict[str, tuple[str, ...]] = {}
_FORMS_MAX = 1024


def _forms_of(value: str) -> tuple[str, ...]:
    """``value`` as it may be written: raw, JSON-escaped (also with ``\\/``), URL-encoded."""
    found = _forms.get(value)
    if found is None:
        escaped = json.dumps(value)[1:-1]
        texts = {value, escaped, escaped.replace("/", "\\/"), quote(value, safe=""), quote_plus(value)}
        found = tuple(sorted(texts, key=len, reverse=True))
        if len(_forms) >= _FORMS_MAX:
            _forms.clear()
        _forms[value] = found
    return found


#: The key (not a column) a row gets when its response held a credential, the request's or
#: a new one: the response cache never stores that response (a replay would have to serve
#: the credential, or an answer changed by scrubbing).
CREDENTIAL_IN_RESPONSE = "_credential_in_response"
#: Columns that say only what the request was: a credential found in them alone does not
#: make the response unfit for the cache.
_REQUEST_COLUMNS = frozenset({"url", "request_headers", "request_body"})


class Credentials:
    """The credential values one call carried (its request's secret headers, query
    parameters and body fields) or received (credential fields of its response), to be
    removed from everything the call stores. Built and used in the background writer."""

    __slots__ = ("fields", "values")

    def __init__(self) -> None:
        self.values: list[str] = []
        #: ``(name, value)`` of credential body fields too short to look for by value.
        self.fields: list[tuple[str, str]] = []

    def __bool__(self) -> bool:
        return bool(self.values or self.fields)

    def add(self, value: str, name: str | None = None) -> bool:
        value = value.strip()
        if len(value) >= MIN_VALUE:
            if value not in self.values:
                self.values.append(value)
            return True
        if value and name is not None:
            self.fields.append((name, value))
            return True
        return False

    def add_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """The values of secret headers: a token without its scheme (``Bearer``), a Basic
        password, each cookie's value."""
        self.add_found(chain.from_iterable(map(_CARRIES, header_pairs(headers))))

    def add_found(self, found: Iterable[str]) -> None:
        """Credential values read already (:func:`read_headers`), as :meth:`add` keeps them."""
        values = self.values
        for value in found:
            if value not in values:
                values.append(value)

    def add_query(self, query: str) -> None:
        if query:
            for name, value in parse_qsl(query, keep_blank_values=True):
                if is_secret_param(name):
                    self.add(value, name)

    def add_form(self, body: bytes) -> None:
        """Credential fields of a form-encoded body (an OAuth token request)."""
        for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
            if is_credential_field(name):
                self.add(value, name)

    def add_fields(self, data: Any, *, minting: bool = False) -> bool:
        """Credential fields of a decoded JSON body (objects, not lists); ``minting``: the
        top-level ``value`` is one too. Whether any was found."""
        if data.__class__ is not dict:
            return False
        found = False
        if minting and data.get("value").__class__ is str:
            found = self.add(data["value"], "value")
        return self._walk(data, 0) or found

    def add_answer(self, data: Any, path: str) -> bool:
        """Credential fields of a decoded response body to a request for ``path``."""
        return self.add_fields(data, minting=path.rstrip("/").rpartition("/")[2] in MINTING_ENDPOINTS)

    def _walk(self, data: dict[str, Any], depth: int) -> bool:
        found = False
        known = _fields
        for name, value in data.items():
            kind = value.__class__
            if kind is str:
                secret = known.get(name)
                if secret is None:
                    secret = _is_field(name)
                if secret:
                    found = self.add(value, name) or found
            elif kind is dict and depth < _FIELD_DEPTH:
                if is_credential_field(name) and value.get("value").__class__ is str:
                    found = self.add(value["value"], "value") or found  # {"value": ..., "expires_at": ...}
                found = self._walk(value, depth + 1) or found
        return found

    def forms(self) -> list[str]:
        """Every text a credential may be written as, longest first."""
        if len(self.values) == 1:
            return list(_forms_of(self.values[0]))
        return sorted({form for value in self.values for form in _forms_of(value)}, key=len, reverse=True)

    def scrub(self, text: str, forms: list[str] | None = None) -> str:
        """``text`` with every credential replaced by ``[redacted]``."""
        for form in self.forms() if forms is None else forms:
            if form in text:
                text = text.replace(form, REDACTED)
        for name, value in self.fields:
            text = _scrub_field(text, name, value)
        return text

    def found_in(self, data: bytes) -> bool:
        """Whether ``data`` (a response body, UTF-8) holds any of the credentials."""
        return any(form.encode() in data for form in self.forms())

    def scrub_row(
        self, row: dict[str, Any], texts: Callable[[dict[str, Any]], tuple[Any, ...]] | None = None
    ) -> bool:
        """Every text of ``row`` scrubbed in place; whether one that says what the response
        was (its body, text, headers, error) held a credential. ``texts``: gives the values
        of the row's text columns (``operator.itemgetter`` of their names), else every
        string in the row is looked at."""
        forms = self.forms()
        if not self.fields:
            # Usually nothing is found: one search of all the texts at once per form (and
            # no per-column work at all), instead of one per column.
            joined = None
            if texts is not None:
                with contextlib.suppress(TypeError):  # a text column holding something else
                    joined = "\x00".join(filter(None, texts(row)))  # in C: NULLs and "" left out
            if joined is None:
                joined = "\x00".join([text for text in row.values() if text.__class__ is str])
            if not any(form in joined for form in forms):
                return False
        in_response = False
        for column, text in row.items():
            if text.__class__ is str and text:
                scrubbed = self.scrub(text, forms)
                if scrubbed != text:
                    row[column] = scrubbed
                    if column not in _REQUEST_COLUMNS:
                        in_response = True
        return in_response


def _header_credentials(name: str, raw: bytes) -> tuple[str, ...]:
    """The credentials a secret header's value carries, as :meth:`Credentials.add` keeps
    them: a token without its scheme (``Bearer``), a Basic password, each cookie's value."""
    found = Credentials()
    if not raw:
        return ()
    value = raw.decode("latin-1").strip()
    if name in ("cookie", "cookie2", "set-cookie"):
        for part in value.split(";"):
            found.add(part.partition("=")[2])
        return tuple(found.values)
    scheme, _, token = value.partition(" ")
    if not token:
        found.add(value)
        return tuple(found.values)
    found.add(token)
    if scheme.lower() == "basic":
        import base64  # rare: not loaded until a Basic credential comes

        with contextlib.suppress(ValueError):  # binascii.Error, UnicodeDecodeError
            found.add(base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")[2])
    return tuple(found.values)


def _scrub_field(text: str, name: str, value: str) -> str:
    """A short credential redacted only where it is a field's value: ``"name": "value"``
    in JSON, ``name=value`` in a form."""
    member = re.escape(json.dumps(name)) + r"(\s*:\s*)" + re.escape(json.dumps(value))
    text = re.sub(member, lambda m: f'{json.dumps(name)}{m.group(1)}"{REDACTED}"', text)
    pair = r"(?:(?<=^)|(?<=&))" + re.escape(quote_plus(name)) + "=" + re.escape(quote_plus(value)) + "(?=&|$)"
    return re.sub(pair, f"{quote_plus(name)}={REDACTED}", text)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def render_url(scheme: str, host: str, port: int | None, path: str, query: str) -> str:
    """The URL as stored (rows, cache metadata): the default port left out, an IPv6 host in
    brackets, credential query parameters redacted."""
    netloc = host if ":" not in host or host.startswith("[") else f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc = f"{netloc}:{port}"
    query = redact_query(query)
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def server_url(url: str) -> str:
    """A server's URL (a shared cache's ``redis://``, a shared log's ``postgresql://``) as
    shown in messages, logs and ``repr``: the password in it and any credential query
    parameter (``?password=``) redacted, the user name kept."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(an unreadable URL)"
    if password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:{REDACTED}@{host}")
    return urlunsplit(parts._replace(query=redact_query(parts.query)))
