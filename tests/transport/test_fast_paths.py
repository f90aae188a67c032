"""The fast paths taken for speed give exactly what the plain code they replaced gave.

Each test holds the straightforward version (the code as it was, or the standard library
call it stands in for) and compares on inputs chosen to reach the edges: encodings, NULLs,
repeated names, statement-size boundaries, rounding at the millisecond.
"""

from __future__ import annotations

import json
import math
import os
import random
import sqlite3
import struct
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from httptrack import _exchange, _redact
from httptrack._json import loads_bytes, loads_text
from httptrack.cache._entry import CacheEntry
from httptrack.cache._key import _canonical_digest
from httptrack.cache._store import EntryStore
from httptrack.log import _rollup
from httptrack.log._schema import COLUMN_NAMES
from httptrack.log._sqlite import ROWS_PER_INSERT, _insert, connect, migrate
from httptrack.record import _decoders
from httptrack.record import _row as _recorder

# -- JSON bodies ----------------------------------------------------------------------------

BODIES = [
    b'{"model": "m", "messages": [{"role": "user", "content": "caf\\u00e9 \\ud800"}]}',
    b"[]",
    b"  {}  ",
    b'"text"',
    b"1",
    b"",
    b"NaN",
    b"-Infinity",
    b"tru",
    b'{"a": 1}}',
    b"[1] [2]",
    '{"é": "ü"}'.encode(),
    "[1]".encode("utf-16"),
    "[1]".encode("utf-16-le"),
    "[1]".encode("utf-32"),
    b"\xef\xbb\xbf[1]",
    b"[\x00]",
    b"{}\x00",
    b"1\x00",
    b"\t\n\r [1] \t",
    b"\x0c[1]",
    b'{"a": "\xff"}',
    b'{"a"\x00: 1}',
    b'{"a": [1, 2.5, -3e10, true, false, null]}',
    # Where a fast decoder (msgspec) and json part ways: json's answer is the one given.
    b'{"tokens": 123456789012345678901234567890, "n": -9223372036854775809}',
    b"[1e400, -1e400, 1E-400, 2.2250738585072011e-308, 0.1, -0, -0.0]",
    b'{"a": 1, "a": 2}',
    b'"\\ud83d\\ude00 \\u0000 \\/"',
    b"[" * 5000 + b"]" * 5000,
]


def _outcome(function: Any, data: bytes | str) -> tuple[str, str]:
    try:
        return "value", repr(function(data))
    except ValueError as exc:
        return "error", type(exc).__name__
    except RecursionError:
        return "error", "RecursionError"


def test_bodies_are_decoded_by_the_fast_decoder_first() -> None:
    from httptrack import _json

    assert _json._fast is not None  # msgspec is a dependency: these tests exercise it


def test_loads_bytes_is_json_loads() -> None:
    rng = random.Random(5)
    cases = list(BODIES)
    alphabet = b'{}[]",:0123456789.eE+-tfnrulasN \t\n\r\\u\x00\xff\xc3\xa9'
    for _ in range(3000):  # small edits of the samples: the error paths too
        body = bytearray(rng.choice(BODIES))
        for _ in range(rng.randint(1, 3)):
            at = rng.randint(0, len(body))
            if rng.random() < 0.5 and body:
                del body[min(at, len(body) - 1)]
            else:
                body.insert(at, rng.choice(alphabet))
        cases.append(bytes(body))
    for data in cases:
        assert _outcome(loads_bytes, data) == _outcome(json.loads, data), data


def test_loads_text_is_json_loads() -> None:
    rng = random.Random(6)
    texts = [body.decode("utf-8", "replace") for body in BODIES] + ["\ufeff[1]", "\ufeff", " \ufeff1"]
    alphabet = '{}[]",:0123456789.eE+-tfnrulasN \t\n\r\\u\x00\ufeff\u00e9\ud800'
    for _ in range(3000):
        text = list(rng.choice(texts))
        for _ in range(rng.randint(1, 3)):
            at = rng.randint(0, len(text))
            if rng.random() < 0.5 and text:
                del text[min(at, len(text) - 1)]
            else:
                text.insert(at, rng.choice(alphabet))
        texts.append("".join(text))
    for text in texts:
        assert _outcome(loads_text, text) == _outcome(json.loads, text), text


