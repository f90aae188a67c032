"""What the SDKs' own test suites showed httptrack must not change (issue 22), checked with
the real SDKs over in-memory transports:

- a generator upload is sent lazily: the inner transport gets the first chunk before the
  app's generator has made the last, and the row still holds the body;
- a usage chunk the server sends unasked reaches the app; only the one httptrack caused is
  hidden;
- answers of test doubles (mock transports) are not stored in the cache unless the
  transport was asked for a cache; under autoload never;
- the loop guard: a request answered from the cache ``cache_max_hits`` times within a
  minute goes to the provider again, and its row says why.

``scripts/run_sdk_suite.py`` runs the SDKs' own suites plain and tracked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
from helpers import LIBS, chunk_stream, one_row, read_rows

import httptrack
from httptrack._fake import FakeProviderServer, mock_transport
from httptrack._faults import fault_counts
from httptrack._streams import UsageChunkFilter
from httptrack.cache import _guard
from httptrack.providers import provider_by_name

CHAT = "https://api.openai.com/v1/chat/completions"
UPLOAD = "https://api.openai.com/v1/uploads/u1/parts"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PIECES = [b"first piece;", b"second piece;", b"last piece."]


@pytest.fixture(autouse=True)
def _fresh_guard() -> Iterator[None]:
    _guard.guard.reset()
    yield
    httptrack.uninstall()
    _guard.guard.reset()


# -- streamed uploads ----------------------------------------------------------------------


class Streaming:
    """An inner transport that reads the request body chunk by chunk, as a network transport
    does, writing down when each chunk arrives (``events``, shared with the generator)."""

    def __init__(self, lib: Any, events: list[str]) -> None:
        self.lib = lib
        self.events = events
        self.received = b""

    def handle_request(self, request: Any) -> Any:
        for chunk in request.stream:
            self.events.append(f"sent {chunk.decode()}")
            self.received += chunk
        return self.lib.Response(200, json={"ok": True})

    async def handle_async_request(self, request: Any) -> Any:
        async for chunk in request.stream:
            self.events.append(f"sent {chunk.decode()}")
            self.received += chunk
        return self.lib.Response(200, json={"ok": True})

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class Direct(httpx2.BaseTransport):
    """A transport handing the request to ``handler`` as it is (body unread)."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        return self.handler(request)  # type: ignore[no-any-return]


def pieces(events: list[str]) -> Iterator[bytes]:
    for piece in PIECES:
        events.append(f"made {piece.decode()}")
        yield piece


async def async_pieces(events: list[str]) -> AsyncIterator[bytes]:
    for piece in PIECES:
        events.append(f"made {piece.decode()}")
        yield piece


LAZY = [f"{what} {piece.decode()}" for piece in PIECES for what in ("made", "sent")]


@LIBS
def test_a_generator_upload_is_sent_as_it_is_made(lib: Any, db: Path) -> None:
    events: list[str] = []
    inner = Streaming(lib, events)
    with lib.Client(transport=httptrack.TrackingTransport(inner, db=db)) as client:
        reply = client.post(
            UPLOAD, content=pieces(events), headers={"content-type": "application/octet-stream"}
        )
    assert reply.status_code == 200
    assert events == LAZY  # each chunk leaves before the next is made
    assert inner.received == b"".join(PIECES)
    row = one_row(db)
    assert row["request_body"] == b"".join(PIECES).decode()
    assert row["request_bytes"] == len(b"".join(PIECES))
    assert row["cache_key"] is None  # a streamed body is never cached


@LIBS
def test_an_async_generator_upload_is_sent_as_it_is_made(lib: Any, db: Path) -> None:
    events: list[str] = []
    inner = Streaming(lib, events)

    async def main() -> Any:
        transport = httptrack.AsyncTrackingTransport(inner, db=db)
        async with lib.AsyncClient(transport=transport) as client:
            return await client.post(UPLOAD, content=async_pieces(events))

    assert asyncio.run(main()).status_code == 200
    assert events == LAZY
    assert one_row(db)["request_body"] == b"".join(PIECES).decode()


