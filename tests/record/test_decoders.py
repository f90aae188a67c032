"""Stream decoders: the same events however the bytes were split (fuzzed)."""

from __future__ import annotations

import gzip
import json
import zlib

from helpers import split_at
from hypothesis import given, settings
from hypothesis import strategies as st

from httptrack.record._decoders import ContentDecoder, JSONArrayDecoder, NDJSONDecoder, SSEDecoder, SSEEvent


def feed_all(decoder, pieces):  # type: ignore[no-untyped-def]
    out = []
    for piece in pieces:
        out.extend(decoder.feed(piece))
    out.extend(decoder.close())
    return out


SSE = (
    '\ufeffevent: message_start\r\ndata: {"a": 1}\r\n\r\n'
    ": a comment\n"
    "data: first line\ndata: second line\n\n"
    'event: x\rdata: {"t": "héllo – 世界 🌍"}\r\r'
    "id: 7\ndata:no-space\n\n"
    "data: [DONE]\n\n"
).encode()
SSE_EVENTS = [
    SSEEvent("message_start", '{"a": 1}'),
    SSEEvent(None, "first line\nsecond line"),
    SSEEvent("x", '{"t": "héllo – 世界 🌍"}'),
    SSEEvent(None, "no-space", "7"),
    SSEEvent(None, "[DONE]", "7"),  # the last event id persists, as the SSE spec says
]


def test_sse_whole() -> None:
    assert feed_all(SSEDecoder(), [SSE]) == SSE_EVENTS


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_sse_split_anywhere(cuts: list[int]) -> None:
    assert feed_all(SSEDecoder(), split_at(SSE, cuts)) == SSE_EVENTS


def test_sse_byte_by_byte_and_cut_short() -> None:
    assert feed_all(SSEDecoder(), [bytes([b]) for b in SSE]) == SSE_EVENTS
    # A stream cut mid-event still yields what arrived.
    assert feed_all(SSEDecoder(), [b'data: {"a": 1}\n\ndata: part']) == [
        SSEEvent(None, '{"a": 1}'),
        SSEEvent(None, "part"),
    ]


NDJSON = "\n".join(json.dumps({"i": i, "text": "ünïcödé " * i}) for i in range(20)).encode() + b"\n"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_ndjson_split_anywhere(cuts: list[int]) -> None:
    items = feed_all(NDJSONDecoder(), split_at(NDJSON, cuts))
    assert [i["i"] for i in items] == list(range(20))


def test_ndjson_without_final_newline_and_junk() -> None:
    assert feed_all(NDJSONDecoder(), [b'{"a": 1}\nnot json\n{"b"', b": 2}"]) == [
        {"a": 1},
        "not json",
        {"b": 2},
    ]


ARRAY = (
    b'[{"candidates": [{"content": {"parts": [{"text": "a ]} tricky"}]}}]}\r\n,\r\n'
    b'{"usageMetadata": {"promptTokenCount": 3}}\r\n, 12345, -6.25e3, true, null, "s"\r\n]'
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_json_array_split_anywhere(cuts: list[int]) -> None:
    items = feed_all(JSONArrayDecoder(), split_at(ARRAY, cuts))
    assert items == json.loads(ARRAY)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0, max_value=3000), max_size=10))
def test_decoders_never_raise_on_garbage(data: bytes, cuts: list[int]) -> None:
    for decoder in (SSEDecoder(), NDJSONDecoder(), JSONArrayDecoder()):
        feed_all(decoder, split_at(data, cuts))


def test_content_decoder_gzip_and_deflate_in_pieces() -> None:
    body = json.dumps({"x": "y" * 5000}).encode()
    raw_deflate = zlib.compress(body)[2:-4]  # deflate without the zlib wrapper, as some servers send
    for encoding, data in (
        ("gzip", gzip.compress(body)),
        ("deflate", zlib.compress(body)),
        ("deflate", raw_deflate),
    ):
        decoder = ContentDecoder(encoding)
        out = b"".join(piece for i in range(0, len(data), 7) for piece in decoder.decode(data[i : i + 7]))
        assert out + b"".join(decoder.flush()) == body