def test_canonical_digest_is_the_documented_form() -> None:
    import hashlib

    body = b'{"stream": false, "model": "m", "messages": [{"content": "Caf\\u00e9", "role": "user"}]}'
    canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert _canonical_digest(body) == (hashlib.sha256(b"json\n" + canonical.encode()).digest(), "m")
    assert _canonical_digest(b"not json") == (hashlib.sha256(b"raw\nnot json").digest(), None)


def _json_canonical_digest(body: bytes) -> tuple[bytes, str | None]:
    """The key's body digest as it was made with json alone (the form stored keys have)."""
    import hashlib

    if not body:
        return hashlib.sha256(b"empty").digest(), None
    if body.lstrip()[:1] in (b"{", b"["):
        try:
            data = loads_bytes(body)
            canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except (ValueError, RecursionError):
            pass
        else:
            model = data.get("model") if isinstance(data, dict) else None
            digest = hashlib.sha256(b"json\n" + canonical.encode("utf-8", "surrogatepass")).digest()
            return digest, model if isinstance(model, str) else None
    return hashlib.sha256(b"raw\n" + body).digest(), None


def _random_json_value(rng: random.Random, depth: int = 0) -> Any:
    def text() -> str:
        ranges = [(32, 126), (0, 31), (0x80, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF)]
        out = []
        for _ in range(rng.randint(0, 6)):
            low, high = rng.choice(ranges)
            out.append(chr(rng.randint(low, high)))
        return "".join(out)

    def number() -> Any:
        kind = rng.randint(0, 4)
        if kind == 0:  # any finite double, bit for bit
            value = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
            return value if math.isfinite(value) else 0.5
        if kind == 1:
            return rng.uniform(-1, 1) * 10 ** rng.randint(-9, 20)
        if kind == 2:
            return round(rng.uniform(0, 2), rng.randint(0, 4))
        return rng.randint(-(2**70), 2**70) if kind == 3 else rng.randint(-9, 9)

    if depth > 3 or rng.random() < 0.5:
        return rng.choice([text, number, lambda: rng.choice([True, False, None])])()
    if rng.random() < 0.5:
        return [_random_json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {text(): _random_json_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def test_canonical_digest_made_by_msgspec_is_byte_for_byte_json_s() -> None:
    """Keys already stored stay found: the digest msgspec makes (when it may) equals the one
    json's encoder made, for bodies that reach every edge: floats of every magnitude (repr's
    exponent notation below 1e-4 and from 1e16), escapes, non-BMP keys, big integers,
    NaN, lone surrogates, bodies written with other spacing and escaping."""
    from httptrack.cache import _key as _cache_key

    edges = [
        *BODIES,
        b'{"t": 1e-05, "u": 0.0001, "v": 1e16, "w": 9999999999999998.0, "x": -0.0, "y": 5e-324}',
        b'{"b": 1e400, "a": NaN, "c": -Infinity}',
        b'{"\\ud83d\\ude00": 1, "\\uffff": 2, "\\u00e9": 3, "e": [1.5E+3, 2e2, 100000000000000000000]}',
        b'{"lone": "\\udc00", "ctl": "\\u0000\\u001f\\u007f\\u2028", "q": "\\"\\\\/"}',
        b'{"model": "gpt-4o", "model": "dup", "temperature": 0.7, "top_p": 1}',
        b"[" * 5000 + b"]" * 5000,
    ]
    rng = random.Random(20260412)
    bodies = list(edges)
    for _ in range(4000):
        value = _random_json_value(rng)
        bodies.append(
            json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1])).encode(
                "utf-8", "surrogatepass"
            )
        )
    fast = 0
    for body in bodies:
        assert _canonical_digest(body) == _json_canonical_digest(body), body[:200]
        fast += _cache_key._fast_canonical(body) is not None
    assert fast > len(bodies) // 2  # the fast path is taken for most of them


