"""The response cache, driven as users drive it: the real ``openai`` (httpx2), ``anthropic``
(httpx2) and ``ollama`` (httpx) SDKs, sync and async, against the built-in fake provider,
whose requests are counted to prove what was (not) sent. Expiry runs on an injected clock,
never on sleeps."""

from __future__ import annotations

import asyncio
import base64
import errno
import gzip
import json
import os
import pickle
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anthropic
import diskcache
import httpx
import httpx2
import ollama
import openai
import pytest
from helpers import LIBS, chunk_stream, read_rows, responder

import httptrack
from httptrack._fake import RecordedRequest, mock_transport
from httptrack._faults import fault_counts
from httptrack.cache import _store as _cache_store
from httptrack.cache._entry import CacheEntry, CorruptEntry, decode_entry, encode_entry
from httptrack.cache._policy import ResponseCache
from httptrack.cache._store import shared_store

ROOT = Path(__file__).resolve().parents[2]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CHAT_URL = "https://api.openai.com/v1/chat/completions"
SAME_IN_HITS = (
    "provider",
    "operation",
    "model",
    "response_model",
    "stream",
    "status",
    "outcome",
    "http_status",
    "response_text",
    "response_body",
    "finish_reason",
    "parse_notes",
    "request_id",
    "response_id",
)
FIGURES = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "tokens_estimated",
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def chat_completion(content: str, *, model: str = "gpt-4o-mini", id: str = "chatcmpl-1") -> dict[str, Any]:
    """An OpenAI chat completion body (14 prompt tokens, 2 completion tokens)."""
    message = {"role": "assistant", "content": content}
    return {
        "id": id,
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16},
    }


def tracking(
    inner: Any,
    db: Path,
    cache_dir: Path,
    *,
    asynchronous: bool = False,
    clock: Clock | None = None,
    **options: Any,
) -> Any:
    """A tracking transport over ``inner``, its cache on ``clock`` when given."""
    kind = httptrack.AsyncTrackingTransport if asynchronous else httptrack.TrackingTransport
    transport = kind(inner, db=db, cache_dir=cache_dir, **options)
    if clock is not None:
        transport._tracker.cache = ResponseCache.for_settings(transport.settings, clock=clock)
    return transport


def fake(lib: Any, seen: list[RecordedRequest]) -> Any:
    return mock_transport(lib, record=seen)


def forget_memory(cache_dir: Path) -> None:
    """Make the next lookup read the disk (as another process would)."""
    shared_store(cache_dir, 1 << 30).memory.clear()


def assert_hit_row(hit: dict[str, Any], original: dict[str, Any]) -> None:
    """A hit is recorded exactly like the call it replays, except what a hit changes."""
    assert (original["cached"], hit["cached"]) == (0, 1)
    assert hit["cost_usd"] == 0.0
    assert hit["cost_saved_usd"] == original["cost_usd"] and original["cost_saved_usd"] is None
    assert [hit[c] for c in FIGURES] == [original[c] for c in FIGURES]
    assert hit["cache_key"] == original["cache_key"] and len(hit["cache_key"]) == 64
    for column in SAME_IN_HITS:
        assert hit[column] == original[column], column
    assert (hit["status"], hit["outcome"]) == ("success", "complete")
    assert hit["cost_note"].startswith("served from httptrack's cache")
    assert hit["latency_ms"] is not None and hit["id"] != original["id"]


# -- hits through the SDKs ------------------------------------------------------------------


def test_openai_repeat_is_served_from_the_cache(db: Path, cache_dir: Path) -> None:
    seen: list[RecordedRequest] = []
    client = openai.OpenAI(
        api_key="sk-test-a", http_client=httpx2.Client(transport=tracking(fake(httpx2, seen), db, cache_dir))
    )
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=QUESTION)
    httptrack.flush()
    second = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=QUESTION)
    assert len(seen) == 1
    assert (first.headers["x-httptrack-cache"], second.headers["x-httptrack-cache"]) == ("MISS", "HIT")
    assert second.parse().model_dump() == first.parse().model_dump()
    assert second.http_response.elapsed.total_seconds() >= 0  # built with stream=: elapsed works
    assert second.headers["x-request-id"] == first.headers["x-request-id"] == "req_fake0001"
    original, hit = read_rows(db)
    assert (original["id"], hit["id"]) == (
        first.headers["x-httptrack-call-id"],
        second.headers["x-httptrack-call-id"],
    )
    assert original["cost_usd"] > 0
    assert_hit_row(hit, original)


def test_openai_async_stream_replays_the_same_chunks(db: Path, cache_dir: Path) -> None:
    seen: list[RecordedRequest] = []

    async def main() -> list[list[dict[str, Any]]]:
        transport = tracking(fake(httpx2, seen), db, cache_dir, asynchronous=True)
        client = openai.AsyncOpenAI(api_key="sk-test-a", http_client=httpx2.AsyncClient(transport=transport))
        runs = []
        for _ in range(2):
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=QUESTION, stream=True, stream_options={"include_usage": True}
            )
            runs.append([chunk.model_dump() async for chunk in stream])
            await asyncio.to_thread(httptrack.flush)
        await client.close()
        return runs

    live, replayed = asyncio.run(main())
    assert len(seen) == 1
    assert replayed == live and len(live) > 5
    text = "".join(c["choices"][0]["delta"]["content"] or "" for c in live if c["choices"])
    original, hit = read_rows(db)
    assert original["response_text"] == text and original["stream"] == 1
    assert_hit_row(hit, original)
    assert hit["ttft_ms"] is not None


def test_a_stream_httptrack_asked_usage_for_replays_exactly_what_the_app_saw(
    db: Path, cache_dir: Path
) -> None:
    """The app did not ask for usage; httptrack did (and hid the usage chunk). The cached
    stream holds that chunk, so the replay must hide it again: the app sees the same bytes."""
    seen: list[RecordedRequest] = []
    transport = tracking(fake(httpx2, seen), db, cache_dir)
    with httpx2.Client(transport=transport) as client:
        runs = []
        for _ in range(2):
            with client.stream(
                "POST",
                "https://api.openai.com/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": QUESTION, "stream": True},
            ) as reply:
                runs.append((reply.headers["x-httptrack-cache"], b"".join(reply.iter_raw())))
            httptrack.flush()
    assert len(seen) == 1
    assert seen[0].json()["stream_options"] == {"include_usage": True}  # asked on the wire
    (live_status, live), (hit_status, replayed) = runs
    assert (live_status, hit_status) == ("MISS", "HIT")
    assert replayed == live
    assert b'"usage":{' not in live.replace(b" ", b"")  # never shown to the app
    original, hit = read_rows(db)
    assert original["tokens_estimated"] == 0 and original["output_tokens"] > 0
    note = "httptrack added stream_options.include_usage to the request; the app did not see what it added"
    assert (original["parse_notes"], hit["parse_notes"]) == (note, note)
    assert_hit_row(hit, original)


@LIBS
def test_raw_chunk_boundaries_are_kept(lib: Any, db: Path, cache_dir: Path) -> None:
    seen: list[RecordedRequest] = []
    body = {"model": "gpt-4o-mini", "messages": QUESTION, "stream": True}
    runs = []
    with lib.Client(transport=tracking(fake(lib, seen), db, cache_dir)) as client:
        for _ in range(2):
            with client.stream(
                "POST", CHAT_URL, json=body, headers={"authorization": "Bearer sk-a"}
            ) as response:
                runs.append((response.headers["x-httptrack-cache"], list(response.iter_raw())))
            httptrack.flush()
    (live_status, live), (hit_status, hit) = runs
    assert (live_status, hit_status) == ("MISS", "HIT")
    assert hit == live and len(live) > 5 and all(chunk.endswith(b"\n\n") for chunk in live)
    assert len(seen) == 1


def test_ollama_sync_and_async_stream_and_plain(db: Path, cache_dir: Path) -> None:
    seen: list[RecordedRequest] = []
    client = ollama.Client(transport=tracking(fake(httpx, seen), db, cache_dir))
    live = [p.model_dump() for p in client.chat(model="llama3.2", messages=QUESTION, stream=True)]
    httptrack.flush()
    replayed = [p.model_dump() for p in client.chat(model="llama3.2", messages=QUESTION, stream=True)]
    assert replayed == live and len(live) > 3 and len(seen) == 1

    async def main() -> tuple[Any, Any]:
        aclient = ollama.AsyncClient(transport=tracking(fake(httpx, seen), db, cache_dir, asynchronous=True))
        first = await aclient.embed(model="nomic-embed-text", input=["Paris", "France"])
        await asyncio.to_thread(httptrack.flush)
        second = await aclient.embed(model="nomic-embed-text", input=["Paris", "France"])
        # The sync client's stream is in the same folder: served to the async client too.
        parts = [
            p.model_dump() async for p in await aclient.chat(model="llama3.2", messages=QUESTION, stream=True)
        ]
        assert parts == live
        return first, second

    first, second = asyncio.run(main())
    assert second.model_dump() == first.model_dump()
    assert len(seen) == 2  # the stream once, the embeddings once
    rows = read_rows(db)
    assert [(r["operation"], r["cached"]) for r in rows] == [
        ("chat", 0),
        ("chat", 1),
        ("embeddings", 0),
        ("embeddings", 1),
        ("chat", 1),
    ]
    assert_hit_row(rows[1], rows[0])
    assert_hit_row(rows[3], rows[2])
    assert_hit_row(rows[4], rows[0])


def test_anthropic_stream_hit(db: Path, cache_dir: Path) -> None:
    seen: list[RecordedRequest] = []
    client = anthropic.Anthropic(
        api_key="sk-ant-a", http_client=httpx2.Client(transport=tracking(fake(httpx2, seen), db, cache_dir))
    )
    texts = []
    for _ in range(2):
        with client.messages.stream(model="claude-sonnet-4-6", max_tokens=100, messages=QUESTION) as stream:
            texts.append((stream.get_final_text(), stream.get_final_message().model_dump()))
        httptrack.flush()
    assert texts[0] == texts[1] and len(seen) == 1
    assert_hit_row(*reversed(read_rows(db)))


def test_model_list_is_cached(db: Path, cache_dir: Path) -> None:
    seen: list[RecordedRequest] = []
    client = openai.OpenAI(
        api_key="sk-test-a", http_client=httpx2.Client(transport=tracking(fake(httpx2, seen), db, cache_dir))
    )
    first = [m.id for m in client.models.list()]
    httptrack.flush()
    assert [m.id for m in client.models.list()] == first and len(seen) == 1


# -- keys -----------------------------------------------------------------------------------


