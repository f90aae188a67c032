"""Exact streaming usage without code changes: httptrack asks OpenAI-style streams for their
usage chunk and hides that one event from the app.

Checked here: the body edit (bytes the app wrote are kept), the Content-Length on the wire
for httpx and httpx2, the providers and API versions that get it, the filter (exactly the
injected event removed, whatever the chunking), and the whole path through the real SDK.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
from helpers import LIBS, chunk_stream, load_sample, one_row
from hypothesis import given, settings
from hypothesis import strategies as st

import httptrack
from httptrack._fake import RecordedRequest, mock_transport
from httptrack._streams import UsageChunkFilter
from httptrack.providers import provider_by_name
from httptrack.providers.openai import with_include_usage

CHAT = "https://api.openai.com/v1/chat/completions"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
IS_USAGE_CHUNK = provider_by_name("openai").is_usage_chunk
USAGE_SAMPLE = load_sample("openai_chat_stream_include_usage")[1]["body_text"].encode()


def usage_event_of(body: bytes) -> bytes:
    """The one usage-only event of an OpenAI stream (with its blank line)."""
    events = [e + b"\n\n" for e in body.split(b"\n\n") if e]
    (event,) = [e for e in events if b'"choices":[]' in e and b'"usage":{' in e]
    return event


def events_of(body: bytes) -> list[Any]:
    """An SSE body's events, parsed, with a ``"usage": null`` member left out."""
    events: list[Any] = []
    for event in body.split(b"\n\n"):
        data = event.removeprefix(b"data: ")
        if not data or data == b"[DONE]":
            continue
        parsed = json.loads(data)
        if "usage" in parsed and parsed["usage"] is None:
            del parsed["usage"]
        events.append(parsed)
    return events


# -- the request body --------------------------------------------------------------------


def test_option_is_inserted_and_the_apps_bytes_kept() -> None:
    body = b'{"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi \\u00e9"}]}'
    new = with_include_usage(body)
    assert new == b'{"stream_options":{"include_usage":true},' + body[1:]
    assert json.loads(new) == {**json.loads(body), "stream_options": {"include_usage": True}}


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "gpt-4o", "messages": []}',  # not streaming
        b'{"model": "gpt-4o", "stream": false}',
        b'{"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true}}',  # asked already
        b'{"model": "x", "messages": [{"role": "user", "content": "\\"stream\\": true"}]}',  # only text
        b'{"model": "x", "tools": [{"parameters": {"stream": true}}]}',  # nested, not the request's
        b'[{"stream": true}]',
        b"not json",
        '{"stream": true}'.encode("utf-16"),  # never edited byte-wise
    ],
)
def test_bodies_left_alone(body: bytes) -> None:
    assert with_include_usage(body) is None


def test_existing_options_are_extended_not_duplicated() -> None:
    for options in ({"include_obfuscation": False}, {"include_usage": False}, None):
        body = json.dumps({"model": "gpt-4o", "stream": True, "stream_options": options}).encode()
        new = with_include_usage(body)
        assert new is not None and new.count(b"stream_options") == 1
        expected = {**(options or {}), "include_usage": True}
        assert json.loads(new) == {"model": "gpt-4o", "stream": True, "stream_options": expected}


# -- the filter --------------------------------------------------------------------------


def filtered(body: bytes, pieces: list[bytes]) -> bytes:
    chunk_filter = UsageChunkFilter(IS_USAGE_CHUNK)
    out = b"".join(chunk_filter.feed(piece) for piece in pieces) + chunk_filter.flush()
    assert chunk_filter.removed
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1000, 1 << 20])
def test_filter_removes_exactly_the_usage_event(size: int) -> None:
    pieces = [USAGE_SAMPLE[i : i + size] for i in range(0, len(USAGE_SAMPLE), size)]
    assert filtered(USAGE_SAMPLE, pieces) == USAGE_SAMPLE.replace(usage_event_of(USAGE_SAMPLE), b"")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(USAGE_SAMPLE)), max_size=40), st.booleans())
def test_filter_is_independent_of_chunking(cuts: list[int], crlf: bool) -> None:
    body = USAGE_SAMPLE.replace(b"\n", b"\r\n") if crlf else USAGE_SAMPLE
    usage = usage_event_of(USAGE_SAMPLE)
    expected = body.replace(usage.replace(b"\n", b"\r\n") if crlf else usage, b"")
    points = sorted({c for c in cuts if c < len(body)})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert filtered(body, pieces) == expected


def test_filter_keeps_azure_filter_results_and_usage_on_content_chunks() -> None:
    azure = b'data: {"choices":[],"id":"","model":"","prompt_filter_results":[{"prompt_index":0}]}\n\n'
    content = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}\n\n'
    finish = (
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":3}}\n\n'
    )
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    body = azure + content + finish + usage + b"data: [DONE]\n\n"
    assert filtered(body, [body[:10], body[10:]]) == azure + content + finish + b"data: [DONE]\n\n"


# -- through the transport ---------------------------------------------------------------