def test_body_digest_memo_is_bounded_and_forgets_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import OrderedDict

    from httptrack.cache import _key as _cache_key

    monkeypatch.setattr(_cache_key, "_memo", OrderedDict())
    monkeypatch.setattr(_cache_key, "_memo_bytes", 0)
    monkeypatch.setattr(_cache_key, "_MEMO_TOTAL_BYTES", 4000)
    bodies = [json.dumps({"model": "m", "n": i}).encode() for i in range(200)]
    for body in bodies:
        for _ in range(2):  # memoized the second time it comes (see the next test)
            assert _cache_key.body_digest(body) == _canonical_digest(body)
    memo = _cache_key._memo
    # Each body counted with what its entry costs around it (short bodies: mostly that).
    each = _cache_key._MEMO_ENTRY_BYTES
    assert _cache_key._memo_bytes == sum(len(body) + each for body in memo) <= 4000
    assert list(memo) == bodies[-len(memo) :]  # the newest kept, in order
    assert len(memo) == 4000 // (len(bodies[-1]) + each)
    # A forgotten body gets the same digest again.
    assert _cache_key.body_digest(bodies[0]) == _canonical_digest(bodies[0])
    assert _cache_key.body_digest(bodies[0]) == _canonical_digest(bodies[0])
    assert next(reversed(memo)) == bodies[0]


def _one_by_one_key(salt: bytes, exchange: Any) -> str:
    """The cache key as made before headers were classified by layout: one by one."""
    import hashlib

    from httptrack.cache import _key as _cache_key

    digest, _ = _canonical_digest(exchange.request_body)
    keyed: list[bytes] = []
    secret: list[bytes] = []
    extra = exchange.settings.cache_key_headers
    for name, value in exchange.request_headers:
        lower = name.lower()
        if lower in _cache_key.KEY_HEADERS or (extra and lower in extra):
            keyed.append(lower + b":" + value)
        elif lower not in (b"cookie", b"cookie2") and _redact.is_secret_header(lower.decode("latin-1")):
            secret.append(lower + b":" + value)
    port = "" if exchange.port is None else str(exchange.port)
    url = f"{exchange.method}\n{exchange.scheme}://{exchange.host}:{port}{exchange.path}?{exchange.query}"
    material = b"\n".join(
        (
            _cache_key.KEY_VERSION,
            url.encode(),
            b"\x00".join(sorted(keyed)),
            b"\x00".join(sorted(secret)),
            digest,
        )
    )
    return hashlib.blake2b(material, digest_size=32, key=salt, person=b"httptrack-key").hexdigest()


def test_request_key_is_the_same_whatever_the_headers_layout() -> None:
    # Headers are classified once per layout (their names in order): the key must be the
    # one classifying them one by one gives (entries stored before stay found).
    from types import SimpleNamespace

    from httptrack import Settings
    from httptrack.cache._key import request_key

    rng = random.Random(19)
    names = [
        b"Authorization",
        b"accept",
        b"Accept-Encoding",
        b"x-api-key",
        b"X-Route",
        b"user-agent",
        b"anthropic-version",
        b"Cookie",
        b"x-custom-key",
        b"Idempotency-Key",
        b"OpenAI-Organization",
    ]
    plain, routed = Settings(), Settings(cache_key_headers="x-route")
    seen = set()
    for n in range(300):
        headers = [(rng.choice(names), f"v{rng.randrange(3)}".encode()) for _ in range(rng.randrange(8))]
        exchange = SimpleNamespace(
            request_body=b'{"model": "m", "n": %d}' % (n % 7),
            request_headers=headers,
            settings=rng.choice([plain, routed]),
            method="POST",
            scheme="https",
            host="api.openai.com",
            port=None,
            path="/v1/chat/completions",
            query="",
        )
        for _ in range(2):  # the layout classified, then found
            key, _ = request_key(b"s" * 32, exchange)  # type: ignore[arg-type]
            assert key == _one_by_one_key(b"s" * 32, exchange)
        seen.add(key)
    assert len(seen) > 100