def test_the_openai_sdk_upload_with_an_iterator_is_not_read_ahead(db: Path) -> None:
    """As openai's own test_binary_content_upload_with_iterator: the handler runs before
    anything has read the body, under an explicit transport and under autoload. (Its inner
    transport, like that test's, hands the request on unread: MockTransport reads it.)"""
    consumed: list[bytes] = []

    def made() -> Iterator[bytes]:
        for piece in PIECES:
            consumed.append(piece)
            yield piece

    def handler(request: httpx2.Request) -> httpx2.Response:
        assert consumed == [], "the request body should not have been read"
        return httpx2.Response(200, content=request.read())

    for autoload in (False, True):
        consumed.clear()
        if autoload:
            httptrack.install(db=db)
            http_client = httpx2.Client(transport=Direct(handler))
        else:
            transport = httptrack.TrackingTransport(Direct(handler), db=db)
            http_client = httpx2.Client(transport=transport)
        with openai.OpenAI(api_key="sk-test", http_client=http_client) as client:
            reply = client.post(
                "/uploads/u1/parts",
                content=made(),
                cast_to=httpx2.Response,
                options={"headers": {"Content-Type": "application/octet-stream"}},
            )
        assert reply.content == b"".join(PIECES) and consumed == PIECES
        httptrack.uninstall()
    httptrack.flush()
    rows = read_rows(db)
    assert [r["request_body"] for r in rows] == [b"".join(PIECES).decode()] * 2