def openai_like(lib: Any, seen: list[Any], preread: bool = False) -> Any:
    """A server that, like OpenAI, adds a usage chunk only when the request asks for it (and
    then gives every other chunk ``"usage": null``). ``preread``: the response is built with ``content=`` (as mock transports and test
    doubles do), so it reaches httptrack already read."""

    def handler(request: Any) -> Any:
        seen.append(request)
        data = json.loads(request.content)
        base = {"id": "c1", "model": "gpt-4o-mini-2024-07-18"}
        events = [
            {**base, "choices": [{"index": 0, "delta": {"content": w}}]} for w in ("Paris", " it", " is ✓")
        ]
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (data.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 14, "completion_tokens": 3, "total_tokens": 17}
            events = [{**event, "usage": None} for event in events]
            events.append({**base, "choices": [], "usage": usage})
        body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        if preread:
            return lib.Response(200, headers={"content-type": "text/event-stream"}, content=body)
        pieces = [body[i : i + 9] for i in range(0, len(body), 9)]
        return lib.Response(
            200, headers={"content-type": "text/event-stream"}, stream=chunk_stream(lib, pieces)
        )

    return handler


def stream_through(
    lib: Any, db: Path, body: dict[str, Any], seen: list[Any], preread: bool = False, **options: Any
) -> bytes:
    transport = httptrack.TrackingTransport(
        lib.MockTransport(openai_like(lib, seen, preread)), db=db, cache=False, **options
    )
    with lib.Client(transport=transport) as client, client.stream("POST", CHAT, json=body) as reply:
        return reply.read() if preread else b"".join(reply.iter_raw())


@LIBS
@pytest.mark.parametrize("preread", [False, True], ids=["streamed", "read-already"])
def test_the_app_sees_the_stream_it_asked_for_and_the_row_is_exact(
    lib: Any, preread: bool, db: Path, tmp_path: Path
) -> None:
    body = {"model": "gpt-4o-mini", "stream": True, "messages": QUESTION}
    plain_seen: list[Any] = []
    without = stream_through(lib, tmp_path / "plain.db", body, plain_seen, preread, include_usage=False)
    assert b'"usage"' not in without
    seen: list[Any] = []
    received = stream_through(lib, db, body, seen, preread)
    # What the app would have had without httptrack, event by event; asked for usage, the
    # server marks each chunk "usage": null, which SDKs read as no usage, as without it.
    assert b'"usage":{' not in received and events_of(received) == events_of(without)
    sent = seen[0]
    assert json.loads(sent.content)["stream_options"] == {"include_usage": True}
    assert sent.headers["content-length"] == str(len(sent.content))
    row = one_row(db)
    assert (row["input_tokens"], row["output_tokens"], row["tokens_estimated"]) == (14, 3, 0)
    assert json.loads(row["request_body"]) == body  # the app's request is what is recorded
    assert "include_usage" in row["parse_notes"]
    assert b'"usage"' in row["response_body"].encode()  # the recorder saw the usage chunk


@LIBS
def test_switched_off_by_setting_and_env(lib: Any, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPTRACK_INCLUDE_USAGE", "0")
    seen: list[Any] = []
    stream_through(lib, db, {"model": "gpt-4o-mini", "stream": True, "messages": QUESTION}, seen)
    assert "stream_options" not in json.loads(seen[0].content)
    assert one_row(db)["tokens_estimated"] == 1


@pytest.mark.parametrize(
    ("url", "rewritten"),
    [
        ("https://res.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21", True),
        (
            "https://res.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-09-01-preview",
            True,
        ),
        ("https://res.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-06-01", False),
        ("https://res.openai.azure.com/openai/deployments/d/chat/completions?api-version=2023-05-15", False),
        ("https://res.cognitiveservices.azure.com/openai/v1/chat/completions", True),
        ("https://api.deepseek.com/chat/completions", True),
        ("https://api.x.ai/v1/chat/completions", True),
        ("http://localhost:11434/v1/chat/completions", True),
        ("https://api.openai.com/v1/completions", True),
        ("https://api.groq.com/openai/v1/chat/completions", False),  # reports usage on its own
        ("https://api.mistral.ai/v1/chat/completions", False),  # rejects unknown fields
        ("https://openrouter.ai/api/v1/chat/completions", False),
        ("https://api.openai.com/v1/embeddings", False),
        # Self-hosted servers, by the name their host is mapped with (HTTPTRACK_HOSTS).
        ("http://gpu1:8000/v1/chat/completions", True),  # vllm
        ("http://gateway.internal/v1/chat/completions", True),  # litellm
        ("http://plain.internal/v1/chat/completions", False),  # any other name: not known to accept it
    ],
)
def test_only_endpoints_known_to_accept_the_option(url: str, rewritten: bool, db: Path) -> None:
    seen: list[Any] = []

    def handler(request: Any) -> Any:
        seen.append(request)
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=b"data: [DONE]\n\n"
        )

    hosts = {"gpu1:8000": "vllm", "gateway.internal": "litellm", "plain.internal": "myserver"}
    transport = httptrack.TrackingTransport(httpx2.MockTransport(handler), db=db, cache=False, hosts=hosts)
    with httpx2.Client(transport=transport) as client:
        client.post(url, json={"model": "m", "stream": True, "messages": QUESTION})
    assert ("stream_options" in json.loads(seen[0].content)) is rewritten