def test_body_digest_memoizes_only_a_body_seen_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    # An app whose every request is new (each a cache miss) holds no memo: its little
    # long-lived objects cost memory (and pinned the allocator's arenas) for nothing.
    from array import array
    from collections import OrderedDict

    from httptrack.cache import _key as _cache_key

    monkeypatch.setattr(_cache_key, "_memo", OrderedDict())
    monkeypatch.setattr(_cache_key, "_memo_bytes", 0)
    monkeypatch.setattr(_cache_key, "_seen", array("q", bytes(8 * _cache_key._SEEN_SLOTS)))
    bodies = [json.dumps({"model": "m", "question": f"q {i}"}).encode() for i in range(500)]
    for body in bodies:
        assert _cache_key.body_digest(body) == _canonical_digest(body)
    assert not _cache_key._memo and _cache_key._memo_bytes == 0
    assert _cache_key.body_digest(bodies[7]) == _canonical_digest(bodies[7])  # it came again
    assert list(_cache_key._memo) == [bodies[7]]
    assert _cache_key.body_digest(bodies[7]) == _canonical_digest(bodies[7])  # from the memo
    assert len(_cache_key._seen) == _cache_key._SEEN_SLOTS  # a fixed size, whatever comes


# -- headers and times ----------------------------------------------------------------------