@LIBS
def test_a_long_streamed_upload_is_kept_up_to_the_cap_and_counted_whole(lib: Any, db: Path) -> None:
    size = 3 * 1024 * 1024  # past the body cap (1 MiB here) and the minimum kept (1 MiB)
    chunk = b"x" * 65536
    inner = Streaming(lib, [])
    transport = httptrack.TrackingTransport(inner, db=db, max_body_bytes=1024 * 1024)
    with lib.Client(transport=transport) as client:
        client.post(UPLOAD, content=iter([chunk] * (size // len(chunk))))
    assert len(inner.received) == size
    row = one_row(db)
    assert row["request_bytes"] == size
    assert row["request_body"].endswith(f"[httptrack: truncated; {size} bytes sent in all]")
    assert len(row["request_body"]) < 1024 * 1024 + 100


@LIBS
def test_replay_mode_sends_no_streamed_upload(lib: Any, db: Path, cache_dir: Path) -> None:
    events: list[str] = []
    inner = Streaming(lib, events)
    transport = httptrack.TrackingTransport(inner, db=db, cache="replay", cache_dir=cache_dir)
    with lib.Client(transport=transport) as client, pytest.raises(httptrack.CacheMiss, match="streamed"):
        client.post(CHAT, content=pieces(events))
    assert events == []  # not a byte made, nothing sent
    assert one_row(db)["outcome"] == "cache_miss"


@LIBS
def test_a_body_in_memory_is_still_cached(lib: Any, db: Path, cache_dir: Path) -> None:
    seen: list[Any] = []
    transport = httptrack.TrackingTransport(mock_transport(lib, record=seen), db=db, cache_dir=cache_dir)
    body = {"model": "gpt-4o-mini", "messages": QUESTION}
    with lib.Client(transport=transport) as client:
        first = client.post(CHAT, json=body)
        httptrack.flush()
        second = client.post(CHAT, json=body)
    assert (first.headers["x-httptrack-cache"], second.headers["x-httptrack-cache"]) == ("MISS", "HIT")
    assert len(seen) == 1


# -- the usage chunk -----------------------------------------------------------------------


def stream_body(marked: bool, with_usage: bool) -> bytes:
    """An OpenAI chat stream; ``marked``: every chunk has ``"usage": null``, as OpenAI sends
    when asked for usage; ``with_usage``: a usage-only chunk before ``[DONE]``."""
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    events: list[dict[str, Any]] = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Paris"}}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    if marked:
        events = [{**e, "usage": None} for e in events]
    if with_usage:
        usage = {"prompt_tokens": 14, "completion_tokens": 1, "total_tokens": 15}
        events.append({**base, "choices": [], "usage": usage})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def test_a_usage_chunk_the_server_sends_unasked_reaches_the_app(db: Path) -> None:
    """OpenAI's own recorded fixture (its SDK's test_parse_pydantic_model): chunks without a
    ``usage`` member, then a usage chunk. httptrack asked for usage, but this server did not
    answer the request's option: it sends usage anyway, and the app gets it."""
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        body = stream_body(marked=False, with_usage=True)
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    transport = httptrack.TrackingTransport(httpx2.MockTransport(handler), db=db, cache=False)
    with openai.OpenAI(api_key="sk-test", http_client=httpx2.Client(transport=transport)) as client:
        with client.chat.completions.stream(model="gpt-4o-mini", messages=QUESTION) as stream:
            for _ in stream:
                pass
            final = stream.get_final_completion()
    assert json.loads(seen[0].content)["stream_options"] == {"include_usage": True}  # httptrack asked
    assert final.usage is not None and final.usage.total_tokens == 15
    row = one_row(db)
    assert (row["input_tokens"], row["output_tokens"], row["tokens_estimated"]) == (14, 1, 0)


@LIBS
@pytest.mark.parametrize("preread", [False, True], ids=["streamed", "read-already"])
def test_only_the_usage_chunk_httptrack_caused_is_hidden(lib: Any, preread: bool, db: Path) -> None:
    replies: dict[bool, bytes] = {}
    for marked in (True, False):

        def handler(request: Any, marked: bool = marked) -> Any:
            body = stream_body(marked=marked, with_usage=True)
            if preread:
                return lib.Response(200, content=body, headers={"content-type": "text/event-stream"})
            return lib.Response(
                200,
                stream=chunk_stream(lib, [body[:50], body[50:]]),
                headers={"content-type": "text/event-stream"},
            )

        transport = httptrack.TrackingTransport(lib.MockTransport(handler), db=db, cache=False)
        request = {"model": "gpt-4o-mini", "messages": QUESTION, "stream": True}
        with lib.Client(transport=transport) as client, client.stream("POST", CHAT, json=request) as reply:
            replies[marked] = reply.read()
    assert b'"usage": {' not in replies[True]  # marked: the server answered httptrack's option
    assert replies[False] == stream_body(marked=False, with_usage=True)  # the server's own: kept


def test_a_request_that_asked_for_usage_is_left_alone(db: Path) -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        body = stream_body(marked=True, with_usage=True)
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    transport = httptrack.TrackingTransport(httpx2.MockTransport(handler), db=db, cache=False)
    with openai.OpenAI(api_key="sk-test", http_client=httpx2.Client(transport=transport)) as client:
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=QUESTION, stream=True, stream_options={"include_usage": True}
            )
        )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert one_row(db)["parse_notes"] is None  # nothing rewritten


def test_servers_that_do_not_mark_their_chunks() -> None:
    body = stream_body(marked=False, with_usage=True)
    (usage_event,) = [e + b"\n\n" for e in body.split(b"\n\n") if b'"choices": [], "usage": {' in e]
    is_usage_chunk = provider_by_name("openai").is_usage_chunk
    marked = UsageChunkFilter(is_usage_chunk)
    assert marked.feed(body) + marked.flush() == body and not marked.removed
    unmarked = UsageChunkFilter(
        is_usage_chunk, needs_mark=False
    )  # Ollama's /v1, vLLM: the first usage chunk is ours
    assert unmarked.feed(body) + unmarked.flush() == body.replace(usage_event, b"")
    assert unmarked.removed


# -- answers of test doubles ---------------------------------------------------------------


def ask_twice(client: Any, url: str = CHAT) -> list[str]:
    body = {"model": "gpt-4o-mini", "messages": QUESTION}
    first = client.post(url, json=body)
    httptrack.flush()
    second = client.post(url, json=body)
    httptrack.flush()
    return [first.headers["x-httptrack-cache"], second.headers["x-httptrack-cache"]]


@LIBS
def test_a_mock_transports_answers_are_not_cached_unless_asked(lib: Any, db: Path, cache_dir: Path) -> None:
    seen: list[Any] = []
    # The cache is on by default (HTTPTRACK_CACHE), but this transport was not asked for one.
    with lib.Client(transport=httptrack.TrackingTransport(mock_transport(lib, record=seen), db=db)) as client:
        assert ask_twice(client) == ["MISS", "MISS"]
    assert len(seen) == 2
    for asked in ({"cache": True}, {"cache": "on"}, {"cache_dir": cache_dir}):
        seen.clear()
        transport = httptrack.TrackingTransport(mock_transport(lib, record=seen), db=db, **asked)
        with lib.Client(transport=transport) as client:
            assert ask_twice(client)[1] == "HIT"
        assert len(seen) <= 1


@LIBS
def test_under_autoload_one_tests_double_never_answers_another(lib: Any, db: Path, cache_dir: Path) -> None:
    httptrack.install(db=db, cache="on", cache_dir=cache_dir)  # as HTTPTRACK=1 under a test runner
    answers: list[str] = []
    for answer in ("first test's answer", "second test's answer"):

        def handler(request: Any, answer: str = answer) -> Any:
            body = {
                "id": "c1",
                "object": "chat.completion",
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
            return lib.Response(200, json=body)

        with lib.Client(transport=lib.MockTransport(handler)) as client:
            reply = client.post(CHAT, json={"model": "gpt-4o-mini", "messages": QUESTION})
            httptrack.flush()
        answers.append(reply.json()["choices"][0]["message"]["content"])
    assert answers == ["first test's answer", "second test's answer"]


def test_answers_over_the_network_are_cached_under_autoload(db: Path, cache_dir: Path) -> None:
    with FakeProviderServer() as server:
        httptrack.install(db=db, cache_dir=cache_dir, hosts={f"127.0.0.1:{server.port}": "openai"})
        with httpx2.Client() as client:
            assert ask_twice(client, f"{server.url}/v1/chat/completions") == ["MISS", "HIT"]


# -- the loop guard ------------------------------------------------------------------------


@LIBS
def test_the_loop_guard_sends_a_request_answered_too_often(lib: Any, db: Path, cache_dir: Path) -> None:
    seen: list[Any] = []
    transport = httptrack.TrackingTransport(
        mock_transport(lib, record=seen), db=db, cache_dir=cache_dir, cache_max_hits=3
    )
    now = [1_800_000_000.0]
    transport._tracker.cache.clock = lambda: now[0]
    body = {"model": "gpt-4o-mini", "messages": QUESTION}
    statuses = []
    with lib.Client(transport=transport) as client:
        for _ in range(6):
            statuses.append(client.post(CHAT, json=body).headers["x-httptrack-cache"])
            httptrack.flush()
        now[0] += 61  # a minute later the cache answers again
        statuses.append(client.post(CHAT, json=body).headers["x-httptrack-cache"])
    assert statuses == ["MISS", "HIT", "HIT", "HIT", "MISS", "MISS", "HIT"]
    assert len(seen) == 3
    assert fault_counts()["cache_loop"] == 2
    httptrack.flush()
    notes = [r["parse_notes"] or "" for r in read_rows(db)]
    assert ["HTTPTRACK_CACHE_MAX_HITS" in n for n in notes] == [False, False, False, False, True, True, False]


def test_the_loop_guard_can_be_turned_off(db: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPTRACK_CACHE_MAX_HITS", "0")
    assert httptrack.Settings().cache_max_hits == 0
    assert httptrack.Settings(cache_max_hits="5").cache_max_hits == 5
    monkeypatch.setenv("HTTPTRACK_CACHE_MAX_HITS", "-1")
    with pytest.raises(httptrack.SettingsError, match="HTTPTRACK_CACHE_MAX_HITS"):
        httptrack.Settings()
    monkeypatch.setenv("HTTPTRACK_CACHE_MAX_HITS", "0")
    seen: list[Any] = []
    transport = httptrack.TrackingTransport(mock_transport(httpx, record=seen), db=db, cache_dir=cache_dir)
    with httpx.Client(transport=transport) as client:
        for _ in range(70):  # more than the default 60 a minute
            client.post(CHAT, json={"model": "gpt-4o-mini", "messages": QUESTION})
            httptrack.flush()
    assert len(seen) == 1
    assert "cache_loop" not in fault_counts()


def test_the_writers_pauses_are_not_the_apps_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """openai's test_retry_limits_and_backoff patches time.sleep and counts its calls: the
    writer thread's short pauses (it lets the app's threads have the GIL) must not show."""
    import time

    from httptrack.record._writer import writer

    calls: list[float] = []
    monkeypatch.setattr(time, "sleep", calls.append)
    shared = writer()
    shared._slice_start = time.perf_counter() - 10  # a long slice: time to pause
    shared._pause()
    assert calls == []