def test_another_api_key_misses_and_no_key_is_stored(db: Path, cache_dir: Path, tmp_path: Path) -> None:
    seen: list[RecordedRequest] = []
    transport = tracking(fake(httpx2, seen), db, cache_dir)
    alice = openai.OpenAI(api_key="sk-alice-0123456789", http_client=httpx2.Client(transport=transport))
    bob = openai.OpenAI(api_key="sk-bob-9876543210", http_client=httpx2.Client(transport=transport))
    alice.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    httptrack.flush()
    raw = bob.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=QUESTION)
    assert raw.headers["x-httptrack-cache"] == "MISS" and len(seen) == 2
    httptrack.flush()
    alice.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    bob.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    assert len(seen) == 2
    rows = read_rows(db)
    assert rows[0]["cache_key"] != rows[1]["cache_key"]
    assert [r["cache_key"] for r in rows[2:]] == [rows[0]["cache_key"], rows[1]["cache_key"]]
    # Neither key is anywhere in the cache folder; the salt and folder are private.
    for path in cache_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"sk-alice" not in data and b"sk-bob" not in data, path
    assert stat.S_IMODE((cache_dir / "httptrack.salt").stat().st_mode) == 0o600
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    # Another folder has another salt: the same request gets another key.
    elsewhere = openai.OpenAI(
        api_key="sk-alice-0123456789",
        http_client=httpx2.Client(transport=tracking(fake(httpx2, seen), db, tmp_path / "other-cache")),
    )
    elsewhere.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    assert read_rows(db)[-1]["cache_key"] not in {r["cache_key"] for r in rows}


@LIBS
def test_equivalent_json_written_differently_hits(lib: Any, db: Path, cache_dir: Path) -> None:
    seen: list[RecordedRequest] = []
    bodies = [
        b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Caf\xc3\xa9?"}],"temperature":0.5}',
        b'{ "temperature": 0.5,\n  "messages": [ {"content": "Caf\\u00e9?", "role": "user"} ],\n'
        b'  "model": "gpt-4o-mini" }',
        b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Caf\xc3\xa9?"}],"temperature":0.7}',
    ]
    statuses = []
    with lib.Client(transport=tracking(fake(lib, seen), db, cache_dir)) as client:
        for body in bodies:
            response = client.post(CHAT_URL, content=body, headers={"content-type": "application/json"})
            statuses.append(response.headers["x-httptrack-cache"])
            httptrack.flush()
    assert statuses == ["MISS", "HIT", "MISS"] and len(seen) == 2


def test_headers_in_and_out_of_the_key(db: Path, cache_dir: Path) -> None:
    seen: list[RecordedRequest] = []
    body = {"model": "gpt-4o-mini", "messages": QUESTION}
    asks = [
        ({}, "MISS"),
        ({"X-Httptrack-User": "bob", "X-Httptrack-Property-Team": "x"}, "HIT"),  # control headers
        ({"x-stainless-retry-count": "1", "user-agent": "other/1.0"}, "HIT"),  # telemetry
        ({"OpenAI-Organization": "org-2"}, "MISS"),  # another account
        ({"OpenAI-Project": "proj-2"}, "MISS"),
        ({"Accept-Encoding": "identity"}, "MISS"),  # the stored bytes could not be read back
    ]
    with httpx2.Client(transport=tracking(fake(httpx2, seen), db, cache_dir)) as client:
        for headers, expected in asks:
            response = client.post(CHAT_URL, json=body, headers={"authorization": "Bearer sk-a", **headers})
            assert response.headers["x-httptrack-cache"] == expected, headers
            httptrack.flush()
    assert len(seen) == 4
    assert not any(k.startswith("x-httptrack") for r in seen for k in r.headers)


def test_every_credential_like_header_is_in_the_key_and_redacted(db: Path, cache_dir: Path) -> None:
    """Same bearer token, another app or gateway key: another tenant, another answer."""
    seen: list[RecordedRequest] = []
    asks = [
        ({"x-custom-key": "tenant-1-secret"}, "MISS"),
        ({"x-custom-key": "tenant-2-secret"}, "MISS"),
        ({"x-custom-key": "tenant-1-secret"}, "HIT"),
        ({"x-portkey-virtual-key": "vk-anthropic-prod"}, "MISS"),
        ({"x-portkey-virtual-key": "vk-openai-dev"}, "MISS"),
        ({"x-portkey-virtual-key": "vk-openai-dev", "x-portkey-trace-id": "trace-2"}, "HIT"),  # a tracing id
        ({"x-tenant-credential": "c-1"}, "MISS"),
        ({"x-tenant-credential": "c-2"}, "MISS"),
        ({}, "MISS"),
        ({"Idempotency-Key": "stainless-python-retry-1b4f"}, "HIT"),  # fresh per request: not a credential
        ({"Idempotency-Key": "stainless-python-retry-9c2e"}, "HIT"),
    ]
    body = {"model": "gpt-4o-mini", "messages": QUESTION}
    with httpx2.Client(transport=tracking(fake(httpx2, seen), db, cache_dir)) as client:
        for headers, expected in asks:
            response = client.post(
                CHAT_URL, json=body, headers={"authorization": "Bearer sk-same", **headers}
            )
            assert response.headers["x-httptrack-cache"] == expected, headers
            httptrack.flush()
    assert len(seen) == 7
    logged = [json.loads(r["request_headers"]) for r in read_rows(db)]
    assert [h.get("x-custom-key") for h in logged[:3]] == ["[redacted]"] * 3
    assert logged[3]["x-portkey-virtual-key"] == "[redacted]" and logged[5]["x-portkey-trace-id"] == "trace-2"
    assert logged[6]["x-tenant-credential"] == "[redacted]"
    assert logged[9]["idempotency-key"] == "stainless-python-retry-1b4f"
    for path in cache_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"tenant-1-secret" not in data and b"vk-openai-dev" not in data, path