def _plain_redact(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name_b, value_b in raw:
        name = name_b.decode("latin-1").lower()
        value = _redact.REDACTED if _redact.is_secret_header(name) else value_b.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


@pytest.mark.parametrize(
    "raw",
    [
        [],
        [(b"Content-Type", b"application/json"), (b"Authorization", b"Bearer sk-secret")],
        [(b"X-A", b"\xe9t\xc3\xa9"), (b"x-a", b"2"), (b"Cookie", b"c=1")],
        [(b"A", b'q"uote\\'), (b"K", b"\x00\x1f\x7f"), (b"x-api-key", b"k")],
    ],
)
def test_headers_json_is_json_dumps_of_the_redacted_headers(raw: list[tuple[bytes, bytes]]) -> None:
    for _ in range(2):  # the second time from the memo
        headers, text, repeated = _redact.redacted_headers(raw)
        assert headers == _plain_redact(raw) == _redact.redact_headers(raw)
        assert text == json.dumps(_plain_redact(raw))
        assert repeated == (len(headers) < len(raw))
        assert "sk-secret" not in text


def test_started_at_format_is_unchanged() -> None:
    def plain(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    rng = random.Random(1)
    edges = (0.0, 0.0005, 0.9995, 0.999, 0.9999995, 0.9999996, 0.0000004)
    for _ in range(20000):
        drawn = rng.uniform(0, 4e9)
        for ts in (drawn, int(drawn) + rng.choice(edges)):
            assert _recorder._iso(ts) == plain(ts), ts


# -- provider parsers -----------------------------------------------------------------------


def _plain_openai_usage(raw: Any) -> Any:
    """``read_openai_usage`` as it was: ``dig`` for every nested figure."""
    from httptrack._usage import Usage
    from httptrack.providers._base import as_int, dig

    if not isinstance(raw, dict):
        return None
    if "input_tokens" in raw or "output_tokens" in raw:
        input_tokens = as_int(raw.get("input_tokens"))
        output_tokens = as_int(raw.get("output_tokens"))
        input_details = raw.get("input_tokens_details") or raw.get("input_token_details")
        output_details = raw.get("output_tokens_details") or raw.get("output_token_details")
    else:
        input_tokens = as_int(raw.get("prompt_tokens"))
        output_tokens = as_int(raw.get("completion_tokens"))
        input_details = raw.get("prompt_tokens_details")
        output_details = raw.get("completion_tokens_details")
    if input_tokens is None and output_tokens is None:
        return None
    reasoning = as_int(dig(output_details, "reasoning_tokens"))
    if reasoning is None:
        reasoning = as_int(raw.get("reasoning_tokens"))
    total = as_int(raw.get("total_tokens"))
    if (
        reasoning
        and output_tokens is not None
        and total is not None
        and total == (input_tokens or 0) + output_tokens + reasoning
    ):
        output_tokens += reasoning
    cached = as_int(dig(input_details, "cached_tokens"))
    if cached is None:
        cached = as_int(raw.get("prompt_cache_hit_tokens"))
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=as_int(dig(input_details, "cache_write_tokens")),
        reasoning_tokens=reasoning,
    )
    for source, key, extra in (
        (input_details, "audio_tokens", "input_audio_tokens"),
        (output_details, "audio_tokens", "output_audio_tokens"),
        (input_details, "image_tokens", "input_image_tokens"),
        (output_details, "image_tokens", "output_image_tokens"),
    ):
        value = as_int(dig(source, key))
        if value:
            usage.extra[extra] = value
    return usage


def _random_openai_usage(rng: random.Random) -> Any:
    values: list[Any] = [None, 0, 1, 7, 12, 2**53, -1, 3.0, 3.5, "4", "x", True, False, [], {}, [1]]
    top = (
        "prompt_tokens",
        "completion_tokens",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "reasoning_tokens",
        "prompt_cache_hit_tokens",
    )
    detail_names = (
        "prompt_tokens_details",
        "completion_tokens_details",
        "input_tokens_details",
        "input_token_details",
        "output_tokens_details",
        "output_token_details",
    )
    detail_keys = ("cached_tokens", "cache_write_tokens", "reasoning_tokens", "audio_tokens", "image_tokens")
    raw: dict[str, Any] = {key: rng.choice(values) for key in top if rng.random() < 0.5}
    if rng.random() < 0.3 and isinstance(raw.get("prompt_tokens"), int):
        # a total that gives away reasoning reported beside the output (xAI)
        raw["completion_tokens"] = 5
        raw["reasoning_tokens"] = 3
        raw["total_tokens"] = raw["prompt_tokens"] + 8
    for name in detail_names:
        if rng.random() < 0.4:
            raw[name] = (
                {key: rng.choice(values) for key in detail_keys if rng.random() < 0.5}
                if rng.random() < 0.8
                else rng.choice(values)
            )
    return raw if rng.random() < 0.95 else rng.choice(values)


def test_openai_usage_reads_what_dig_read() -> None:
    from httptrack.providers.openai import read_openai_usage

    rng = random.Random(11)
    for _ in range(20000):
        raw = _random_openai_usage(rng)
        assert repr(read_openai_usage(raw)) == repr(_plain_openai_usage(raw)), raw


# -- stream decoding ------------------------------------------------------------------------


class _PlainSSEDecoder(_decoders.SSEDecoder):
    """``SSEDecoder`` as it was: both line ends searched for afresh on every line."""

    def _push(self, text: str) -> list[_decoders.SSEEvent]:
        events: list[_decoders.SSEEvent] = []
        if not text:
            return events
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._pending_cr:
            self._pending_cr = False
            if text.startswith("\n"):
                text = text[1:]
        buffer = self._buffer + text
        start = 0
        length = len(buffer)
        while start < length:
            cr = buffer.find("\r", start)
            lf = buffer.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, after = lf, lf + 1
            elif cr + 1 < length:
                end, after = cr, cr + 2 if buffer[cr + 1] == "\n" else cr + 1
            else:
                end, after = cr, cr + 1
                self._pending_cr = True
            self._line(buffer[start:end], events)
            start = after
        self._buffer = buffer[start:]
        return events


def test_sse_decoder_finds_the_lines_it_found() -> None:
    rng = random.Random(8)
    fields = ["data: ", "event: x", "id: 7", ": c", "{}", "a", "\u00e9", "\ufeff"]
    parts = [*fields, "\r", "\n", "\r\n", "\n\n", "\r\r"]
    for _ in range(3000):
        data = "".join(rng.choice(parts) for _ in range(rng.randint(0, 40))).encode()
        cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randint(0, 6))))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        fast, plain = _decoders.SSEDecoder(), _PlainSSEDecoder()
        got = [event for piece in pieces for event in fast.feed(piece)] + fast.close()
        want = [event for piece in pieces for event in plain.feed(piece)] + plain.close()
        assert got == want, pieces
        # A whole body is decoded in one piece: the events are those of the pieces.
        assert _decoders.SSEDecoder().decode_all(pieces) == want, pieces


