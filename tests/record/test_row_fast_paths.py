"""The writer's per-row fast paths give exactly what the plain code they replaced gave.

Each test holds the straightforward version (the code as it was) and compares on inputs
drawn to reach the edges: repeated names, secrets in any place, headers given as lists,
memos filled by earlier calls.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
from typing import Any

from httptrack import _redact

# -- headers --------------------------------------------------------------------------------


def _plain_headers(raw: list[Any]) -> tuple[dict[str, str], str, bool]:
    headers: dict[str, str] = {}
    repeated = False
    for name_b, value_b in raw:
        name = name_b.decode("latin-1").lower()
        value = _redact.REDACTED if _redact.is_secret_header(name) else value_b.decode("latin-1")
        if name in headers:
            headers[name] = f"{headers[name]}, {value}"
            repeated = True
        else:
            headers[name] = value
    return headers, json.dumps(headers), repeated


def _plain_credentials(raw: list[Any]) -> list[str]:
    """``Credentials.add_headers`` as it was: each secret header's value read as it comes."""
    found = _redact.Credentials()
    for name, value_b in raw:
        if not value_b or not _redact.is_secret_header(name.decode("latin-1")):
            continue
        value = value_b.decode("latin-1").strip()
        if name.lower() in (b"cookie", b"cookie2", b"set-cookie"):
            for part in value.split(";"):
                found.add(part.partition("=")[2])
            continue
        scheme, _, token = value.partition(" ")
        if not token:
            found.add(value)
            continue
        found.add(token)
        if scheme.lower() == "basic":
            with contextlib.suppress(ValueError):
                found.add(base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")[2])
    return found.values


_NAMES = [
    b"Host",
    b"content-type",
    b"Content-Length",
    b"Authorization",
    b"x-api-key",
    b"Cookie",
    b"Set-Cookie",
    b"X-Stainless-Lang",
    b"x-request-id",
    b"X-Custom-Token",
    b"accept",
]
_VALUES = [
    b"",
    b"api.openai.com",
    b"application/json",
    b"108",
    b"Bearer sk-live-0123456789",
    b"Bearer short",
    b"sk-naked-0123456789",
    b"  padded-secret-value  ",
    b"Basic " + base64.b64encode(b"user:basic-password-1"),
    b"Basic !!not-base64!!",
    b"a=first-cookie-value; b=second-cookie-value; c=x",
    b'q"uote\\ \xe9t\xe9 \x00\x1f\x7f',
    b"same-as-before",
]


def _draw_headers(rng: random.Random) -> list[Any]:
    raw: list[Any] = [
        (rng.choice(_NAMES), rng.choice(_VALUES)) for _ in range(rng.choice((0, 1, 1, 2, 3, 5, 17)))
    ]
    if raw and rng.random() < 0.1:
        at = rng.randrange(len(raw))
        raw[at] = list(raw[at])  # a pair given as a list
    return raw


def test_read_headers_is_the_plain_reading() -> None:
    rng = random.Random(19)
    sent: list[list[Any]] = []
    for _ in range(1500):
        if sent and rng.random() < 0.5:
            # A header list seen before but for its last pair (a new Content-Length), or
            # exactly: what the memos answer.
            raw = list(rng.choice(sent))
            if raw and rng.random() < 0.7:
                raw[-1] = (rng.choice(_NAMES), rng.choice(_VALUES))
            if len(raw) > 1 and rng.random() < 0.5:  # as httpx sends json=: then Content-Type
                raw[-2] = (rng.choice([b"Content-Length", b"content-length"]), rng.choice(_VALUES))
        else:
            raw = _draw_headers(rng)
        sent.append(raw)
        headers, text, repeated, carried = _redact.read_headers(raw)
        assert (headers, text, repeated) == _plain_headers(raw), raw
        assert _redact.redacted_headers(raw) == _plain_headers(raw)
        assert text == json.dumps(headers)
        credentials = _redact.Credentials()
        credentials.add_found(carried)
        assert credentials.values == _plain_credentials(raw), raw
        credentials = _redact.Credentials()
        credentials.add_headers(raw)
        assert credentials.values == _plain_credentials(raw), raw


def test_read_headers_memos_stay_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(_redact, "_pairs", {})
    monkeypatch.setattr(_redact, "_heads", {})
    monkeypatch.setattr(_redact, "_names", {})
    for n in range(3 * _redact._PAIRS_MAX):
        raw = [(b"x-request-id", str(n).encode()), (b"content-length", str(n).encode())]
        assert _redact.read_headers(raw)[1] == json.dumps({"x-request-id": str(n), "content-length": str(n)})
    assert len(_redact._pairs) <= _redact._PAIRS_MAX
    assert len(_redact._heads) <= _redact._HEADS_MAX


# -- scrubbing a row ------------------------------------------------------------------------


def test_scrub_row_by_text_columns_is_the_plain_scrub() -> None:
    """The row's text columns searched at once (``_row._texts``) find what a search of every
    string in the row finds: a credential in any text column, in any of its written forms."""
    from httptrack.log._schema import COLUMNS
    from httptrack.record import _row

    texts = [name for name, sqltype, _ in COLUMNS if sqltype == "TEXT"]
    secret = "sk-live/0123+4567"
    forms = [
        secret,
        json.dumps(secret)[1:-1].replace("/", "\\/"),
        "sk-live%2F0123%2B4567",
        "sk-live%2F0123+4567",
    ]
    rng = random.Random(23)
    for column in texts:
        for form in forms:
            for _ in range(3):
                row: dict[str, Any] = dict.fromkeys(name for name, _, _ in COLUMNS)
                for name in rng.sample(texts, 8):
                    row[name] = rng.choice(["", "text", "[redacted]", "é\x00"])
                row[column] = rng.choice(["{}", "before "]) + form
                if rng.random() < 0.3:
                    row[rng.choice(texts)] = 42  # not a text: every string is searched instead
                plain, fast = dict(row), dict(row)
                credentials = _redact.Credentials()
                credentials.add(secret)
                found = credentials.scrub_row(plain)
                assert _redact.Credentials.scrub_row(credentials, fast, _row._texts) == found
                assert fast == plain
                assert secret not in str(fast.values()), (column, form)


def test_credential_fields_are_found_by_name_as_before() -> None:
    names = [
        "api_key",
        "API-Key",
        "prompt_tokens",
        "access_token",
        "tokens",
        "client_secret",
        "value",
        "passwd",
    ]
    for _ in range(2):  # the second time from the memo
        for name in names:
            credentials = _redact.Credentials()
            assert credentials.add_fields({name: "long-enough-value", "nested": {name: "x" * 9}}) == (
                _redact.is_credential_field(name)
            )


# -- server-sent events ---------------------------------------------------------------------


def _plain_sse(text: str) -> list[tuple[str | None, str, str | None]]:
    """Events of an SSE body with "\\n" line ends, each line read as ``SSEDecoder._line``
    reads it (an unterminated last line kept)."""
    events: list[tuple[str | None, str, str | None]] = []
    event: str | None = None
    data: list[str] = []
    last_id: str | None = None
    for line in text.split("\n"):
        if not line:
            if data:
                events.append((event, "\n".join(data), last_id))
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            last_id = value
    if data:
        events.append((event, "\n".join(data), last_id))
    return events


def test_sse_lines_read_inline_are_read_as_before() -> None:
    from httptrack.record._decoders import SSEDecoder

    lines = [
        "data: x",
        "data:y",
        "data:",
        "data:  two spaces",
        "event: e",
        "event:",
        "id: 7",
        ": note",
        "",
        "",
        "retry: 5",
    ]
    rng = random.Random(29)
    for _ in range(500):
        text = "\n".join(rng.choice(lines) for _ in range(rng.randint(0, 30)))
        if rng.random() < 0.5:
            text += "\n"
        expected = _plain_sse(text)
        whole = SSEDecoder().decode_all([text.encode()])
        assert [(e.event, e.data, e.id) for e in whole] == expected, text
        decoder = SSEDecoder()  # fed in pieces: a line may end in the next one
        data = text.encode()
        cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, 4)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        got = [event for piece in pieces for event in decoder.feed(piece)] + decoder.close()
        assert [(e.event, e.data, e.id) for e in got] == expected, text
