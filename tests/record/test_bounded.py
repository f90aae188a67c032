"""Recording a call is bounded, whatever the provider sends (issue 14).

- A compressed body is decoded for the record only up to the body cap (plus a rolling
  window of its end, for the figures there), and only so far: a compression bomb costs the
  app no more memory than an ordinary body at the cap.
- JSON nested deeper than Python's recursion limit, in a response, a stream event or a
  request, still leaves a row with what is known (status, tokens where readable) and a note;
  it never reaches the app's own call.
- Any other failure while a row is built leaves a row with what the transport saw.
- No stall: long JSON is never decoded by json's C scanner in one call (it holds the GIL
  for the whole document); token counts never build tiktoken's Rust encoder (its
  constructor holds the GIL for ~100-200 ms, freezing every thread of the app); the
  encoding loads, and long texts are matched, in bounded steps. How long the GIL is held
  is measured in benchmarks/bench_stall.py, not here.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import tracemalloc
import unicodedata
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import ollama
import openai
import pytest
from helpers import SAMPLES, chunk_stream, one_row, read_rows

import httptrack

REPO = Path(__file__).resolve().parents[2]
CHAT = "https://api.openai.com/v1/chat/completions"
MODELS = "https://api.openai.com/v1/models"
#: Deeper than any recursion limit Python runs with.
DEPTH = 100_000
CAP = 256 * 1024
MIB = 1 << 20


# --------------------------------------------------------------------------- compression


def _brotli() -> Any:
    try:
        import brotli  # type: ignore[import-not-found]
    except ImportError:
        return None
    return brotli


def _zstd() -> Any:
    """A zstd module with ``ZstdCompressor().compressobj()`` or ``ZstdCompressor`` streaming."""
    for name in ("compression.zstd", "backports.zstd", "zstandard"):
        try:
            return __import__(name, fromlist=["ZstdCompressor"])
        except ImportError:
            continue
    return None


def _zstd_decodable() -> bool:
    """Whether httptrack can decode zstd here (the decoder it would use is importable)."""
    from httptrack.record import _decoders

    try:
        _decoders.ContentDecoder("zstd")
    except ValueError:
        return False
    return True


def compress(encoding: str, pieces: Iterator[bytes]) -> bytes:
    """``pieces`` joined and compressed, without holding the whole uncompressed body."""
    out: list[bytes] = []
    if encoding in ("gzip", "deflate", "deflate-raw"):
        wbits = {"gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS, "deflate-raw": -zlib.MAX_WBITS}
        compressor = zlib.compressobj(9, zlib.DEFLATED, wbits[encoding])
        out += [compressor.compress(piece) for piece in pieces]
        out.append(compressor.flush())
    elif encoding == "br":
        brotli = _brotli()
        brotli_compressor = brotli.Compressor(quality=5)
        out += [brotli_compressor.process(piece) for piece in pieces]
        out.append(brotli_compressor.finish())
    elif encoding == "zstd":
        zstd = _zstd()
        if hasattr(zstd, "ZstdCompressor") and hasattr(zstd.ZstdCompressor(), "compressobj"):
            zstd_compressor = zstd.ZstdCompressor().compressobj()  # zstandard
            out += [zstd_compressor.compress(piece) for piece in pieces]
            out.append(zstd_compressor.flush())
        else:
            stdlib_compressor = zstd.ZstdCompressor()  # compression.zstd, backports.zstd
            out += [stdlib_compressor.compress(piece) for piece in pieces]
            out.append(stdlib_compressor.flush())
    return b"".join(out)


ENCODINGS = [
    "gzip",
    "deflate",
    "deflate-raw",
    pytest.param(
        "br",
        marks=pytest.mark.skipif(_brotli() is None, reason="brotli is not installed (pip install brotli)"),
    ),
    pytest.param(
        "zstd",
        marks=pytest.mark.skipif(
            _zstd() is None or not _zstd_decodable(),
            reason="no zstd decoder installed (pip install zstandard)",
        ),
    ),
]


def wire_name(encoding: str) -> str:
    return "deflate" if encoding == "deflate-raw" else encoding


def padded_models_body(pad_bytes: int) -> Iterator[bytes]:
    """An OpenAI model list whose one string field holds ``pad_bytes`` bytes: valid JSON
    that compresses a thousandfold (a zip bomb a provider, or a proxy, could send)."""
    yield b'{"object": "list", "data": [{"id": "gpt-4o", "object": "model", "created": 1, "owned_by": "openai"}], "pad": "'
    for _ in range(pad_bytes // MIB):
        yield b"a" * MIB
    yield b"a" * (pad_bytes % MIB) + b'"}'


def wire(lib: Any, body: bytes, size: int = 16384) -> Any:
    """``body`` as a socket delivers it, in pieces of ``size``."""
    return chunk_stream(lib, [body[i : i + size] for i in range(0, len(body), size)] or [b""])


def compressed_responder(lib: Any, body: bytes, encoding: str, status: int = 200) -> Any:
    def handler(request: Any) -> Any:
        headers = {"content-type": "application/json", "content-encoding": wire_name(encoding)}
        return lib.Response(status, headers=headers, stream=wire(lib, body))

    return handler


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_compression_bomb_is_decoded_only_up_to_the_cap(encoding: str, db: Path) -> None:
    inflated = 64 * MIB
    bomb = compress(encoding, padded_models_body(inflated))
    assert len(bomb) < inflated // 100
    ordinary = compress(encoding, iter([b'{"object": "list", "data": []}']))
    bodies = iter([ordinary, bomb])

    def handler(request: Any) -> Any:
        headers = {"content-type": "application/json", "content-encoding": wire_name(encoding)}
        return httpx2.Response(200, headers=headers, stream=wire(httpx2, next(bodies)))

    transport = httptrack.TrackingTransport(
        httpx2.MockTransport(handler), db=db, cache=False, max_body_bytes=CAP
    )
    with httpx2.Client(transport=transport) as client:
        client.get(MODELS)  # the writer started, its price data loaded: not part of the figure
        assert httptrack.flush(10)
        tracemalloc.start()
        try:
            # The app reads the body as it came (a proxy would): what is allocated from here
            # on is the record's work.
            with client.stream("GET", MODELS) as response:
                received = sum(len(chunk) for chunk in response.iter_raw())
            assert httptrack.flush(60)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert received == len(bomb)
    # What the record may hold: the stored head (the cap, and never less than the 1 MiB
    # kept of any body), a 1 MiB window of the end, pieces of 1 MiB being decoded, and the
    # copies of the head made to parse and store it. Unbounded, it is 64 MiB twice over.
    assert peak < 16 * MIB, f"{peak / MIB:.1f} MiB allocated while recording a {encoding} bomb"
    rows = read_rows(db)
    assert len(rows) == 2
    row = rows[1]
    assert (row["status"], row["http_status"], row["operation"]) == ("success", 200, "models")
    assert row["body_truncated"] == 1
    assert row["response_body"].startswith('{"object": "list"')
    assert len(row["response_body"]) < CAP + 200  # the cap, and the truncation note
    assert "decoded" in row["parse_notes"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_figures_at_the_end_of_a_long_compressed_body_are_still_read(encoding: str, db: Path) -> None:
    # ~3 MiB of embeddings once decoded (longer than what is kept of it), usage at the end.
    vectors = [{"object": "embedding", "index": i, "embedding": [0.125 * (i % 7)] * 1000} for i in range(600)]
    body = json.dumps(
        {
            "object": "list",
            "data": vectors,
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 1234, "total_tokens": 1234},
        }
    ).encode()
    assert len(body) > 3 * MIB
    handler = compressed_responder(httpx2, compress(encoding, iter([body])), encoding)
    transport = httptrack.TrackingTransport(
        httpx2.MockTransport(handler), db=db, cache=False, max_body_bytes=CAP
    )
    with httpx2.Client(transport=transport) as client:
        reply = client.post(
            "https://api.openai.com/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}
        )
    assert reply.status_code == 200  # (httpx2 decodes zstd only with backports.zstd installed)
    row = one_row(db)
    assert (row["status"], row["input_tokens"], row["tokens_estimated"]) == ("success", 1234, 0)
    assert row["body_truncated"] == 1


def test_a_compression_bomb_through_the_openai_sdk(db: Path) -> None:
    bomb = compress("gzip", padded_models_body(32 * MIB))
    transport = httptrack.TrackingTransport(
        httpx2.MockTransport(compressed_responder(httpx2, bomb, "gzip")),
        db=db,
        cache=False,
        max_body_bytes=CAP,
    )
    client = openai.OpenAI(api_key="sk-test-bounded", http_client=httpx2.Client(transport=transport))
    models = client.models.list()
    assert [m.id for m in models.data] == ["gpt-4o"]
    row = one_row(db)
    assert (row["status"], row["http_status"], row["body_truncated"]) == ("success", 200, 1)
    assert len(row["response_body"]) < CAP + 200
    # Decoded piece by piece, only its head and its last MiB held, as a long plain body is.
    assert "body longer than the cap once decoded" in row["parse_notes"]


def test_a_compression_bomb_through_the_ollama_sdk(db: Path) -> None:
    # Ollama's client is httpx underneath; a deflate body whose answer and counts lie past a
    # 32 MiB string.
    def body() -> Iterator[bytes]:
        yield b'{"model": "llama3.2", "created_at": "2026-01-01T00:00:00Z", "message": {"role": "assistant", "content": "'
        for _ in range(32):
            yield b"a" * MIB
        yield b'"}, "done": true, "done_reason": "stop", "prompt_eval_count": 11, "eval_count": 22}'

    bomb = compress("deflate", body())
    transport = httptrack.TrackingTransport(
        httpx.MockTransport(compressed_responder(httpx, bomb, "deflate")),
        db=db,
        cache=False,
        max_body_bytes=CAP,
    )
    reply = ollama.Client(host="http://localhost:11434", transport=transport).chat(
        model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=False
    )
    assert reply.eval_count == 22
    row = one_row(db)
    assert (row["provider"], row["status"], row["body_truncated"]) == ("ollama", "success", 1)
    # Read from the end of the decoded body, as for a long uncompressed one.
    assert (row["input_tokens"], row["output_tokens"], row["tokens_estimated"]) == (11, 22, 0)
    assert row["parse_notes"] == "body longer than the cap once decoded: figures read from its start and end"


def test_a_gzip_bomb_costs_the_app_no_more_than_an_ordinary_answer_does(tmp_path: Path) -> None:
    # Peak RSS of fresh processes: the same call tracked, answered by a 256 MiB gzip bomb
    # and by an ordinary body (what tracking costs the process anyway: SQLite, the price
    # data). Unbounded, recording the bomb took the process past 500 MiB.
    script = textwrap.dedent(
        """
        import resource, sys, zlib
        import httpx2, httptrack
        if sys.argv[1] == "bomb":
            compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
            body = b"".join([compressor.compress(bytes(1 << 20)) for _ in range(256)] + [compressor.flush()])
            encoding = "gzip"
        else:
            body, encoding = b'{"object": "list", "data": []}', "identity"

        class Wire(httpx2.SyncByteStream):
            def __iter__(self):
                for i in range(0, len(body), 16384):
                    yield body[i : i + 16384]

        def handler(request):
            headers = {"content-type": "application/json", "content-encoding": encoding}
            return httpx2.Response(200, headers=headers, stream=Wire())

        transport = httptrack.TrackingTransport(httpx2.MockTransport(handler), db=sys.argv[2], cache=False)
        with httpx2.Client(transport=transport) as client:
            with client.stream("GET", "https://api.openai.com/v1/models") as response:
                size = sum(len(chunk) for chunk in response.iter_bytes())
        assert httptrack.flush(60)
        print(size, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HTTPTRACK")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    peaks = {}
    for kind in ("ordinary", "bomb"):
        out = subprocess.run(
            [sys.executable, "-c", script, kind, str(tmp_path / f"{kind}.db")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        size, peaks[kind] = map(int, out.stdout.split())
    assert size == 256 * MIB
    assert peaks["bomb"] < 2 * peaks["ordinary"], peaks
    rows = read_rows(tmp_path / "bomb.db")
    assert [(r["http_status"], r["body_truncated"]) for r in rows] == [(200, 1)]


# --------------------------------------------------------------------------- deep JSON


def deep(opening: str = "[", closing: str = "]") -> str:
    return opening * DEPTH + closing * DEPTH


CHAT_REPLY = {
    "id": "chatcmpl-deep",
    "object": "chat.completion",
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 13, "completion_tokens": 2, "total_tokens": 15},
}


def with_deep_field(obj: dict[str, Any], nested: str) -> bytes:
    """``obj`` as JSON with one more member, ``"deep"``, nested ``DEPTH`` levels."""
    return (json.dumps(obj)[:-1] + ', "deep": ' + nested + "}").encode()


def deep_note(row: dict[str, Any]) -> bool:
    return "nested too deeply" in (row["parse_notes"] or "")


def json_reply(status: int, body: bytes) -> Any:
    def handler(request: Any) -> Any:
        return httpx2.Response(status, headers={"content-type": "application/json"}, content=body)

    return handler


def raw_client(lib: Any, db: Path, handler: Any, **options: Any) -> Any:
    options.setdefault("cache", False)
    return lib.Client(transport=httptrack.TrackingTransport(lib.MockTransport(handler), db=db, **options))


@pytest.mark.parametrize("nested", [deep(), deep('{"a":', "}")], ids=["arrays", "objects"])
def test_a_deeply_nested_response_still_yields_its_row(nested: str, db: Path) -> None:
    body = with_deep_field(CHAT_REPLY, nested)
    handler = json_reply(200, body)
    with raw_client(httpx2, db, handler) as client:
        reply = client.post(
            CHAT, json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Capital?"}]}
        )
    assert reply.content == body
    row = one_row(db)
    assert (row["status"], row["http_status"], row["model"]) == ("success", 200, "gpt-4o")
    # The figures outside the deep member are still read.
    assert (row["input_tokens"], row["output_tokens"], row["tokens_estimated"]) == (13, 2, 0)
    assert row["response_model"] == "gpt-4o-2024-08-06"
    assert deep_note(row)
    assert httptrack.fault_counts().get("record", 0) == 0


def test_a_deeply_nested_error_response_is_an_error_row(db: Path) -> None:
    body = with_deep_field({"error": {"message": "bad things", "type": "invalid_request_error"}}, deep())
    handler = json_reply(400, body)
    with raw_client(httpx2, db, handler) as client:
        assert client.post(CHAT, json={"model": "gpt-4o", "messages": []}).status_code == 400
    row = one_row(db)
    assert (row["status"], row["http_status"], row["error_code"]) == ("error", 400, "invalid_request_error")
    assert row["error_message"] == "bad things"


def sse(obj: Any) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"


def chunk(content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    delta = {"content": content} if content is not None else {}
    return {
        "id": "chatcmpl-deep",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


USAGE_CHUNK = {
    **chunk(),
    "choices": [],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
}


def test_a_deeply_nested_stream_event_is_skipped_not_fatal(db: Path) -> None:
    events = [
        sse(chunk("Hel")),
        sse(with_deep_field(chunk("lo"), deep())),
        sse(chunk(None, "stop")),
        sse(USAGE_CHUNK),
        b"data: [DONE]\n\n",
    ]

    def handler(request: Any) -> Any:
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, stream=chunk_stream(httpx2, events)
        )

    request = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True}, "messages": []}
    with raw_client(httpx2, db, handler) as client:
        reply = client.post(CHAT, json=request)
    assert reply.content == b"".join(events)
    row = one_row(db)
    assert (row["status"], row["stream"], row["outcome"]) == ("success", 1, "complete")
    assert (row["input_tokens"], row["output_tokens"], row["tokens_estimated"]) == (9, 3, 0)
    assert row["finish_reason"] == "stop"
    assert deep_note(row)


def test_a_deeply_nested_usage_event_never_reaches_the_app_as_an_error(db: Path) -> None:
    # The app did not ask for usage: httptrack asks for it and hides the usage event from the
    # app, which means reading the event on the app's thread. One nested too deeply to read
    # is passed on as it is; the call goes on.
    deep_usage = sse(with_deep_field(USAGE_CHUNK, deep()))
    events = [sse(chunk("Hi")), sse(chunk(None, "stop")), deep_usage, b"data: [DONE]\n\n"]
    seen: list[bytes] = []

    def handler(request: Any) -> Any:
        seen.append(request.content)
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, stream=chunk_stream(httpx2, events)
        )

    with raw_client(httpx2, db, handler) as client:
        reply = client.post(CHAT, json={"model": "gpt-4o", "stream": True, "messages": []})
    assert b"include_usage" in seen[0]  # httptrack asked for the usage chunk
    assert reply.content == b"".join(events)
    row = one_row(db)
    assert (row["status"], row["http_status"], row["outcome"]) == ("success", 200, "complete")
    assert row["output_tokens"] is not None  # counted locally: the usage event could not be read
    assert deep_note(row)