@LIBS
def test_an_error_reply_reaches_the_app_untouched(lib: Any, db: Path) -> None:
    error = b'{"error": {"message": "Unrecognized request argument supplied: stream_options", "code": null}}'

    def handler(request: Any) -> Any:
        return lib.Response(
            400, headers={"content-type": "application/json"}, stream=chunk_stream(lib, [error])
        )

    transport = httptrack.TrackingTransport(lib.MockTransport(handler), db=db, cache=False)
    with lib.Client(transport=transport) as client:
        reply = client.post(CHAT, json={"model": "gpt-4o", "stream": True, "messages": QUESTION})
    assert (reply.status_code, reply.content) == (400, error)
    assert one_row(db)["status"] == "error"


def test_chunked_request_bodies_are_sent_as_they_are(db: Path) -> None:
    """A streamed body is passed on as the app streams it (never read ahead: see
    test_streamed_uploads), so it is not edited: its stream keeps no usage chunk to hide,
    and the row estimates the usage."""
    seen: list[Any] = []
    transport = httptrack.TrackingTransport(httpx.MockTransport(openai_like(httpx, seen)), db=db, cache=False)
    payload = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": QUESTION}).encode()
    with (
        httpx.Client(transport=transport) as client,
        client.stream("POST", CHAT, content=iter([payload[:20], payload[20:]])) as reply,
    ):
        reply.read()
    assert seen[0].headers["transfer-encoding"] == "chunked" and "content-length" not in seen[0].headers
    assert seen[0].content == payload
    row = one_row(db)
    assert row["request_body"] == payload.decode() and row["request_bytes"] == len(payload)
    assert (row["tokens_estimated"], row["parse_notes"]) == (1, None)


# -- with the real SDK -------------------------------------------------------------------


def test_openai_sdk_stream_without_stream_options_gets_exact_usage(db: Path) -> None:
    record: list[RecordedRequest] = []
    transport = httptrack.TrackingTransport(mock_transport(httpx2, record=record), db=db, cache=False)
    client = openai.OpenAI(api_key="sk-test", http_client=httpx2.Client(transport=transport))
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True))
    assert all(chunk.choices for chunk in chunks)  # no usage-only chunk reached the app
    assert all(chunk.usage is None for chunk in chunks)
    assert json.loads(record[0].body)["stream_options"] == {"include_usage": True}
    row = one_row(db)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert row["response_text"] == text
    assert row["tokens_estimated"] == 0
    assert row["output_tokens"] == sum(
        1 for c in chunks if c.choices[0].delta.content
    )  # the fake: 1 token/delta


def test_async_openai_sdk_stream(db: Path) -> None:
    async def main() -> list[Any]:
        transport = httptrack.AsyncTrackingTransport(mock_transport(httpx2), db=db, cache=False)
        client = openai.AsyncOpenAI(api_key="sk-test", http_client=httpx2.AsyncClient(transport=transport))
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
        chunks = [chunk async for chunk in stream]
        await client.close()
        return chunks

    chunks = asyncio.run(main())
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)
    assert one_row(db)["tokens_estimated"] == 0


def test_the_app_asking_itself_sees_its_usage_chunk(db: Path) -> None:
    transport = httptrack.TrackingTransport(mock_transport(httpx2), db=db, cache=False)
    client = openai.OpenAI(api_key="sk-test", http_client=httpx2.Client(transport=transport))
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=QUESTION, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    row = one_row(db)
    assert row["output_tokens"] == chunks[-1].usage.completion_tokens
    assert row["parse_notes"] is None


@LIBS
def test_a_content_length_counting_the_hidden_chunk_is_not_shown_to_the_app(
    lib: Any, db: Path, tmp_path: Path
) -> None:
    """A server that sends Content-Length with the stream: it counts the usage chunk the app
    will not get, so the app (which may pass the headers on, as a proxy does) never sees it —
    live, and when the stream is replayed from the cache."""
    seen: list[Any] = []
    inner = openai_like(lib, seen)

    def with_length(request: Any) -> Any:
        reply = inner(request)
        body = b"".join(reply.stream)
        return lib.Response(
            200,
            headers={"content-type": "Text/Event-Stream", "content-length": str(len(body))},
            stream=chunk_stream(lib, [body]),
        )

    body = {"model": "gpt-4o-mini", "stream": True, "messages": QUESTION}
    transport = httptrack.TrackingTransport(
        lib.MockTransport(with_length), db=db, cache=True, cache_dir=tmp_path / "cache"
    )
    with lib.Client(transport=transport) as client:
        for expected in ("MISS", "HIT"):
            with client.stream("POST", CHAT, json=body) as reply:
                received = b"".join(reply.iter_raw())
            assert reply.headers["x-httptrack-cache"] == expected
            assert "content-length" not in reply.headers
            assert b'"usage":{' not in received and received.endswith(b"data: [DONE]\n\n")
            httptrack.flush()
    assert len(seen) == 1