def test_cache_key_headers_setting(db: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway whose routing header changes the answer: the app names it in the key."""
    seen: list[Any] = []
    inner = httpx2.MockTransport(counting_handler(httpx2, seen))
    with httpx2.Client(transport=tracking(inner, db, cache_dir)) as plain:
        assert ask(plain, {"x-route": "eu"}) == ("MISS", "answer 1")
        assert ask(plain, {"x-route": "us"}) == ("HIT", "answer 1")  # not in the key by default
    with httpx2.Client(
        transport=tracking(inner, db, cache_dir, cache_key_headers="X-Route, x-tier")
    ) as keyed:
        assert ask(keyed, {"x-route": "eu"}) == ("MISS", "answer 2")
        assert ask(keyed, {"X-Route": "us"}) == ("MISS", "answer 3")
        assert ask(keyed, {"x-route": "eu"}) == ("HIT", "answer 2")
        assert ask(keyed, {"x-route": "eu", "x-tier": "gold"}) == ("MISS", "answer 4")
    monkeypatch.setenv("HTTPTRACK_CACHE_KEY_HEADERS", "x-route")
    with httpx2.Client(transport=tracking(inner, db, cache_dir)) as from_env:
        assert from_env._transport.settings.cache_key_headers == frozenset({b"x-route"})  # type: ignore[attr-defined]
        assert ask(from_env, {"x-route": "us"}) == ("HIT", "answer 3")
        assert ask(from_env, {"x-route": "ap"}) == ("MISS", "answer 5")
    with pytest.raises(httptrack.SettingsError, match="not a header name"):
        httptrack.Settings(cache_key_headers="x route")


# -- what is stored, what is not ------------------------------------------------------------


def test_errors_are_never_stored(db: Path, cache_dir: Path) -> None:
    seen: list[RecordedRequest] = []
    transport = tracking(fake(httpx2, seen), db, cache_dir)
    client = openai.OpenAI(api_key="sk-test-a", max_retries=0, http_client=httpx2.Client(transport=transport))
    errors = {
        "rate-limited": openai.RateLimitError,
        "server-error": openai.InternalServerError,
        "missing-model": openai.NotFoundError,
    }
    for model, error in errors.items():
        for _ in range(2):
            with pytest.raises(error):
                client.chat.completions.create(model=model, messages=QUESTION)
            httptrack.flush()
    assert len(seen) == 6
    rows = read_rows(db)
    assert {(r["status"], r["cached"]) for r in rows} == {("error", 0)}
    assert all(r["cache_key"] for r in rows)


@LIBS
def test_an_error_event_inside_a_200_stream_is_not_stored(lib: Any, db: Path, cache_dir: Path) -> None:
    chunks = [
        b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini",'
        b'"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n',
        b'data: {"error":{"message":"The server had an error","type":"server_error"}}\n\n',
    ]
    seen: list[Any] = []
    handler = responder(lib, chunks, headers={"content-type": "text/event-stream"}, seen=seen)
    with lib.Client(transport=tracking(lib.MockTransport(handler), db, cache_dir)) as client:
        for _ in range(2):
            response = client.post(
                CHAT_URL, json={"model": "gpt-4o-mini", "messages": QUESTION, "stream": True}
            )
            assert response.status_code == 200 and response.headers["x-httptrack-cache"] == "MISS"
            httptrack.flush()
    assert len(seen) == 2
    assert [(r["status"], r["http_status"]) for r in read_rows(db)] == [("error", 200)] * 2


def test_streams_cut_short_are_not_stored(db: Path, cache_dir: Path) -> None:
    seen: list[RecordedRequest] = []
    transport = tracking(fake(httpx2, seen), db, cache_dir)
    client = openai.OpenAI(api_key="sk-test-a", max_retries=0, http_client=httpx2.Client(transport=transport))
    for _ in range(2):  # the connection drops half-way
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model="cut-stream", messages=QUESTION, stream=True))
        httptrack.flush()
    for _ in range(2):  # the app stops reading after the first chunk
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
        next(iter(stream))
        stream.close()
        httptrack.flush()
    assert len(seen) == 4
    assert [r["outcome"] for r in read_rows(db)] == ["failed", "failed", "cut_short", "cut_short"]


ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
OLLAMA_CHAT_URL = "http://localhost:11434/api/chat"
GEMINI_STREAM_URL = (
    "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent"
)
SSE = {"content-type": "text/event-stream"}


def sse(*events: str) -> list[bytes]:
    return [f"data: {event}\n\n".encode() for event in events]


def openai_chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return json.dumps(
        {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini", "choices": [choice]}
    )


_OPENAI_TEXT = (openai_chunk({"role": "assistant", "content": "Par"}), openai_chunk({"content": "is"}))
_USAGE_CHUNK = json.dumps(
    {"id": "c1", "choices": [], "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16}}
)
_ANTHROPIC_EVENTS = [
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","model":"claude-sonnet-4-6",'
    b'"usage":{"input_tokens":14,"output_tokens":1}}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Paris"}}\n\n',
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"output_tokens":2}}\n\n',
]
_OLLAMA_LINES = [
    b'{"model":"llama3.2","message":{"role":"assistant","content":"Par"},"done":false}\n',
    b'{"model":"llama3.2","message":{"role":"assistant","content":"is"},"done":false}\n',
]
_OLLAMA_DONE = (
    b'{"model":"llama3.2","message":{"role":"assistant","content":""},"done":true,'
    b'"done_reason":"stop","prompt_eval_count":14,"eval_count":2}\n'
)
_GEMINI_CHUNKS = [
    '{"candidates":[{"content":{"parts":[{"text":"Par"}],"role":"model"}}],"modelVersion":"gemini-2.5-flash"}',
    '{"candidates":[{"content":{"parts":[{"text":"is"}],"role":"model"},"finishReason":"STOP"}],'
    '"usageMetadata":{"promptTokenCount":14,"candidatesTokenCount":2},"modelVersion":"gemini-2.5-flash"}',
]
_CHAT = {"model": "gpt-4o-mini", "messages": QUESTION}
_CHAT_STREAM = {**_CHAT, "stream": True}
_ANTHROPIC_BODY = {"model": "claude-sonnet-4-6", "max_tokens": 10, "messages": QUESTION, "stream": True}
_OLLAMA_BODY = {"model": "llama3.2", "messages": QUESTION}
_GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "What is the capital of France?"}]}]}
#: (url, request body, response chunks, response headers, whether it is whole).
_RESPONSES = {
    "openai-stream-done": (
        CHAT_URL,
        _CHAT_STREAM,
        sse(*_OPENAI_TEXT, openai_chunk({}, "stop"), "[DONE]"),
        SSE,
        True,
    ),
    "openai-stream-finish-no-done": (
        CHAT_URL,
        _CHAT_STREAM,
        sse(*_OPENAI_TEXT, openai_chunk({}, "stop")),
        SSE,
        True,
    ),
    "openai-stream-no-end": (CHAT_URL, _CHAT_STREAM, sse(*_OPENAI_TEXT), SSE, False),
    "openai-stream-finish-usage-asked-missing": (
        CHAT_URL,
        {**_CHAT_STREAM, "stream_options": {"include_usage": True}},
        sse(*_OPENAI_TEXT, openai_chunk({}, "stop")),
        SSE,
        False,
    ),
    "openai-stream-finish-usage-asked": (
        CHAT_URL,
        {**_CHAT_STREAM, "stream_options": {"include_usage": True}},
        sse(*_OPENAI_TEXT, openai_chunk({}, "stop"), _USAGE_CHUNK),
        SSE,
        True,
    ),
    "sse-last-event-half-written": (
        CHAT_URL,
        _CHAT_STREAM,
        [
            *sse(*_OPENAI_TEXT, openai_chunk({}, "stop")),
            b'data: {"id":"c1","choices":[],"usage":{"prompt_tok',
        ],
        SSE,
        False,
    ),
    "responses-completed": (
        "https://api.openai.com/v1/responses",
        {"model": "gpt-4o", "input": "hi", "stream": True},
        [
            b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"Paris"}\n\n',
            b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"resp_1",'
            b'"object":"response","status":"completed","model":"gpt-4o","output":[],'
            b'"usage":{"input_tokens":14,"output_tokens":2}}}\n\n',
        ],
        SSE,
        True,
    ),
    "responses-no-completed": (
        "https://api.openai.com/v1/responses",
        {"model": "gpt-4o", "input": "hi", "stream": True},
        [
            b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"Paris"}\n\n'
        ],
        SSE,
        False,
    ),
    "anthropic-message-stop": (
        ANTHROPIC_URL,
        _ANTHROPIC_BODY,
        [*_ANTHROPIC_EVENTS, b'event: message_stop\ndata: {"type":"message_stop"}\n\n'],
        SSE,
        True,
    ),
    "anthropic-no-message-stop": (ANTHROPIC_URL, _ANTHROPIC_BODY, _ANTHROPIC_EVENTS, SSE, False),
    "ollama-done": (
        OLLAMA_CHAT_URL,
        _OLLAMA_BODY,
        [*_OLLAMA_LINES, _OLLAMA_DONE],
        {"content-type": "application/x-ndjson"},
        True,
    ),
    "ollama-no-done": (
        OLLAMA_CHAT_URL,
        _OLLAMA_BODY,
        _OLLAMA_LINES,
        {"content-type": "application/x-ndjson"},
        False,
    ),
    "gemini-sse-finish": (f"{GEMINI_STREAM_URL}?alt=sse", _GEMINI_BODY, sse(*_GEMINI_CHUNKS), SSE, True),
    "gemini-sse-no-finish": (
        f"{GEMINI_STREAM_URL}?alt=sse",
        _GEMINI_BODY,
        sse(_GEMINI_CHUNKS[0]),
        SSE,
        False,
    ),
    "gemini-array-closed": (
        GEMINI_STREAM_URL,
        _GEMINI_BODY,
        [b"[" + _GEMINI_CHUNKS[0].encode(), b",\r\n" + _GEMINI_CHUNKS[1].encode(), b"]"],
        {"content-type": "application/json"},
        True,
    ),
    "gemini-array-not-closed": (
        GEMINI_STREAM_URL,
        _GEMINI_BODY,
        [b"[" + _GEMINI_CHUNKS[0].encode(), b",\r\n" + _GEMINI_CHUNKS[1].encode()],
        {"content-type": "application/json"},
        False,
    ),
    "json-body": (
        CHAT_URL,
        _CHAT,
        [json.dumps(chat_completion("Paris.")).encode()],
        {"content-type": "application/json"},
        True,
    ),
    "json-body-truncated": (
        CHAT_URL,
        _CHAT,
        [json.dumps(chat_completion("Paris.")).encode()[:-20]],
        {"content-type": "application/json"},
        False,
    ),
    "empty-body": (CHAT_URL, _CHAT, [b""], {"content-type": "application/json"}, False),
    "html-page": (
        CHAT_URL,
        _CHAT,
        [b"<html><body>Gateway says hello</body></html>"],
        {"content-type": "text/html"},
        False,
    ),
    "json-error-in-200": (
        CHAT_URL,
        _CHAT,
        [b'{"error": {"message": "upstream timed out", "code": "timeout"}}'],
        {"content-type": "application/json"},
        False,
    ),
}


@pytest.mark.parametrize(("url", "body", "chunks", "headers", "whole"), _RESPONSES.values(), ids=_RESPONSES)
def test_only_responses_known_complete_are_stored(
    url: str, body: Any, chunks: list[bytes], headers: dict[str, str], whole: bool, db: Path, cache_dir: Path
) -> None:
    """A proxy that closes a stream cleanly mid-answer, or answers 200 with a half body or a
    page of its own: the transport saw a normal end, but the answer is not the provider's.
    Stored, it would be served for the whole TTL; only a response whose end marker was read
    (or whose JSON body parsed) is stored."""
    seen: list[Any] = []
    credentials = {"authorization": "Bearer sk-a", "x-api-key": "sk-ant-a", "anthropic-version": "2023-06-01"}
    handler = responder(httpx, chunks, headers=headers, seen=seen)
    with httpx.Client(transport=tracking(httpx.MockTransport(handler), db, cache_dir)) as client:
        statuses = []
        for _ in range(2):
            response = client.post(url, json=body, headers=credentials)
            assert response.content == b"".join(chunks)
            statuses.append(response.headers["x-httptrack-cache"])
            httptrack.flush()
    assert statuses == (["MISS", "HIT"] if whole else ["MISS", "MISS"])
    assert len(seen) == (1 if whole else 2)
    rows = read_rows(db)
    assert [r["cached"] for r in rows] == ([0, 1] if whole else [0, 0])
    assert rows[0]["http_status"] == 200 and rows[0]["outcome"] == "complete"


def test_a_truncated_json_body_is_recorded_but_not_stored(db: Path, cache_dir: Path) -> None:
    body = json.dumps(chat_completion("Paris.")).encode()[:-20]
    seen: list[Any] = []
    with httpx.Client(
        transport=tracking(httpx.MockTransport(responder(httpx, body, seen=seen)), db, cache_dir)
    ) as client:
        for _ in range(2):
            assert client.post(CHAT_URL, json=_CHAT).headers["x-httptrack-cache"] == "MISS"
            httptrack.flush()
    rows = read_rows(db)
    assert [(r["status"], r["outcome"], r["parse_notes"]) for r in rows] == [
        ("success", "complete", "response body is not valid JSON")
    ] * 2
    assert len(seen) == 2


@LIBS
def test_a_response_over_the_size_cap_is_not_stored(lib: Any, db: Path, cache_dir: Path) -> None:
    big = json.dumps({"object": "list", "data": [{"id": "x" * 1000}] * 1600}).encode()  # > 1.5 MiB
    seen: list[Any] = []
    with lib.Client(
        transport=tracking(
            lib.MockTransport(responder(lib, big, seen=seen)), db, cache_dir, max_body_bytes=1000
        )
    ) as client:
        for _ in range(2):
            assert client.get("https://api.openai.com/v1/models").content == big
            httptrack.flush()
    assert len(seen) == 2
    assert [r["body_truncated"] for r in read_rows(db)] == [1, 1]


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "https://api.openai.com/v1/files"),
        ("POST", "https://api.openai.com/v1/batches"),
        ("POST", "https://api.openai.com/v1/fine_tuning/jobs"),
        ("DELETE", "https://api.openai.com/v1/models/ft:gpt-4o-mini:acme"),
        ("POST", "https://api.anthropic.com/v1/messages/batches"),
        ("GET", "http://localhost:11434/api/ps"),
        ("POST", "http://localhost:11434/api/pull"),
        (
            "POST",
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:batchGenerateContent",
        ),
    ],
)
def test_private_and_non_idempotent_endpoints_are_never_cached(
    method: str, url: str, db: Path, cache_dir: Path
) -> None:
    seen: list[Any] = []
    with httpx.Client(
        transport=tracking(httpx.MockTransport(responder(httpx, b'{"id": "x"}', seen=seen)), db, cache_dir)
    ) as client:
        for _ in range(2):
            response = client.request(method, url, json={"model": "m"} if method == "POST" else None)
            assert "x-httptrack-cache" not in response.headers
            httptrack.flush()
    assert len(seen) == 2
    assert [r["cache_key"] for r in read_rows(db)] == [None, None]


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("https://api.openai.com/v1/responses", {"model": "gpt-4o", "input": "hi", "conversation": "conv_1"}),
        (
            "https://api.openai.com/v1/responses",
            {"model": "gpt-4o", "input": "hi", "conversation": {"id": "conv_1"}},
        ),
        ("https://api.openai.com/v1/responses", {"model": "gpt-4o", "input": "hi", "background": True}),
        ("http://localhost:11434/api/generate", {"model": "llama3.2", "keep_alive": "10m"}),
        ("http://localhost:11434/api/generate", {"model": "llama3.2", "prompt": "", "keep_alive": 0}),
        ("http://localhost:11434/api/chat", {"model": "llama3.2", "messages": [], "keep_alive": 0}),
        ("http://localhost:11434/api/chat", {"model": "llama3.2"}),
    ],
    ids=[
        "responses-conversation",
        "responses-conversation-object",
        "responses-background",
        "ollama-load",
        "ollama-unload-generate",
        "ollama-unload-chat",
        "ollama-load-chat",
    ],
)
def test_requests_that_change_server_state_are_never_cached(
    url: str, body: dict[str, Any], db: Path, cache_dir: Path
) -> None:
    seen: list[RecordedRequest] = []
    with httpx.Client(transport=tracking(fake(httpx, seen), db, cache_dir)) as client:
        for _ in range(3):
            response = client.post(url, json=body, headers={"authorization": "Bearer sk-a"})
            assert response.status_code == 200 and "x-httptrack-cache" not in response.headers
            httptrack.flush()
    assert len(seen) == 3
    assert [r["cache_key"] for r in read_rows(db)] == [None] * 3
    with httpx.Client(transport=tracking(fake(httpx, seen), db, cache_dir, cache="replay")) as client:
        with pytest.raises(httptrack.CacheMiss, match="changes state on the server"):
            client.post(url, json=body, headers={"authorization": "Bearer sk-a"})
    assert len(seen) == 3


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("https://api.openai.com/v1/responses", {"model": "gpt-4o", "input": "hi", "background": False}),
        (
            "https://api.openai.com/v1/responses",
            {"model": "gpt-4o", "input": "hi", "metadata": {"conversation": "support-42"}},
        ),
        ("http://localhost:11434/api/generate", {"model": "llama3.2", "prompt": "Hi", "keep_alive": "10m"}),
        ("http://localhost:11434/api/chat", {"model": "llama3.2", "messages": QUESTION, "keep_alive": 0}),
    ],
    ids=["responses-foreground", "responses-conversation-in-metadata", "ollama-generate", "ollama-chat"],
)
def test_ordinary_requests_beside_them_are_cached(
    url: str, body: dict[str, Any], db: Path, cache_dir: Path
) -> None:
    seen: list[RecordedRequest] = []
    with httpx.Client(transport=tracking(fake(httpx, seen), db, cache_dir)) as client:
        statuses = []
        for _ in range(2):
            response = client.post(
                url, json={**body, "stream": False}, headers={"authorization": "Bearer sk-a"}
            )
            statuses.append(response.headers["x-httptrack-cache"])
            httptrack.flush()
    assert statuses == ["MISS", "HIT"] and len(seen) == 1


@pytest.mark.parametrize(
    "url",
    ["https://api.anthropic.com/v1/messages/count_tokens", "https://api.openai.com/v1/moderations"],
)
def test_free_read_only_endpoints_are_cached(url: str, db: Path, cache_dir: Path) -> None:
    seen: list[Any] = []
    with httpx.Client(
        transport=tracking(
            httpx.MockTransport(responder(httpx, b'{"input_tokens": 3}', seen=seen)), db, cache_dir
        )
    ) as client:
        statuses = []
        for _ in range(2):
            statuses.append(client.post(url, json={"model": "m", "input": "x"}).headers["x-httptrack-cache"])
            httptrack.flush()
    assert statuses == ["MISS", "HIT"] and len(seen) == 1


@LIBS
def test_gzip_bodies_are_stored_as_received_and_decode_on_replay(lib: Any, db: Path, cache_dir: Path) -> None:
    payload = chat_completion("Paris.", model="gpt-4o-mini-2024-07-18")
    gz = gzip.compress(json.dumps(payload).encode(), mtime=0)
    headers = {
        "content-type": "application/json",
        "content-encoding": "gzip",
        "content-length": str(len(gz)),
        "set-cookie": "__cf_bm=abc; path=/",
        "x-request-id": "req_gz",
    }
    seen: list[Any] = []
    transport = tracking(lib.MockTransport(responder(lib, gz, headers=headers, seen=seen)), db, cache_dir)
    bodies = []
    with lib.Client(transport=transport) as client:
        for _ in range(2):
            response = client.post(CHAT_URL, json={"model": "gpt-4o-mini", "messages": QUESTION})
            bodies.append(
                (response.headers["x-httptrack-cache"], response.json(), response.headers.get("set-cookie"))
            )
            httptrack.flush()
    assert bodies == [("MISS", payload, "__cf_bm=abc; path=/"), ("HIT", payload, None)]
    key = read_rows(db)[0]["cache_key"]
    forget_memory(cache_dir)
    entry = shared_store(cache_dir, 1 << 30).get(key)
    assert entry is not None and entry.chunks == (gz,)
    assert dict(entry.headers)[b"content-encoding"] == b"gzip" and b"set-cookie" not in dict(entry.headers)
    assert dict(entry.headers)[b"x-request-id"] == b"req_gz"
    assert entry.figures["input_tokens"] == 14 and entry.info["model"] == "gpt-4o-mini"


def test_openai_sdk_reads_a_gzip_hit(db: Path, cache_dir: Path) -> None:
    payload = chat_completion("Paris.")
    gz = gzip.compress(json.dumps(payload).encode(), mtime=0)
    seen: list[Any] = []
    handler = responder(
        httpx2, gz, headers={"content-type": "application/json", "content-encoding": "gzip"}, seen=seen
    )
    client = openai.OpenAI(
        api_key="sk-a",
        http_client=httpx2.Client(transport=tracking(httpx2.MockTransport(handler), db, cache_dir)),
    )
    replies = []
    for _ in range(2):
        replies.append(
            client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION).choices[0].message.content
        )
        httptrack.flush()
    assert replies == ["Paris.", "Paris."] and len(seen) == 1


def test_response_marked_no_store_or_unfinished_is_not_stored(db: Path, cache_dir: Path) -> None:
    seen: list[Any] = []
    queued = json.dumps(
        {"id": "resp_1", "object": "response", "status": "queued", "model": "gpt-4o", "output": []}
    )
    cases = [
        ("https://api.openai.com/v1/responses", queued.encode(), {"content-type": "application/json"}),
        (
            CHAT_URL,
            b'{"id": "c", "choices": []}',
            {"content-type": "application/json", "cache-control": "no-store"},
        ),
    ]
    for url, body, headers in cases:
        handler = responder(httpx2, body, headers=headers, seen=seen)
        with httpx2.Client(transport=tracking(httpx2.MockTransport(handler), db, cache_dir)) as client:
            for _ in range(2):
                assert (
                    client.post(url, json={"model": "gpt-4o", "input": "hi"}).headers["x-httptrack-cache"]
                    == "MISS"
                )
                httptrack.flush()
    assert len(seen) == 4


# -- modes ----------------------------------------------------------------------------------


def counting_handler(lib: Any, seen: list[Any]) -> Any:
    """An OpenAI chat endpoint whose answer names how many requests it has answered."""

    def handler(request: Any) -> Any:
        seen.append(request)
        body = chat_completion(f"answer {len(seen)}", id=f"chatcmpl-{len(seen)}")
        return lib.Response(
            200,
            headers={"content-type": "application/json"},
            stream=chunk_stream(lib, [json.dumps(body).encode()]),
        )

    return handler


def ask(client: Any, headers: dict[str, str] | None = None) -> tuple[str | None, str]:
    response = client.post(
        CHAT_URL,
        json={"model": "gpt-4o-mini", "messages": QUESTION},
        headers={"authorization": "Bearer sk-a", **(headers or {})},
    )
    httptrack.flush()
    return response.headers.get("x-httptrack-cache"), response.json()["choices"][0]["message"]["content"]


def test_mode_off_neither_reads_nor_stores(db: Path, cache_dir: Path) -> None:
    seen: list[Any] = []
    with httpx2.Client(
        transport=tracking(httpx2.MockTransport(counting_handler(httpx2, seen)), db, cache_dir, cache=False)
    ) as client:
        assert [ask(client), ask(client)] == [(None, "answer 1"), (None, "answer 2")]
    assert not cache_dir.exists()
    assert [r["cache_key"] for r in read_rows(db)] == [None, None]


def test_mode_refresh_always_calls_then_stores(db: Path, cache_dir: Path) -> None:
    seen: list[Any] = []
    inner = httpx2.MockTransport(counting_handler(httpx2, seen))
    on = httpx2.Client(transport=tracking(inner, db, cache_dir))
    refresh = httpx2.Client(transport=tracking(inner, db, cache_dir, cache="refresh"))
    assert ask(on) == ("MISS", "answer 1")
    assert [ask(refresh), ask(refresh)] == [(None, "answer 2"), (None, "answer 3")]
    assert ask(on) == ("HIT", "answer 3")


def test_mode_replay_serves_hits_and_refuses_misses(db: Path, cache_dir: Path) -> None:
    seen: list[RecordedRequest] = []
    inner = fake(httpx2, seen)
    recorder = openai.OpenAI(
        api_key="sk-a", http_client=httpx2.Client(transport=tracking(inner, db, cache_dir))
    )
    recorded = recorder.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    httptrack.flush()
    replayer = openai.OpenAI(
        api_key="sk-a", http_client=httpx2.Client(transport=tracking(inner, db, cache_dir, cache="replay"))
    )
    assert (
        replayer.chat.completions.create(model="gpt-4o-mini", messages=QUESTION).model_dump()
        == recorded.model_dump()
    )
    # A miss is raised as it is (no retries, not wrapped as a connection error); nothing is sent.
    with pytest.raises(httptrack.CacheMiss) as caught:
        replayer.chat.completions.create(model="gpt-4o", messages=QUESTION)
    miss = caught.value
    assert (miss.method, miss.url, miss.model) == ("POST", CHAT_URL, "gpt-4o")
    assert str(miss) == (
        "httptrack cache is in replay mode and there is no cached response for POST "
        f"{CHAT_URL} (model 'gpt-4o'); nothing was sent. Run once with HTTPTRACK_CACHE=on "
        "(or refresh) to record it."
    )
    assert pickle.loads(pickle.dumps(miss)).args == miss.args
    assert len(seen) == 1
    rows = read_rows(db)
    assert [(r["cached"], r["status"], r["outcome"]) for r in rows] == [
        (0, "success", "complete"),
        (1, "success", "complete"),
        (0, "error", "cache_miss"),
    ]
    assert (rows[2]["error_code"], rows[2]["error_message"], rows[2]["http_status"]) == (
        "httptrack.CacheMiss",
        str(miss),
        None,
    )
    assert (rows[2]["model"], rows[2]["cost_usd"], rows[2]["cache_key"] is not None) == ("gpt-4o", 0.0, True)


def test_replay_mode_is_strict(db: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPTRACK_CACHE", "replay")
    seen: list[Any] = []
    with httpx.Client(
        transport=tracking(httpx.MockTransport(responder(httpx, b"{}", seen=seen)), db, cache_dir)
    ) as client:
        with pytest.raises(httptrack.CacheMiss, match="this endpoint is never cached"):
            client.post("https://api.openai.com/v1/files", content=b"x")
        with pytest.raises(httptrack.CacheMiss, match="X-Httptrack-Cache: no-cache asks to bypass"):
            client.post(CHAT_URL, json={"model": "m"}, headers={"X-Httptrack-Cache": "no-cache"})
        with pytest.raises(
            httptrack.CacheMiss, match=r"generateContent\?key=\[redacted\]; nothing was sent"
        ) as caught:
            client.post(
                "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent",
                params={"key": "AIza-secret"},
                json={"contents": []},
            )
        assert "AIza-secret" not in str(caught.value)
    assert seen == []
    assert [r["outcome"] for r in read_rows(db)] == ["cache_miss"] * 3


def test_replay_miss_through_sdks_that_wrap_every_error(db: Path, cache_dir: Path) -> None:
    seen: list[RecordedRequest] = []
    transport = tracking(fake(httpx2, seen), db, cache_dir, cache="replay")
    client = anthropic.Anthropic(
        api_key="sk-ant-a", max_retries=0, http_client=httpx2.Client(transport=transport)
    )
    with pytest.raises(anthropic.APIConnectionError) as caught:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=QUESTION)
    assert isinstance(caught.value.__cause__, httptrack.CacheMiss)
    with pytest.raises(httptrack.CacheMiss):
        ollama.Client(transport=tracking(fake(httpx, seen), db, cache_dir, cache="replay")).list()
    assert seen == []


def test_control_headers_per_request(db: Path, cache_dir: Path) -> None:
    seen: list[Any] = []
    with httpx2.Client(
        transport=tracking(httpx2.MockTransport(counting_handler(httpx2, seen)), db, cache_dir)
    ) as client:
        assert ask(client, {"X-Httptrack-Cache": "no-store"}) == ("MISS", "answer 1")  # read, not stored
        assert ask(client) == ("MISS", "answer 2")  # stored
        assert ask(client, {"X-Httptrack-Cache": "no-store"}) == ("HIT", "answer 2")  # reads
        assert ask(client, {"X-Httptrack-Cache": "no-cache"}) == (None, "answer 3")  # sent, then stored
        assert ask(client) == ("HIT", "answer 3")
        assert ask(client, {"X-Httptrack-Cache": "off"}) == (None, "answer 4")  # neither
        assert ask(client, {"X-Httptrack-Cache": "no-cache, no-store"}) == (None, "answer 5")
        assert ask(client) == ("HIT", "answer 3")
        assert ask(client, {"X-Httptrack-Cache": "sometimes"}) == ("HIT", "answer 3")  # unknown: ignored
    assert fault_counts().get("control_headers") == 1
    assert [r["cached"] for r in read_rows(db)] == [0, 0, 1, 0, 1, 0, 0, 1, 1]


# -- expiry ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "body", "ttl"),
    [
        ("POST", CHAT_URL, {"model": "gpt-4o-mini", "messages": QUESTION}, 3600),
        (
            "POST",
            "https://api.openai.com/v1/embeddings",
            {"model": "text-embedding-3-small", "input": "x"},
            7 * 86400,
        ),
        ("GET", "https://api.openai.com/v1/models", None, 86400),
        (
            "POST",
            "https://api.openai.com/v1/completions",
            {"model": "gpt-3.5-turbo-instruct", "prompt": "x"},
            1800,
        ),
        (
            "POST",
            "https://api.anthropic.com/v1/messages/count_tokens",
            {"model": "claude-sonnet-4-6", "messages": QUESTION},
            1800,
        ),
    ],
    ids=["chat", "embeddings", "models", "completion", "other"],
)
def test_default_ttl_by_operation(
    method: str, url: str, body: Any, ttl: float, db: Path, cache_dir: Path
) -> None:
    seen: list[RecordedRequest] = []
    clock = Clock()
    headers = (
        {"x-api-key": "sk-ant-a", "anthropic-version": "2023-06-01"}
        if "anthropic" in url
        else {"authorization": "Bearer sk-a"}
    )
    with httpx2.Client(transport=tracking(fake(httpx2, seen), db, cache_dir, clock=clock)) as client:

        def status() -> str:
            response = client.request(method, url, json=body, headers=headers)
            assert response.status_code == 200, response.text
            httptrack.flush()
            return str(response.headers["x-httptrack-cache"])

        assert status() == "MISS"
        clock.advance(ttl - 1)
        assert status() == "HIT"
        clock.advance(1)
        assert status() == "MISS"  # expired: fetched and stored again
        clock.advance(ttl - 1)
        assert status() == "HIT"
    assert len(seen) == 2


def test_ttl_settings_env_and_per_request(db: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    clock = Clock()
    monkeypatch.setenv("HTTPTRACK_CACHE_TTL", "chat=2m")
    inner = httpx2.MockTransport(counting_handler(httpx2, seen))
    with httpx2.Client(transport=tracking(inner, db, cache_dir, clock=clock)) as client:
        assert ask(client) == ("MISS", "answer 1")
        clock.advance(119)
        assert ask(client) == ("HIT", "answer 1")
        clock.advance(1)
        assert ask(client) == ("MISS", "answer 2")
        # A request asking for younger answers than the entry is: a miss (then stored for 10 s).
        clock.advance(30)
        assert ask(client, {"X-Httptrack-Cache-Ttl": "10"}) == ("MISS", "answer 3")
        clock.advance(9)
        assert ask(client) == ("HIT", "answer 3")
        clock.advance(1)
        assert ask(client) == ("MISS", "answer 4")  # its own 10 s TTL is over
        assert ask(client, {"X-Httptrack-Cache-Ttl": "0"}) == ("MISS", "answer 5")  # never fresh, not stored
        assert ask(client) == ("HIT", "answer 4")
        assert ask(client, {"X-Httptrack-Cache-Ttl": "soon"}) == ("HIT", "answer 4")  # bad value: default TTL
    assert fault_counts().get("control_headers") == 1
    # Given in code, a TTL wins over the environment.
    transport = tracking(inner, db, cache_dir, clock=clock, cache_ttl={"chat": "1h"})
    assert transport.settings.ttl_for("chat") == 3600


def test_replay_serves_a_recording_whatever_its_age(db: Path, cache_dir: Path) -> None:
    """Offline tests of an LLM app replay what was recorded once, months ago maybe: the
    entry stays on disk past its TTL (no diskcache expiry), and only replay mode serves it."""
    seen: list[Any] = []
    clock = Clock()
    inner = httpx2.MockTransport(counting_handler(httpx2, seen))
    with httpx2.Client(transport=tracking(inner, db, cache_dir, clock=clock)) as recorder:
        assert ask(recorder) == ("MISS", "answer 1")
    created = clock.now
    with diskcache.Cache(str(cache_dir)) as disk:
        ((expire_time, tag),) = disk._sql("SELECT expire_time, tag FROM Cache").fetchall()
    assert (expire_time, tag) == (None, created + 3600)
    with httpx2.Client(transport=tracking(inner, db, cache_dir, clock=clock, cache="replay")) as replayer:
        for age in (3601, 90 * 86400):
            clock.now = created + age
            forget_memory(cache_dir)
            assert ask(replayer) == ("HIT", "answer 1")
            assert ask(replayer, {"X-Httptrack-Cache-Ttl": "1"}) == ("HIT", "answer 1")
    assert _cache_store.cache_stats(cache_dir, now=clock.now)["expired"] == 1
    with httpx2.Client(transport=tracking(inner, db, cache_dir, clock=clock)) as everyday:
        assert ask(everyday) == ("MISS", "answer 2")  # on: expired is expired
        assert ask(everyday) == ("HIT", "answer 2")
    assert len(seen) == 2
    assert _cache_store.cache_stats(cache_dir, now=clock.now)["expired"] == 0


def test_prune_removes_entries_past_their_ttl(db: Path, cache_dir: Path) -> None:
    seen: list[Any] = []
    clock = Clock()
    inner = httpx2.MockTransport(counting_handler(httpx2, seen))
    with httpx2.Client(transport=tracking(inner, db, cache_dir, clock=clock)) as client:
        assert ask(client) == ("MISS", "answer 1")  # chat: 1 h
        response = client.post(
            "https://api.openai.com/v1/embeddings",
            json={"model": "text-embedding-3-small", "input": "x"},
            headers={"authorization": "Bearer sk-a"},
        )
        assert response.headers["x-httptrack-cache"] == "MISS"
        httptrack.flush()
    assert _cache_store.prune_cache(cache_dir, now=clock.now + 3599) == {"expired": 0, "old": 0}
    assert _cache_store.prune_cache(cache_dir, now=clock.now + 3600) == {"expired": 1, "old": 0}
    assert _cache_store.cache_stats(cache_dir, now=clock.now + 3600)["entries"] == 1
    with httpx2.Client(transport=tracking(inner, db, cache_dir, clock=clock, cache="replay")) as replayer:
        with pytest.raises(httptrack.CacheMiss, match="there is no cached response"):
            ask(replayer)  # pruned: gone, even for replay


def test_size_limit_evicts_the_oldest_stored(db: Path, cache_dir: Path) -> None:
    seen: list[Any] = []

    def handler(request: Any) -> Any:
        seen.append(request)
        # ~200 KB that does not compress (entries are stored compressed): a file of its own.
        body = chat_completion(base64.b64encode(os.urandom(150_000)).decode())
        return httpx2.Response(200, headers={"content-type": "application/json"}, json=body)

    prompts = [f"p{n}" for n in range(8)]
    # Bodies not in the log: the folder holds the answers themselves (not references to rows).
    transport = tracking(
        httpx2.MockTransport(handler), db, cache_dir, cache_size_limit="1MiB", store_bodies=False
    )
    with httpx2.Client(transport=transport, headers={"authorization": "Bearer sk-a"}) as client:
        for prompt in prompts:
            client.post(
                CHAT_URL, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}
            )
            httptrack.flush()
        stats = _cache_store.cache_stats(cache_dir)
        assert stats["size_bytes"] <= 1024 * 1024 and stats["size_limit"] == 1024 * 1024, stats
        forget_memory(cache_dir)
        statuses = [
            client.post(
                CHAT_URL, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}
            ).headers["x-httptrack-cache"]
            for prompt in reversed(prompts)
        ]
    # diskcache evicts the oldest stored, ten at a time, until the folder is under its limit.
    kept = statuses.index("MISS")
    assert 1 <= kept < 8 and statuses == ["HIT"] * kept + ["MISS"] * (8 - kept)  # the newest stay


def test_size_limit_is_changed_only_by_a_transport_naming_another(db: Path, cache_dir: Path) -> None:
    """Transports (and processes) sharing a folder: one naming no limit leaves the folder's
    as it is (it would shrink a folder another app sized up, and evict to fit); the most
    recently made transport naming another limit wins."""
    seen: list[Any] = []
    inner = httpx2.MockTransport(counting_handler(httpx2, seen))

    def limits() -> tuple[int, int]:
        """The folder's recorded limit, and the one this process culls to."""
        (store,) = _cache_store._stores.values()
        return _cache_store.cache_stats(cache_dir)["size_limit"], store._disk.size_limit

    with httpx2.Client(transport=tracking(inner, db, cache_dir, cache_size_limit="50MiB")) as first:
        assert ask(first) == ("MISS", "answer 1")
    assert limits() == (50 << 20, 50 << 20)
    with httpx2.Client(transport=tracking(inner, db, cache_dir)) as default:  # names none
        assert ask(default) == ("HIT", "answer 1")
    assert limits() == (50 << 20, 50 << 20)
    # Another process naming no limit opens the folder: it keeps (and culls to) the folder's.
    _cache_store._stores.clear()
    with httpx2.Client(transport=tracking(inner, db, cache_dir)) as elsewhere:
        assert ask(elsewhere, {"X-Httptrack-Cache": "no-cache"}) == (None, "answer 2")
    assert limits() == (50 << 20, 50 << 20)
    tracking(inner, db, cache_dir, cache_size_limit="2GiB")  # the most recent naming one wins
    assert limits() == (2 << 30, 2 << 30)
    tracking(inner, db, cache_dir)
    assert limits() == (2 << 30, 2 << 30)
    assert httptrack.Settings().cache_size_limit is None


def test_memory_copy_honours_expiry_and_clear(db: Path, cache_dir: Path) -> None:
    seen: list[Any] = []
    clock = Clock()
    with httpx2.Client(
        transport=tracking(httpx2.MockTransport(counting_handler(httpx2, seen)), db, cache_dir, clock=clock)
    ) as client:
        assert ask(client) == ("MISS", "answer 1")
        store = shared_store(cache_dir, 1 << 30)
        assert ask(client) == ("HIT", "answer 1") and len(store.memory) == 1
        clock.advance(3600)
        assert ask(client) == ("MISS", "answer 2")
        assert _cache_store.clear_cache(cache_dir) == 1
        assert len(store.memory) == 0
        assert ask(client) == ("MISS", "answer 3")


# -- faults ---------------------------------------------------------------------------------


def stored_key(db: Path) -> str:
    return str(read_rows(db)[0]["cache_key"])


def test_a_corrupted_entry_is_a_miss_and_is_dropped(db: Path, cache_dir: Path) -> None:
    seen: list[Any] = []
    with httpx2.Client(
        transport=tracking(httpx2.MockTransport(counting_handler(httpx2, seen)), db, cache_dir)
    ) as client:
        assert ask(client) == ("MISS", "answer 1")
        key = stored_key(db)
        for damage in (
            b"garbage",
            encode_entry(CacheEntry(200, (), (b"{}",), {}, 0.0, 60.0))[:-1] + b"]",
            {"x": 1},
        ):
            with diskcache.Cache(str(cache_dir)) as disk:
                disk.set(key, damage)
            forget_memory(cache_dir)
            assert ask(client, {"X-Httptrack-Cache": "no-store"})[0] == "MISS"
            with diskcache.Cache(str(cache_dir)) as disk:
                assert key not in disk
    assert len(seen) == 4
    assert fault_counts()["cache_corrupt"] == 3


def test_a_damaged_entry_file_is_a_miss(db: Path, cache_dir: Path) -> None:
    big = json.dumps(
        {"object": "list", "data": [{"id": f"model-{os.urandom(16).hex()}"} for i in range(5000)]}
    ).encode()  # > 32 KiB once compressed: a file
    seen: list[Any] = []
    with httpx2.Client(
        # Bodies not in the log: the folder holds the answer itself (in a file of its own).
        transport=tracking(
            httpx2.MockTransport(responder(httpx2, big, seen=seen)), db, cache_dir, store_bodies=False
        )
    ) as client:
        for expected in ("MISS", "HIT"):
            assert client.get("https://api.openai.com/v1/models").headers["x-httptrack-cache"] == expected
            httptrack.flush()
        (value_file,) = cache_dir.rglob("*.val")
        data = bytearray(value_file.read_bytes())
        data[-10] ^= 0xFF
        value_file.write_bytes(bytes(data))
        forget_memory(cache_dir)
        response = client.get("https://api.openai.com/v1/models")
        assert (response.headers["x-httptrack-cache"], response.content) == ("MISS", big)
        httptrack.flush()
        forget_memory(cache_dir)
        assert client.get("https://api.openai.com/v1/models").headers["x-httptrack-cache"] == "HIT"
    assert len(seen) == 2 and fault_counts()["cache_corrupt"] == 1


def test_an_unusable_cache_folder_stops_storing_not_calling(db: Path, tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("in the way")
    seen: list[Any] = []
    with httpx2.Client(
        transport=tracking(httpx2.MockTransport(counting_handler(httpx2, seen)), db, not_a_folder)
    ) as client:
        assert [ask(client), ask(client)] == [("MISS", "answer 1"), ("MISS", "answer 2")]
    assert fault_counts()["cache_open"] == 1
    assert [r["status"] for r in read_rows(db)] == ["success", "success"]


def test_a_full_disk_stops_storing_not_calling(
    db: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_cache_store, "_insert", full)  # every write into the folder's index
    seen: list[Any] = []
    with httpx2.Client(
        transport=tracking(httpx2.MockTransport(counting_handler(httpx2, seen)), db, cache_dir)
    ) as client:
        assert [ask(client), ask(client), ask(client)] == [("MISS", f"answer {n}") for n in (1, 2, 3)]
    assert fault_counts()["cache_write"] == 1  # then storing pauses instead of failing again


def test_a_locked_cache_never_blocks_or_breaks_the_call(
    db: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_cache_store, "WRITE_ATTEMPTS", 2)
    seen: list[Any] = []
    with httpx2.Client(
        transport=tracking(httpx2.MockTransport(counting_handler(httpx2, seen)), db, cache_dir)
    ) as client:
        assert ask(client) == ("MISS", "answer 1")
        locker = sqlite3.connect(cache_dir / "cache.db", isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # another process writing, for a long time
        forget_memory(cache_dir)
        assert ask(client) == ("HIT", "answer 1")  # readers are not blocked (WAL)
        assert ask(client, {"X-Httptrack-Cache": "no-cache"}) == (None, "answer 2")  # its store gives up
        assert fault_counts()["cache_write"] == 1
        locker.execute("ROLLBACK")
        locker.close()
        forget_memory(cache_dir)
        assert ask(client) == ("HIT", "answer 1")


# -- several processes ----------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import json, sys, httpx2, httptrack
    from httptrack._fake import mock_transport

    cache_dir, db, *prompts = sys.argv[1:]
    seen = []
    transport = httptrack.TrackingTransport(mock_transport(httpx2, record=seen), db=db, cache_dir=cache_dir)
    client = httpx2.Client(transport=transport, headers={"authorization": "Bearer sk-a"})
    statuses = []
    for prompt in prompts:
        messages = [{"role": "user", "content": prompt}]
        response = client.post("https://api.openai.com/v1/chat/completions",
                               json={"model": "gpt-4o-mini", "messages": messages})
        statuses.append(response.headers["x-httptrack-cache"])
    httptrack.flush()
    print(json.dumps({"requests": len(seen), "statuses": statuses}))
    """
)


def run_children(cache_dir: Path, db: Path, prompt_lists: list[list[str]]) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(cache_dir), str(db), *prompts],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for prompts in prompt_lists
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        results.append(json.loads(out))
    return results


def test_processes_share_the_cache_folder(db: Path, cache_dir: Path) -> None:
    (first,) = run_children(cache_dir, db, [["shared question"]])
    (second,) = run_children(cache_dir, db, [["shared question"]])
    assert first == {"requests": 1, "statuses": ["MISS"]}
    assert second == {"requests": 0, "statuses": ["HIT"]}
    # Four processes at once, each storing its own answers and reading the shared one.
    prompts = [[f"process {p} question {q}" for q in range(5)] + ["shared question"] for p in range(4)]
    for result in run_children(cache_dir, db, prompts):
        assert result == {"requests": 5, "statuses": ["MISS"] * 5 + ["HIT"]}
    (everything,) = run_children(cache_dir, db, [[p for ps in prompts for p in ps]])
    assert everything == {"requests": 0, "statuses": ["HIT"] * 24}
    rows = read_rows(db)
    assert len(rows) == 2 + 24 + 24 and len({r["pid"] for r in rows}) == 7


_REPLACER = textwrap.dedent(
    """
    import json, sys, httpx2, httptrack

    cache_dir, db, mode, directive = sys.argv[1:]
    answer = {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "answer from elsewhere"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 14, "completion_tokens": 3, "total_tokens": 17}}
    inner = httpx2.MockTransport(lambda request: httpx2.Response(200, json=answer))
    transport = httptrack.TrackingTransport(inner, db=db, cache_dir=cache_dir, cache=mode)
    with httpx2.Client(transport=transport) as client:
        headers = {"authorization": "Bearer sk-a"}
        if directive:
            headers["X-Httptrack-Cache"] = directive
        client.post("https://api.openai.com/v1/chat/completions", headers=headers,
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is the capital of France?"}]})
    httptrack.flush()
    """
)


@pytest.mark.parametrize(("mode", "directive"), [("refresh", ""), ("on", "no-cache")])
def test_an_answer_replaced_elsewhere_is_not_served_from_memory(
    mode: str, directive: str, db: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long-running process holds an answer in memory; another process fetches a new one
    on purpose (refresh, no-cache) and stores it. The first must serve the new one."""
    monkeypatch.setattr(_cache_store, "GENERATION_CHECK_INTERVAL", 0.0)  # checked on every lookup
    seen: list[Any] = []
    with httpx2.Client(
        transport=tracking(httpx2.MockTransport(counting_handler(httpx2, seen)), db, cache_dir)
    ) as client:
        assert ask(client) == ("MISS", "answer 1")
        assert ask(client) == ("HIT", "answer 1")  # now in this process's memory
        child = subprocess.run(
            [sys.executable, "-c", _REPLACER, str(cache_dir), str(db), mode, directive],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert child.returncode == 0, child.stderr
        assert ask(client) == ("HIT", "answer from elsewhere")
        assert ask(client) == ("HIT", "answer from elsewhere")
    assert len(seen) == 1


def test_replacing_an_answer_keeps_this_process_memory(db: Path, cache_dir: Path) -> None:
    seen: list[Any] = []
    inner = httpx2.MockTransport(counting_handler(httpx2, seen))
    with httpx2.Client(transport=tracking(inner, db, cache_dir)) as client:
        other = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Another question"}]}
        client.post(CHAT_URL, json=other, headers={"authorization": "Bearer sk-a"})
        httptrack.flush()
        hit = client.post(CHAT_URL, json=other, headers={"authorization": "Bearer sk-a"})
        assert hit.headers["x-httptrack-cache"] == "HIT"  # read from the folder: now in memory
        store = shared_store(cache_dir, 1 << 30)
        assert len(store.memory) == 1
        assert ask(client, {"X-Httptrack-Cache": "no-cache"}) == (None, "answer 2")
        httptrack.flush()
        assert len(store.memory) == 1  # its own replacement did not make it forget
        assert (cache_dir / _cache_store.GENERATION_FILE).exists()
        assert ask(client) == ("HIT", "answer 2")


def test_replacing_an_answer_right_after_another_process_cleared_still_forgets(
    db: Path, cache_dir: Path
) -> None:
    """This process stores a replacement (and writes a new generation token) less than a
    second after another process cleared the folder: what the clear said to forget is
    forgotten all the same, not hidden under this process's own token."""
    seen: list[Any] = []
    inner = httpx2.MockTransport(counting_handler(httpx2, seen))
    with httpx2.Client(transport=tracking(inner, db, cache_dir)) as client:
        other = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Another question"}]}
        client.post(CHAT_URL, json=other, headers={"authorization": "Bearer sk-a"})
        httptrack.flush()
        client.post(CHAT_URL, json=other, headers={"authorization": "Bearer sk-a"})  # a hit: in memory
        store = shared_store(cache_dir, 1 << 30)
        assert len(store.memory) == 1
        _cache_store.clear_cache(cache_dir)  # as `httptrack cache clear` in another process
        assert ask(client, {"X-Httptrack-Cache": "no-cache"}) == (None, "answer 2")
        assert len(store.memory) == 0  # the cleared answer is no longer remembered
        reply = client.post(CHAT_URL, json=other, headers={"authorization": "Bearer sk-a"})
        assert reply.headers["x-httptrack-cache"] == "MISS"
    assert len(seen) == 3


# -- the entry format -----------------------------------------------------------------------


def test_entries_round_trip_and_damage_is_detected() -> None:
    entry = CacheEntry(
        200,
        ((b"content-type", b"text/event-stream"), (b"x-caf\xe9", b"\xff")),
        (b"data: 1\n\n", b"", b"data: 2\n\n"),
        {"input_tokens": 3, "cost_usd": 1e-06},
        1.5,
        60.0,
        {"model": "m"},
    )
    blob = encode_entry(entry)
    assert decode_entry(blob) == entry
    for position in range(len(blob)):
        damaged = bytearray(blob)
        damaged[position] ^= 0x01
        with pytest.raises(CorruptEntry):
            decode_entry(bytes(damaged))
    for cut in (0, 5, 12, len(blob) - 1):
        with pytest.raises(CorruptEntry):
            decode_entry(blob[:cut])


@LIBS
def test_a_response_built_already_read_is_recorded_and_cached(lib: Any, db: Path, cache_dir: Path) -> None:
    """``Response(content=...)`` from a MockTransport handler: the client never streams it."""
    body = json.dumps(chat_completion("Paris.")).encode()
    seen: list[Any] = []

    def handler(request: Any) -> Any:
        seen.append(request)
        return lib.Response(200, headers={"content-type": "application/json"}, content=body)

    with lib.Client(transport=tracking(lib.MockTransport(handler), db, cache_dir)) as client:
        for expected in ("MISS", "HIT"):
            response = client.post(CHAT_URL, json={"model": "gpt-4o-mini", "messages": QUESTION})
            assert (response.headers["x-httptrack-cache"], response.content) == (expected, body)
            httptrack.flush()
    assert len(seen) == 1
    original, hit = read_rows(db)
    assert (original["outcome"], original["response_body"], original["input_tokens"]) == (
        "complete",
        body.decode(),
        14,
    )
    assert_hit_row(hit, original)


def test_a_hit_the_app_stops_reading_keeps_the_original_figures(db: Path, cache_dir: Path) -> None:
    seen: list[RecordedRequest] = []
    transport = tracking(fake(httpx2, seen), db, cache_dir)
    client = openai.OpenAI(api_key="sk-test-a", http_client=httpx2.Client(transport=transport))
    full = list(client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True))
    httptrack.flush()
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
    first = next(iter(stream))
    stream.close()
    assert first.model_dump() == full[0].model_dump()
    original, hit = read_rows(db)
    assert (hit["cached"], hit["outcome"], hit["status"]) == (1, "cut_short", "success")
    assert [hit[c] for c in FIGURES] == [original[c] for c in FIGURES]
    assert (hit["cost_usd"], hit["cost_saved_usd"]) == (0.0, original["cost_usd"])
    assert hit["response_bytes"] < original["response_bytes"]
    assert hit["response_text"] is None  # the first chunk carries the role only: what the app read
    # The entry is untouched: the next reader gets all of it.
    assert [
        c.model_dump()
        for c in client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
    ] == [c.model_dump() for c in full]
    assert len(seen) == 1


# -- the behaviours, through the real SDKs: openai on httpx2, ollama on httpx, sync and async --


class SDK:
    """The calls a test makes, the same for the four: the ``openai`` SDK (on httpx2) or the
    ``ollama`` SDK (on httpx), sync or async, over the fake provider in memory (``seen``
    counts what reached it); every transport's cache runs on ``clock``."""

    def __init__(self, name: str, asynchronous: bool, db: Path, cache_dir: Path) -> None:
        self.name = name
        self.asynchronous = asynchronous
        self.db = db
        self.cache_dir = cache_dir
        self.clock = Clock()
        self.seen: list[RecordedRequest] = []
        self.model = "gpt-4o-mini" if name == "openai" else "llama3.2"
        self.loop = asyncio.new_event_loop() if asynchronous else None

    def run(self, value: Any) -> Any:
        return self.loop.run_until_complete(value) if self.loop is not None else value

    def client(self, key: str = "key-a", headers: dict[str, str] | None = None, **options: Any) -> Any:
        lib = httpx2 if self.name == "openai" else httpx
        transport = tracking(
            fake(lib, self.seen),
            self.db,
            self.cache_dir,
            asynchronous=self.asynchronous,
            clock=self.clock,
            **options,
        )
        if self.name == "openai":
            http = (httpx2.AsyncClient if self.asynchronous else httpx2.Client)(transport=transport)
            kind: Any = openai.AsyncOpenAI if self.asynchronous else openai.OpenAI
            return kind(api_key=key, max_retries=0, http_client=http, default_headers=headers or {})
        kind = ollama.AsyncClient if self.asynchronous else ollama.Client
        return kind(transport=transport, headers={"authorization": f"Bearer {key}", **(headers or {})})

    def _create(
        self, client: Any, messages: list[dict[str, str]], model: str | None, stream: bool, **extra: Any
    ) -> Any:
        if self.name == "openai":
            return client.chat.completions.create(
                model=model or self.model, messages=messages, stream=stream, **extra
            )
        return client.chat(model=model or self.model, messages=messages, stream=stream, **extra)

    def ask(
        self,
        client: Any,
        prompt: str = "What is the capital of France?",
        *,
        model: str | None = None,
        messages: list[dict[str, str]] | None = None,
        **extra: Any,
    ) -> str:
        messages = messages or [{"role": "user", "content": prompt}]
        reply = self.run(self._create(client, messages, model, False, **extra))
        httptrack.flush()
        return str(reply.choices[0].message.content if self.name == "openai" else reply.message.content)

    def stream(self, client: Any, *, model: str | None = None) -> list[dict[str, Any]]:
        request = self._create(client, QUESTION, model, True)
        if self.loop is not None:

            async def collect() -> list[dict[str, Any]]:
                return [chunk.model_dump() async for chunk in await request]

            chunks = self.run(collect())
        else:
            chunks = [chunk.model_dump() for chunk in request]
        httptrack.flush()
        return chunks

    def read_first_chunk_only(self, client: Any) -> None:
        request = self._create(client, QUESTION, None, True)
        if self.loop is not None:

            async def first() -> None:
                stream = await request
                await stream.__anext__()
                await (stream.close() if self.name == "openai" else stream.aclose())

            self.run(first())
        else:
            next(iter(request))
            request.close()
        httptrack.flush()

    def text(self, chunks: list[dict[str, Any]]) -> str:
        if self.name == "openai":
            return "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
        return "".join(c["message"]["content"] for c in chunks)

    def cached(self) -> list[int]:
        return [r["cached"] for r in read_rows(self.db)]


@pytest.fixture(
    params=[("openai", False), ("openai", True), ("ollama", False), ("ollama", True)],
    ids=["openai-sync", "openai-async", "ollama-sync", "ollama-async"],
)
def sdk(request: pytest.FixtureRequest, db: Path, cache_dir: Path) -> Any:
    driver = SDK(*request.param, db, cache_dir)
    yield driver
    if driver.loop is not None:
        driver.loop.close()


def test_sdk_repeat_is_served_without_calling_the_provider(sdk: SDK) -> None:
    client = sdk.client()
    first, second = sdk.ask(client), sdk.ask(client)
    assert first == second and first
    assert len(sdk.seen) == 1 and sdk.cached() == [0, 1]
    assert_hit_row(*reversed(read_rows(sdk.db)))


def test_sdk_cached_stream_replays_its_chunks_and_text(sdk: SDK) -> None:
    client = sdk.client()
    live, replayed = sdk.stream(client), sdk.stream(client)
    assert replayed == live and len(live) > 3
    assert len(sdk.seen) == 1
    original, hit = read_rows(sdk.db)
    assert sdk.text(replayed) == sdk.text(live) == original["response_text"] == hit["response_text"]
    assert original["stream"] == 1
    assert_hit_row(hit, original)


def test_sdk_another_api_key_misses(sdk: SDK) -> None:
    alice, bob = sdk.client("key-alice"), sdk.client("key-bob")
    for client in (alice, bob, alice, bob):
        sdk.ask(client)
    assert len(sdk.seen) == 2 and sdk.cached() == [0, 0, 1, 1]
    keys = [r["cache_key"] for r in read_rows(sdk.db)]
    assert keys[0] != keys[1] and keys[2:] == keys[:2]


def test_sdk_modes(sdk: SDK) -> None:
    on = sdk.client()
    sdk.ask(on)
    assert len(sdk.seen) == 1
    off = sdk.client(cache="off")
    sdk.ask(off), sdk.ask(off)
    assert len(sdk.seen) == 3  # neither read nor stored
    refresh = sdk.client(cache="refresh")
    sdk.ask(refresh), sdk.ask(refresh)
    assert len(sdk.seen) == 5  # always sent ...
    sdk.ask(on)
    assert len(sdk.seen) == 5  # ... and stored
    replay = sdk.client(cache="replay")
    assert sdk.ask(replay) == sdk.ask(on)
    with pytest.raises(httptrack.CacheMiss, match="there is no cached response"):
        sdk.ask(replay, "Never asked before")
    assert len(sdk.seen) == 5
    rows = read_rows(sdk.db)
    assert [(r["cached"], r["cache_key"] is not None) for r in rows] == [
        (0, True),  # on
        (0, False),  # off
        (0, False),
        (0, True),  # refresh
        (0, True),
        (1, True),  # on
        (1, True),  # replay
        (1, True),  # on
        (0, True),  # replay: the miss
    ]
    assert rows[-1]["outcome"] == "cache_miss"


def test_sdk_control_headers(sdk: SDK) -> None:
    plain = sdk.client()
    no_cache = sdk.client(headers={"X-Httptrack-Cache": "no-cache"})
    no_store = sdk.client(headers={"X-Httptrack-Cache": "no-store"})
    off = sdk.client(headers={"X-Httptrack-Cache": "off"})
    sdk.ask(plain, "one")
    sdk.ask(no_cache, "one")  # sent, and stored
    sdk.ask(plain, "one")
    assert len(sdk.seen) == 2
    sdk.ask(no_store, "one")  # read
    sdk.ask(no_store, "two")  # sent, not stored
    sdk.ask(plain, "two")
    assert len(sdk.seen) == 4
    sdk.ask(off, "two")  # neither
    sdk.ask(off, "three")
    sdk.ask(plain, "three")
    assert len(sdk.seen) == 7
    assert sdk.cached() == [0, 0, 1, 1, 0, 0, 0, 0, 0]
    assert not any(name.startswith("x-httptrack") for request in sdk.seen for name in request.headers)


def test_sdk_errors_and_cut_short_streams_are_never_stored(sdk: SDK) -> None:
    client = sdk.client()
    for _ in range(2):
        with pytest.raises(openai.InternalServerError if sdk.name == "openai" else ollama.ResponseError):
            sdk.ask(client, model="server-error")
    for _ in range(2):  # the connection drops half-way
        with pytest.raises((openai.APIError, httpx.RemoteProtocolError)):
            sdk.stream(client, model="cut-stream")
    for _ in range(2):  # the app stops reading after the first chunk
        sdk.read_first_chunk_only(client)
    assert len(sdk.seen) == 6
    rows = read_rows(sdk.db)
    assert [(r["status"], r["outcome"], r["cached"]) for r in rows] == [
        ("error", "complete", 0),
        ("error", "complete", 0),
        ("error", "failed", 0),
        ("error", "failed", 0),
        ("success", "cut_short", 0),
        ("success", "cut_short", 0),
    ]


def test_sdk_equivalent_json_written_differently_hits(sdk: SDK) -> None:
    client = sdk.client()
    # The SDK sends what it is given in the order given (ollama rebuilds messages, not `format`).
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    reordered = {"properties": {"city": {"type": "string"}}, "type": "object"}
    if sdk.name == "openai":
        sdk.ask(client, messages=[{"role": "user", "content": "Café?"}])
        sdk.ask(client, messages=[{"content": "Café?", "role": "user"}])
        sdk.ask(client, messages=[{"role": "user", "content": "Cafe?"}])
    else:
        sdk.ask(client, "Café?", format=schema)
        sdk.ask(client, "Café?", format=reordered)
        sdk.ask(client, "Café?", format={**schema, "required": ["city"]})
    assert len(sdk.seen) == 2 and sdk.cached() == [0, 1, 0]
    first, second, _ = read_rows(sdk.db)
    assert first["request_body"] != second["request_body"]  # other bytes, the same request


def test_sdk_entries_expire_per_ttl(sdk: SDK) -> None:
    client = sdk.client()
    sdk.ask(client)
    sdk.clock.advance(3599)
    sdk.ask(client)
    assert len(sdk.seen) == 1
    sdk.clock.advance(1)
    sdk.ask(client)  # chat: 1 h, over
    assert len(sdk.seen) == 2
    sdk.clock.advance(3599)
    sdk.ask(client)
    assert len(sdk.seen) == 2 and sdk.cached() == [0, 1, 0, 1]


@pytest.mark.parametrize(("finished", "stored"), [((0, 1), True), ((0,), False)])
def test_a_gemini_stream_of_several_candidates_is_stored_once_each_has_finished(
    finished: tuple[int, ...], stored: bool, db: Path, cache_dir: Path
) -> None:
    """With ``candidateCount: 2`` the first candidate's finishReason is not the end: a stream
    cut before the second finishes is never stored."""

    def chunk(index: int, text: str, finish: str | None) -> bytes:
        candidate: dict[str, Any] = {"index": index, "content": {"parts": [{"text": text}], "role": "model"}}
        if finish:
            candidate["finishReason"] = finish
        return (
            b"data: "
            + json.dumps({"candidates": [candidate], "modelVersion": "gemini-2.5-flash"}).encode()
            + b"\r\n\r\n"
        )

    events = [chunk(0, "Paris", None), chunk(1, "Par", None), chunk(0, ".", "STOP")]
    if 1 in finished:
        events.append(chunk(1, "is.", "STOP"))
    seen: list[Any] = []
    handler = responder(httpx2, events, headers={"content-type": "text/event-stream"}, seen=seen)
    url = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    request = {
        "contents": [{"parts": [{"text": "Capital of France?"}]}],
        "generationConfig": {"candidateCount": 2},
    }
    with httpx2.Client(transport=tracking(httpx2.MockTransport(handler), db, cache_dir)) as client:
        for _ in range(2):
            with client.stream("POST", url, json=request, headers={"x-goog-api-key": "k"}) as reply:
                reply.read()
            httptrack.flush()
    assert len(seen) == (1 if stored else 2)


def test_a_batch_is_stored_with_a_few_statement_sizes_only(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each connection keeps every statement it prepared: an INSERT of every size from 1 to
    # 64 rows held ~2.4 MiB of SQLite's memory in the writer. A batch is cut into a few sizes.
    from httptrack.cache._store import EntryStore

    store = EntryStore(cache_dir, None)
    disk = store._open()
    sizes: list[int] = []
    real_upsert_sql = _cache_store._upsert_sql

    def upsert_sql(count: int) -> str:
        sizes.append(count)
        return real_upsert_sql(count)

    monkeypatch.setattr(_cache_store, "_upsert_sql", upsert_sql)
    now = time.time()
    stored = 0
    for count in (1, 3, 37, 100, 129):
        entries = [
            (f"{count}-{n}", CacheEntry(200, (), (f"answer {n}".encode(),), {}, now, 60.0))
            for n in range(count)
        ]
        stored += store.put_many(entries)
    assert stored == 1 + 3 + 37 + 100 + 129 == len(list(disk.iterkeys()))
    assert set(sizes) <= set(_cache_store._INSERT_SIZES) == {64, 16, 4, 1}
    assert store.get("129-128") is not None and store.get("37-36") is not None
    store.close()


def _entries(prefix: str, count: int) -> list[tuple[str, CacheEntry]]:
    now = time.time()
    return [
        (f"{prefix}-{n}", CacheEntry(200, (), (f"answer {n}".encode(),), {}, now, 60.0)) for n in range(count)
    ]


def test_changes_since_lists_the_rows_added_since_not_every_recent_one(cache_dir: Path) -> None:
    # The membership filter's feed: what was stored since the cursor (the last rowid listed)
    # and the last CHANGES_ROWS rows again, not every key stored in the last seconds (each
    # refresh relisted thousands: CPU and memory in the writer, or on the app's thread).
    from httptrack.cache._store import CHANGES_ROWS, EntryStore

    store = EntryStore(cache_dir, None)
    assert store.put_many(_entries("a", 100)) == 100
    listed = store.changes_since(None)
    assert listed is not None
    keys, cursor = listed
    assert sorted(keys) == sorted(key for key, _ in _entries("a", 100))
    assert store.put_many(_entries("b", 5)) == 5
    listed = store.changes_since(cursor)
    assert listed is not None
    keys, cursor = listed
    assert {f"b-{n}" for n in range(5)} <= set(keys) and len(keys) == 5 + CHANGES_ROWS
    # The last row deleted and its rowid given again: still listed.
    disk = store._open()
    assert disk.delete("b-4")
    assert store.put_many(_entries("c", 1)) == 1
    listed = store.changes_since(cursor)
    assert listed is not None and "c-0" in listed[0]
    # Emptied (`httptrack cache clear`) and stored into again: rowids start over.
    disk.clear()
    assert store.put_many(_entries("d", 3)) == 3
    listed = store.changes_since(listed[1])
    assert listed is not None and sorted(listed[0]) == ["d-0", "d-1", "d-2"]
    store.close()


def test_a_long_batch_stores_its_answers_as_it_goes(
    db: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer's batch holds up to a thousand calls: their entries are stored every
    # STAGED_MAX, not all kept until the batch's end.
    from httptrack.cache import _policy
    from httptrack.record._writer import writer

    monkeypatch.setattr(_policy, "STAGED_MAX", 2)
    sizes: list[int] = []
    real_put_many = _cache_store.EntryStore.put_many

    def put_many(self: Any, entries: list[Any]) -> int:
        sizes.append(len(entries))
        return int(real_put_many(self, entries))

    monkeypatch.setattr(_cache_store.EntryStore, "put_many", put_many)
    seen: list[Any] = []
    with httpx2.Client(
        transport=tracking(httpx2.MockTransport(counting_handler(httpx2, seen)), db, cache_dir)
    ) as client:

        def post(n: int) -> None:
            client.post(
                CHAT_URL, json={"model": "m", "messages": [{"role": "user", "content": f"q {n}"}]}
            ).read()

        post(0)
        httptrack.flush()
        sizes.clear()
        with writer()._lock:  # the writer waits: the next five calls are one batch
            for n in range(1, 6):
                post(n)
        httptrack.flush()
        assert sizes == [2, 2, 1]
        assert [r["cached"] for r in read_rows(db)] == [0] * 6
        for n in range(6):  # every one stored
            response = client.post(
                CHAT_URL, json={"model": "m", "messages": [{"role": "user", "content": f"q {n}"}]}
            )
            assert response.headers["x-httptrack-cache"] == "HIT"