def test_a_deeply_nested_ndjson_line_is_skipped_not_fatal(db: Path) -> None:
    lines = [
        {"model": "llama3.2", "message": {"role": "assistant", "content": "Hel"}, "done": False},
        None,
        {"model": "llama3.2", "message": {"role": "assistant", "content": ""}, "done": True,
         "done_reason": "stop", "prompt_eval_count": 7, "eval_count": 4},
    ]  # fmt: skip
    body = b"".join(
        (
            with_deep_field({"model": "llama3.2", "done": False}, deep())
            if line is None
            else json.dumps(line).encode()
        )
        + b"\n"
        for line in lines
    )

    def handler(request: Any) -> Any:
        return httpx.Response(200, headers={"content-type": "application/x-ndjson"}, content=body)

    with raw_client(httpx, db, handler) as client:
        reply = client.post("http://localhost:11434/api/chat", json={"model": "llama3.2", "messages": []})
    assert reply.content == body
    row = one_row(db)
    assert (row["provider"], row["status"], row["outcome"]) == ("ollama", "success", "complete")
    assert (row["input_tokens"], row["output_tokens"], row["tokens_estimated"]) == (7, 4, 0)
    assert deep_note(row)


def test_a_deeply_nested_json_array_element_keeps_what_came_before(db: Path) -> None:
    first = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1, "totalTokenCount": 6},
        "modelVersion": "gemini-2.5-flash",
    }
    body = b"[" + json.dumps(first).encode() + b",\n" + with_deep_field({"candidates": []}, deep()) + b"]"

    def handler(request: Any) -> Any:
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=body)

    url = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    with raw_client(httpx2, db, handler) as client:
        reply = client.post(url, json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert reply.content == body
    row = one_row(db)
    assert (row["provider"], row["status"], row["http_status"]) == ("gemini", "success", 200)
    assert row["input_tokens"] == 5
    assert deep_note(row)


def test_a_deeply_nested_request_is_sent_cached_and_recorded(db: Path, cache_dir: Path) -> None:
    # The app's own request, nested too deeply: the cache key falls back to the raw bytes
    # (on the app's thread: no fault), the row still has the answer's figures.
    request = with_deep_field({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, deep())
    sent: list[bytes] = []

    def handler(request: Any) -> Any:
        sent.append(request.content)
        return httpx2.Response(200, headers={"content-type": "application/json"}, json=CHAT_REPLY)

    with raw_client(httpx2, db, handler, cache=True, cache_dir=cache_dir) as client:
        first = client.post(CHAT, content=request, headers={"content-type": "application/json"})
        assert httptrack.flush(10)  # stored in the cache by the writer
        second = client.post(CHAT, content=request, headers={"content-type": "application/json"})
    assert first.json() == second.json() == CHAT_REPLY
    assert sent == [request]  # the second was served from the cache
    assert second.headers["x-httptrack-cache"] == "HIT"
    rows = read_rows(db)
    assert [r["cached"] for r in rows] == [0, 1]
    assert (rows[0]["status"], rows[0]["input_tokens"], rows[0]["output_tokens"]) == ("success", 13, 2)
    assert rows[0]["model"] == "gpt-4o"  # read from the request's outer members
    assert deep_note(rows[0])
    assert httptrack.fault_counts() == {}


def test_any_failure_while_building_a_row_still_leaves_a_row(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from httptrack.record import _row

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(_row, "_price", broken)
    handler = json_reply(200, json.dumps(CHAT_REPLY).encode())
    with raw_client(httpx2, db, handler) as client:
        reply = client.post(
            CHAT, json={"model": "gpt-4o", "messages": []}, headers={"X-Httptrack-User": "ann"}
        )
    assert reply.status_code == 200
    row = one_row(db)
    assert (row["provider"], row["operation"], row["endpoint"]) == ("openai", "chat", "/v1/chat/completions")
    assert (row["status"], row["http_status"], row["outcome"], row["user"]) == (
        "success",
        200,
        "complete",
        "ann",
    )
    assert row["latency_ms"] is not None and row["response_bytes"] == len(reply.content)
    assert "RecursionError" in row["parse_notes"]
    assert row["request_body"] is None and row["response_body"] is None  # not read: not stored
    assert httptrack.fault_counts().get("record") == 1


# --------------------------------------------------------------------------- no stall


def test_long_json_is_never_decoded_in_one_c_call(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # json's C scanner holds the GIL for a whole document (10 MB: 100-400 ms): the writer
    # decodes long bodies and events with the pure-Python scanner, to the same figures.
    from httptrack import _json

    scanned: list[int] = []
    scan = _json._scan

    def recorded(text: str, index: int) -> Any:
        scanned.append(len(text) - index)
        return scan(text, index)

    monkeypatch.setattr(_json, "_scan", recorded)
    vectors = [{"object": "embedding", "index": i, "embedding": [0.1 + i / 1000] * 1000} for i in range(300)]
    reply = {"object": "list", "data": vectors, "model": "text-embedding-3-small"}
    reply["usage"] = {"prompt_tokens": 321, "total_tokens": 321}
    body = json.dumps(reply).encode()
    prompt = {"model": "text-embedding-3-small", "input": ["word " * 100] * 1000}
    # (NaN: JSON only json's own C scanner reads, which shows the spy above is in place.)
    events = [sse(chunk("x" * 300_000)), sse(chunk(None, "stop")), sse(USAGE_CHUNK), sse(b'{"n": NaN}')]
    events.append(b"data: [DONE]\n\n")

    def handler(request: Any) -> Any:
        if request.url.path.endswith("/embeddings"):
            return httpx2.Response(200, headers={"content-type": "application/json"}, content=body)
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, stream=chunk_stream(httpx2, events)
        )

    with raw_client(httpx2, db, handler) as client:
        client.post("https://api.openai.com/v1/embeddings", json=prompt)
        stream = {
            "model": "gpt-4o",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [],
        }
        client.post(CHAT, json=stream)
    rows = read_rows(db)
    assert len(body) > 2 * MIB and len(json.dumps(prompt)) > 500_000
    assert (rows[0]["input_tokens"], rows[0]["model"], rows[0]["tokens_estimated"]) == (
        321,
        "text-embedding-3-small",
        0,
    )
    assert (rows[1]["output_tokens"], len(rows[1]["response_text"])) == (3, 300_000)
    assert scanned and max(scanned) <= 256 * 1024  # the rest went through the pure-Python scanner


def corpus() -> list[str]:
    """Texts of every kind the estimates meet: provider samples, source code, prose in many
    scripts, emoji, odd whitespace, digits and punctuation runs."""
    texts = [p.read_text(encoding="utf-8") for p in sorted(SAMPLES.rglob("*.json"))]
    texts += [p.read_text(encoding="utf-8") for p in sorted((REPO / "httptrack").glob("_*.py"))]
    texts += [(REPO / "README.md").read_text(encoding="utf-8")]
    rng = random.Random(14)
    alphabet = [
        (0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
        (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0x1F300, 0x1F64F),
    ]  # fmt: skip
    for _ in range(300):
        pieces = []
        for _ in range(rng.randint(1, 200)):
            low, high = rng.choice(alphabet)
            chars = (chr(rng.randint(low, high)) for _ in range(rng.randint(1, 12)))
            # Characters assigned in Unicode 14 only: newer ones may be letters to the regex
            # module and unassigned to tiktoken's Rust (or the other way round).
            pieces.append("".join(c for c in chars if unicodedata.category(c) != "Cn"))
            pieces.append(
                rng.choice([" ", "  ", "\n", "\n\n", "\r\n", "\t", " \n ", "", "'s ", "123456", "...", "/"])
            )
        texts.append("".join(pieces))
    return texts


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return corpus()


def tiktoken_reference(name: str) -> Any:
    """tiktoken's own encoder over the shipped ranks (built here, in the tests only)."""
    import tiktoken

    from httptrack.record import _tokens as T

    return tiktoken.Encoding(
        name=name,
        pat_str=T._PAT_STR[name],
        mergeable_ranks=T._read_ranks(name),
        special_tokens=dict(T._SPECIAL_TOKENS[name]),
    )


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_token_ids_are_tiktokens(name: str, texts: list[str]) -> None:
    from httptrack.record import _tokens as T

    reference = tiktoken_reference(name)
    encoding = T.load_encoding(name)
    for text in texts:
        assert encoding.encode(text, disallowed_special=()) == reference.encode(
            text, disallowed_special=()
        ), text[:80]


def test_counting_never_builds_tiktokens_rust_encoder() -> None:
    # tiktoken's Encoding() hands 200,000 ranks to its Rust constructor, which holds the GIL
    # while it copies them and builds its tables (~100-200 ms): every thread of the app stops.
    script = textwrap.dedent(
        """
        import tiktoken, tiktoken.core, tiktoken._tiktoken
        def refuse(*args, **kwargs):
            raise AssertionError("tiktoken's encoder was built")
        tiktoken.core.Encoding.__init__ = refuse
        tiktoken._tiktoken.CoreBPE = refuse
        from httptrack.record import _tokens
        print(_tokens.count_text("tiktoken is great!", "gpt-4o"), _tokens.count_text("tiktoken is great!", "gpt-4"))
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["6", "6"]


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_the_encoding_loads_in_bounded_steps(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from httptrack.record import _tokens as T

    whole = T._read_ranks(name)
    steps: list[int] = []
    add_lines = T._add_lines

    def recorded(ranks: dict[bytes, int], lines: bytes) -> None:
        steps.append(len(lines))
        add_lines(ranks, lines)

    monkeypatch.setattr(T, "_add_lines", recorded)
    monkeypatch.setattr(T, "_LOAD_STEP", 4096)
    assert T._read_ranks(name) == whole
    assert len(steps) > 100
    assert max(steps) <= 4096 + 256  # a step, and the rest of the line it ends in


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_long_texts_are_matched_in_bounded_segments(
    name: str, texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The regular expression runs over 64 KiB at a time (the GIL is taken to build each
    # segment's pieces); cut into 48-character segments here, the corpus still splits into
    # tiktoken's pieces, to the same ids.
    from httptrack.record import _bpe
    from httptrack.record import _tokens as T

    reference = tiktoken_reference(name)
    encoding = T.load_encoding(name)
    segments: list[int] = []
    split = _bpe._split

    def recorded(findall: Any, text: str, size: int) -> Iterator[list[str]]:
        for pieces in split(findall, text, size):
            segments.append(sum(map(len, pieces)))
            yield pieces

    monkeypatch.setattr(_bpe, "_split", recorded)
    monkeypatch.setattr(_bpe, "_SEGMENT", 48)
    for text in texts:
        assert encoding.encode(text, disallowed_special=()) == reference.encode(
            text, disallowed_special=()
        ), text[:80]
    assert max(segments) <= 48 * 16  # a segment with no whole piece grows, up to 16 times
    assert len(segments) > 20 * len(texts)


def test_a_long_run_without_a_break_is_counted_in_windows() -> None:
    from httptrack.record import _tokens as T

    # One "word" of 200,000 letters: byte-pair merging is quadratic in a word's length, so a
    # word this long is merged in windows (a count within a few tokens of the exact one).
    count = T.count_text("ab" * 100_000, "gpt-4o")
    assert 200_000 // 8 < count < 200_000 // 2