def test_whole_body_decoding_gives_the_events_of_its_pieces() -> None:
    rng = random.Random(9)
    parts = [b'{"a": 1}', b"[1, 2]", b"not json", b"\xc3", b"\xa9", b"\xff", b" ", b"\n", b"\r\n", b"data: 1"]
    for _ in range(3000):
        data = b"".join(rng.choice(parts) for _ in range(rng.randint(0, 30)))
        cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randint(0, 6))))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        for make in (_decoders.SSEDecoder, _decoders.NDJSONDecoder):
            plain = make()
            want = [event for piece in pieces for event in plain.feed(piece)] + plain.close()
            assert make().decode_all(pieces) == want, (make, pieces)


# -- call ids -------------------------------------------------------------------------------


def test_call_ids_are_encoded_as_before() -> None:
    def plain(ms: int, rand: int) -> str:
        value = (ms << 80) | (rand & ((1 << 80) - 1))
        pairs = _exchange._CROCKFORD_PAIRS
        return "".join(pairs[(value >> shift) & 1023] for shift in range(120, -1, -10))

    rng = random.Random(3)
    saved = list(_exchange._last_id)
    try:
        for _ in range(2000):
            now = rng.uniform(0, 2**47 / 1000)
            _exchange._last_id[:] = [0, 0]
            state = _exchange._rng.getstate()
            made = _exchange.new_call_id(now)
            _exchange._rng.setstate(state)
            assert made == plain(int(now * 1000), _exchange._rng.getrandbits(79))
        # Within one millisecond the prefix is reused and the random part counts up.
        _exchange._last_id[:] = [0, 0]
        a, b = _exchange.new_call_id(1.0), _exchange.new_call_id(1.0)
        assert a[:10] == b[:10] and a < b
    finally:
        _exchange._last_id[:] = saved  # ids made later in this process still sort after earlier ones


# -- the insert -----------------------------------------------------------------------------

_PLAIN_INSERT = (
    f"INSERT OR IGNORE INTO calls ({', '.join(COLUMN_NAMES)}) VALUES ({', '.join('?' * len(COLUMN_NAMES))})"
)


@pytest.mark.parametrize(
    "count", [0, 1, 2, 3, ROWS_PER_INSERT - 1, ROWS_PER_INSERT, ROWS_PER_INSERT + 1, 300]
)
@pytest.mark.parametrize("max_variables", [999, 32766, 120])
def test_insert_stores_what_a_plain_insert_stores(tmp_path: Path, count: int, max_variables: int) -> None:
    rng = random.Random(count * 7 + max_variables)

    def row(i: int) -> tuple[Any, ...]:
        values = [rng.choice([None, None, 1, 2.5, "x", "é", 0, ""]) for _ in COLUMN_NAMES[1:]]
        return (f"id{i:05d}", *values)

    rows = [row(i) for i in range(count)]
    if count > 10:  # runs of one shape, shapes mixed, and a repeated id (ignored)
        rows = [rows[0]] * 70 + rows[1:] + [rows[1]]
    fast, plain = connect(tmp_path / "fast.db"), connect(tmp_path / "plain.db")
    migrate(fast)
    migrate(plain)
    _insert(fast, rows, max_variables)
    plain.executemany(_PLAIN_INSERT, rows)
    select = f"SELECT rowid, {', '.join(COLUMN_NAMES)} FROM calls ORDER BY rowid"
    got, expected = fast.execute(select).fetchall(), plain.execute(select).fetchall()
    assert got == expected
    assert [[type(v) for v in r] for r in got] == [[type(v) for v in r] for r in expected]
    assert len(got) == len({r[0] for r in rows})


# -- the rollup -----------------------------------------------------------------------------


def _plain_accumulate(rows: list[tuple[Any, ...]]) -> tuple[dict[Any, _rollup.Totals], int]:
    """The rollup as it was first written: every row added to its seven groups, in order."""
    groups: dict[Any, _rollup.Totals] = {}
    dims = [d for d in _rollup.DIMENSIONS if d]
    first_raw = 2 + len(dims)
    top = 0
    for row in rows:
        top = max(top, row[0])
        vector, bucket = _rollup.contribution(row[first_raw:])
        keys = [("", "", row[1])]
        keys += [(dim, "" if row[2 + i] is None else str(row[2 + i]), row[1]) for i, dim in enumerate(dims)]
        for key in keys:
            totals = groups.get(key)
            if totals is None:
                totals = groups[key] = _rollup.Totals()
            totals.add(vector, bucket)
    return groups, top


def test_rollup_sums_are_those_of_one_pass_per_row() -> None:
    rng = random.Random(7)
    for _ in range(300):
        variety = rng.randint(1, 3)
        days = rng.sample(["2026-01-01", "2026-01-02", "2026-01-03"], rng.randint(1, 3))
        rows = []
        for rowid in range(1, rng.randint(0, 60) + 1):
            dims = [
                rng.choice(["openai", "anthropic", "ollama"][:variety]),
                rng.choice(["gpt", "claude", None][:variety]),
                rng.choice(["u1", None, 5, "5", 1.0, 1][: variety + 3]),
                "svc",
                rng.choice(["chat", "embeddings"][: min(variety, 2)]),
                rng.choice(["success", "error"][: min(variety, 2)]),
            ]
            raw = [
                rng.choice(["success", "error"]),
                rng.choice([0, 1]),
                rng.choice([None, rng.randint(0, 999)]),
                rng.choice([None, rng.randint(0, 99)]),
                rng.choice([None, 5]),
                rng.choice([None, 0, 3]),
                rng.choice([None, 0.0, rng.random() * 1e-3, -0.0, 1e-9]),
                rng.choice([None, rng.random()]),
                rng.choice([None, rng.random() * 3000, 0.0]),
            ]
            rows.append((rowid, rng.choice(days), *dims, *raw))
        fast, fast_top = _rollup._accumulate(rows)
        plain, plain_top = _plain_accumulate(rows)
        assert fast_top == plain_top
        assert fast.keys() == plain.keys()
        for key, totals in plain.items():
            assert repr(fast[key].values) == repr(totals.values), key
            assert fast[key].hist == totals.hist, key


# -- the cache store ------------------------------------------------------------------------


def test_storing_a_batch_still_evicts_expired_and_oldest_entries(tmp_path: Path) -> None:
    store = EntryStore(tmp_path / "cache", 300_000)
    now = time.time()
    for batch in range(20):
        entries = [
            (
                f"k{batch}-{i}",
                CacheEntry(200, ((b"a", b"b"),), (os.urandom(1000),), {}, now, 60.0 if i % 2 else 0.001, {}),
            )
            for i in range(100)
        ]
        assert store.put_many(entries) == 100
    time.sleep(0.01)
    store.put_many([("last", CacheEntry(200, (), (b"x",), {}, time.time(), 60.0, {}))])
    disk = store._open()
    assert disk.volume() <= 300_000
    conn = sqlite3.connect(tmp_path / "cache" / "cache.db")
    expired = conn.execute("SELECT count(*) FROM Cache WHERE expire_time < ?", (time.time(),)).fetchone()[0]
    assert expired == 0 and conn.execute("SELECT count(*) FROM Cache").fetchone()[0] > 0
    store.close()
