"""The fake provider (httptrack._fake) against the real SDKs, over a socket and in-process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import groq
import httpx
import httpx2
import ollama
import openai
import pytest

from httptrack._fake import (
    CREATED,
    REASONING_TOKENS,
    FakeProviderServer,
    RecordedRequest,
    count_tokens,
    fake_embedding,
    fake_exchange,
    fake_reply,
    mock_transport,
    tokenize,
)

REPO = Path(__file__).resolve().parents[1]
PROMPT = "Hi there, how are you?"
REPLY = "Hello! You said: Hi there, how are you?"
PROMPT_TOKENS = 14  # 3 + (4 + 7) for one chat message
REPLY_TOKENS = 12
MESSAGES: list[Any] = [{"role": "user", "content": PROMPT}]
SYSTEM = "You are a very helpful assistant."  # 7 tokens


@pytest.fixture(scope="module")
def server() -> Iterator[FakeProviderServer]:
    with FakeProviderServer() as srv:
        yield srv


@pytest.fixture(params=["server", "mock"])
def where(
    request: pytest.FixtureRequest, server: FakeProviderServer
) -> Iterator[tuple[str, list[RecordedRequest]]]:
    """(base URL, list of requests the provider received), for the server and the mock."""
    if request.param == "server":
        server.clear_requests()
        yield server.url, []  # the server keeps its own list: server.requests
    else:
        yield "http://fake.test", []


def _http2(base: str, record: list[RecordedRequest]) -> httpx2.Client:
    if base == "http://fake.test":
        return httpx2.Client(transport=mock_transport(httpx2, record=record))
    return httpx2.Client()


def _ahttp2(base: str, record: list[RecordedRequest]) -> httpx2.AsyncClient:
    if base == "http://fake.test":
        return httpx2.AsyncClient(transport=mock_transport(httpx2, record=record))
    return httpx2.AsyncClient()


def _received(base: str, record: list[RecordedRequest], server: FakeProviderServer) -> list[RecordedRequest]:
    return record if base == "http://fake.test" else server.requests


@pytest.fixture
def oai(where: tuple[str, list[RecordedRequest]]) -> Iterator[openai.OpenAI]:
    base, record = where
    with openai.OpenAI(
        base_url=base + "/v1", api_key="sk-test", http_client=_http2(base, record), max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def aoai(where: tuple[str, list[RecordedRequest]]) -> AsyncIterator[openai.AsyncOpenAI]:
    base, record = where
    client = openai.AsyncOpenAI(
        base_url=base + "/v1", api_key="sk-test", http_client=_ahttp2(base, record), max_retries=0
    )
    async with client:
        yield client


@pytest.fixture
def claude(where: tuple[str, list[RecordedRequest]]) -> Iterator[anthropic.Anthropic]:
    base, record = where
    with anthropic.Anthropic(
        base_url=base, api_key="sk-ant-test", http_client=_http2(base, record), max_retries=0
    ) as client:
        yield client


@pytest.fixture
def olla(where: tuple[str, list[RecordedRequest]]) -> Iterator[ollama.Client]:
    base, record = where
    kwargs: dict[str, Any] = {}
    if base == "http://fake.test":
        kwargs["transport"] = mock_transport(httpx, record=record)
    with ollama.Client(host=base, **kwargs) as client:
        yield client


# --------------------------------------------------------------------------- pure generator


def test_tokens_and_reply_are_deterministic() -> None:
    assert fake_reply(PROMPT) == REPLY
    assert "".join(tokenize(REPLY)) == REPLY
    assert count_tokens(REPLY) == REPLY_TOKENS
    assert fake_reply("") == "Hello! You said nothing."
    long = " ".join(f"w{i}" for i in range(20))
    assert fake_reply(long) == "Hello! You said: " + " ".join(f"w{i}" for i in range(12)) + " ..."
    assert fake_embedding("x") == fake_embedding("x") != fake_embedding("y")
    assert len(fake_embedding("x", 40)) == 40


def test_exchange_exact_bytes() -> None:
    body = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}).encode()
    first = fake_exchange("POST", "/v1/chat/completions", "", {}, body)
    assert first == fake_exchange("POST", "/v1/chat/completions", "", {}, body)
    assert first.status == 200
    assert first.header("content-type") == "text/event-stream; charset=utf-8"
    assert first.header("x-request-id") == "req_fake0001"
    assert first.streaming and not first.abort and first.delay == 0
    assert first.chunks[1] == (
        b'data: {"id":"chatcmpl-fake0001","object":"chat.completion.chunk","created":1735689600,'
        b'"model":"gpt-4o-mini","service_tier":"default","system_fingerprint":"fp_fake0001",'
        b'"choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}\n\n'
    )
    assert first.chunks[-1] == b"data: [DONE]\n\n"
    assert len(first.chunks) == 1 + REPLY_TOKENS + 1 + 1  # role, deltas, finish, [DONE]

    plain = fake_exchange(
        "POST", "/v1/chat/completions", "", {"X-Fake-Delay": "0.5"}, body.replace(b"true", b"false")
    )
    assert len(plain.chunks) == 1 and plain.header("content-length") == str(len(plain.body))
    assert plain.delay == 0.5
    obj = json.loads(plain.body)
    assert obj["created"] == CREATED and obj["choices"][0]["message"]["content"] == REPLY

    anth = fake_exchange(
        "POST",
        "/v1/messages",
        "",
        {"anthropic-version": "2023-06-01"},
        json.dumps({"model": "claude-x", "max_tokens": 50, "messages": MESSAGES, "stream": True}).encode(),
    )
    assert anth.header("request-id") == "req_fake0001"
    assert anth.chunks[2] == b'event: ping\ndata: {"type": "ping"}\n\n'
    assert anth.chunks[-1] == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    assert [c.split(b"\n", 1)[0] for c in anth.chunks[:2]] == [
        b"event: message_start",
        b"event: content_block_start",
    ]

    nd = fake_exchange(
        "POST", "/api/chat", "", {}, json.dumps({"model": "llama3.2", "messages": MESSAGES}).encode()
    )
    assert nd.header("content-type") == "application/x-ndjson" and nd.streaming
    assert json.loads(nd.chunks[0]) == {
        "model": "llama3.2",
        "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": "Hello"},
        "done": False,
    }
    last = json.loads(nd.chunks[-1])
    assert last["done"] is True and last["done_reason"] == "stop"
    assert (last["prompt_eval_count"], last["eval_count"]) == (PROMPT_TOKENS, REPLY_TOKENS)


def test_exchange_unknown_path_and_bad_body() -> None:
    resp = fake_exchange("GET", "/v2/nothing", "", {}, b"")
    assert resp.status == 404
    assert json.loads(resp.body)["error"]["message"] == "Invalid URL (GET /v2/nothing)"
    bad = fake_exchange("POST", "/v1/chat/completions", "", {}, b"{not json")
    assert bad.status == 400 and json.loads(bad.body)["error"]["type"] == "invalid_request_error"
    anth = fake_exchange("POST", "/v1/messages", "", {}, json.dumps({"model": "c", "messages": []}).encode())
    assert anth.status == 400 and json.loads(anth.body)["error"]["message"] == "max_tokens: Field required"


# --------------------------------------------------------------------------- OpenAI


def test_openai_chat(oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert resp.id == "chatcmpl-fake0001" and resp._request_id == "req_fake0001"
    assert resp.choices[0].message.content == REPLY and resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (14, 12, 26)
    assert resp.usage.prompt_tokens_details and resp.usage.prompt_tokens_details.cached_tokens == 0
    assert resp.usage.completion_tokens_details
    assert resp.usage.completion_tokens_details.reasoning_tokens == 0


def test_openai_chat_reasoning_cache_and_length(oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(
        model="o3-mini", messages=MESSAGES, max_completion_tokens=5, prompt_cache_key="k"
    )
    assert resp.choices[0].message.content == "Hello! You said:"
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage and resp.usage.completion_tokens == 5 + REASONING_TOKENS
    assert resp.usage.completion_tokens_details
    assert resp.usage.completion_tokens_details.reasoning_tokens == REASONING_TOKENS
    assert resp.usage.prompt_tokens_details and resp.usage.prompt_tokens_details.cached_tokens == 7


def test_openai_chat_stream_without_usage(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert all(c.usage is None and len(c.choices) == 1 for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len(chunks) == REPLY_TOKENS + 2


def test_openai_chat_stream_include_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (PROMPT_TOKENS, REPLY_TOKENS)
    assert all(c.usage is None for c in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == REPLY


async def test_openai_async(aoai: openai.AsyncOpenAI) -> None:
    resp = await aoai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert resp.choices[0].message.content == REPLY
    stream = await aoai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    assert text == REPLY and usage is not None and usage.total_tokens == 26


def test_openai_embeddings_default_is_base64(
    oai: openai.OpenAI, where: tuple[str, list[RecordedRequest]], server: FakeProviderServer
) -> None:
    resp = oai.embeddings.create(model="text-embedding-3-small", input=["a b", PROMPT])
    sent = _received(*where, server)[-1].json()
    assert sent["encoding_format"] == "base64"  # the SDK asks for base64 and decodes it itself
    assert [d.embedding for d in resp.data] == [fake_embedding("a b"), fake_embedding(PROMPT)]
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == 2 + 7


def test_openai_embeddings_float(oai: openai.OpenAI) -> None:
    raw = oai.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="hello", encoding_format="float", dimensions=4
    )
    assert json.loads(raw.content)["data"][0]["embedding"] == fake_embedding("hello", 4)
    resp = raw.parse()
    assert resp.data[0].embedding == fake_embedding("hello", 4) and resp.usage.total_tokens == 1


def test_openai_models(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert "gpt-4o-mini" in ids and "text-embedding-3-small" in ids
    assert oai.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("missing-model")


def test_openai_responses(oai: openai.OpenAI) -> None:
    resp = oai.responses.create(model="gpt-4.1-nano", input=PROMPT, instructions="Be brief.")
    assert resp.id == "resp_fake0001" and resp.status == "completed"
    assert resp.output_text == REPLY
    assert resp.usage is not None
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (PROMPT_TOKENS + 4 + 3, REPLY_TOKENS)
    assert resp.usage.input_tokens_details.cached_tokens == 0

    with oai.responses.stream(model="gpt-4.1-nano", input=MESSAGES) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types.count("response.output_text.delta") == REPLY_TOKENS
    assert types[-1] == "response.completed"
    assert final.output_text == REPLY
    assert final.usage and (final.usage.input_tokens, final.usage.total_tokens) == (14, 26)


def test_openai_legacy_completions(oai: openai.OpenAI) -> None:
    resp = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    assert resp.choices[0].text == "Hello! You said: Say hi" and resp.choices[0].finish_reason == "stop"
    assert resp.usage and (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (2, 7)
    long = " ".join(["word"] * 20)
    parts = list(
        oai.completions.create(
            model="gpt-3.5-turbo-instruct", prompt=long, stream=True, stream_options={"include_usage": True}
        )
    )
    assert parts[-2].choices[0].finish_reason == "length"  # default max_tokens is 16
    assert parts[-1].usage and parts[-1].usage.completion_tokens == 16


@pytest.mark.parametrize(
    ("model", "error", "status", "code"),
    [
        ("missing-model", openai.NotFoundError, 404, "model_not_found"),
        ("rate-limited", openai.RateLimitError, 429, "rate_limit_exceeded"),
        ("server-error", openai.InternalServerError, 500, None),
        ("overloaded", openai.InternalServerError, 503, None),
    ],
)
def test_openai_errors(
    oai: openai.OpenAI, model: str, error: type[openai.APIStatusError], status: int, code: str | None
) -> None:
    with pytest.raises(error) as info:
        oai.chat.completions.create(model=model, messages=MESSAGES, stream=True)
    assert info.value.status_code == status and info.value.code == code
    assert info.value.request_id == "req_fake0001"


def test_openai_invalid_key_and_behavior_header(where: tuple[str, list[RecordedRequest]]) -> None:
    base, record = where
    with openai.OpenAI(base_url=base + "/v1", api_key="invalid-key", http_client=_http2(base, record)) as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            bad.models.list()
        assert info.value.code == "invalid_api_key"
    with (
        openai.OpenAI(
            base_url=base + "/v1", api_key="k", http_client=_http2(base, record), max_retries=0
        ) as ok,
        pytest.raises(openai.NotFoundError, match="`gpt-4o`"),
    ):
        ok.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"x-fake-behavior": "missing-model"}
        )


def test_openai_retries_are_fast(server: FakeProviderServer) -> None:
    server.clear_requests()
    started = time.monotonic()
    with (
        openai.OpenAI(base_url=server.url + "/v1", api_key="k", http_client=httpx2.Client()) as client,
        pytest.raises(openai.RateLimitError),
    ):
        client.chat.completions.create(model="rate-limited", messages=MESSAGES)
    assert len(server.requests) == 3  # the SDK's default two retries, honouring retry-after-ms
    assert time.monotonic() - started < 1


def test_openai_cut_stream(oai: openai.OpenAI) -> None:
    received = []
    with pytest.raises(openai.APIConnectionError) as info:
        for chunk in oai.chat.completions.create(model="cut-stream", messages=MESSAGES, stream=True):
            received.append(chunk.choices[0].delta.content)
    assert received == ["", "Hello", "!", " You", " said", ":", " Hi"]
    assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="cut-stream", messages=MESSAGES)


def test_openai_sdk_with_legacy_httpx_client() -> None:
    with openai.OpenAI(
        base_url="http://fake.test/v1",
        api_key="k",
        http_client=httpx.Client(transport=mock_transport(httpx)),  # type: ignore[arg-type]  # accepted at runtime
    ) as client:
        assert (
            client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content == REPLY
        )


def test_groq(server: FakeProviderServer) -> None:
    with groq.Groq(base_url=server.url, api_key="gsk-test", max_retries=0) as client:
        resp = client.chat.completions.create(model="llama-3.1-8b-instant", messages=MESSAGES)
    assert resp.choices[0].message.content == REPLY
    assert server.requests[-1].path == "/openai/v1/chat/completions"


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_messages(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES)
    assert msg.id == "msg_fake0001" and msg._request_id == "req_fake0001"
    assert msg.content[0].type == "text" and msg.content[0].text == REPLY
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (PROMPT_TOKENS, REPLY_TOKENS)
    assert msg.usage.cache_read_input_tokens == msg.usage.cache_creation_input_tokens == 0
    assert claude.messages.count_tokens(model="claude-haiku-4-5", messages=MESSAGES).input_tokens == 14


def test_anthropic_stream(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == REPLY and final.content[0].type == "text" and final.content[0].text == REPLY
    assert (final.usage.input_tokens, final.usage.output_tokens) == (PROMPT_TOKENS, REPLY_TOKENS)

    raw = claude.messages.create(model="claude-haiku-4-5", max_tokens=3, messages=MESSAGES, stream=True)
    events = [event.type for event in raw]
    assert events == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_anthropic_cache_accounting(claude: anthropic.Anthropic) -> None:
    system: Any = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
    read = claude.messages.create(model="claude-sonnet-4-6", max_tokens=100, system=system, messages=MESSAGES)
    # 3 + 7 system tokens are cached; the message (4 + 7) is not.
    assert (read.usage.cache_read_input_tokens, read.usage.input_tokens) == (10, 11)
    assert read.usage.cache_creation_input_tokens == 0
    with claude.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=100,
        system=[{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        messages=MESSAGES,
        extra_headers={"x-fake-cache": "write"},
    ) as stream:
        usage = stream.get_final_message().usage
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens, usage.input_tokens) == (
        10,
        0,
        11,
    )
    assert usage.cache_creation and usage.cache_creation.ephemeral_1h_input_tokens == 10


@pytest.mark.parametrize(
    ("model", "error", "status", "kind"),
    [
        ("missing-model", anthropic.NotFoundError, 404, "not_found_error"),
        ("rate-limited", anthropic.RateLimitError, 429, "rate_limit_error"),
        ("server-error", anthropic.InternalServerError, 500, "api_error"),
        ("overloaded", anthropic.OverloadedError, 529, "overloaded_error"),
    ],
)
def test_anthropic_errors(
    claude: anthropic.Anthropic, model: str, error: type[anthropic.APIStatusError], status: int, kind: str
) -> None:
    with pytest.raises(error) as info:
        claude.messages.create(model=model, max_tokens=10, messages=MESSAGES)
    assert info.value.status_code == status
    assert isinstance(info.value.body, dict) and info.value.body["error"]["type"] == kind


def test_anthropic_cut_stream(claude: anthropic.Anthropic) -> None:
    text: list[str] = []
    with (
        pytest.raises(httpx2.RemoteProtocolError),  # the SDK lets the transport error through
        claude.messages.stream(model="cut-stream", max_tokens=100, messages=MESSAGES) as stream,
    ):
        text.extend(stream.text_stream)
    assert "".join(text) == "Hello! You said: Hi"


def test_anthropic_models(claude: anthropic.Anthropic) -> None:
    assert [m.id for m in claude.models.list()] == [
        "claude-sonnet-4-6",
        "claude-opus-4-6",
        "claude-haiku-4-5-20251001",
    ]
    assert claude.models.retrieve("claude-haiku-4-5-20251001").display_name == "Claude Haiku 4.5"


async def test_anthropic_async(where: tuple[str, list[RecordedRequest]]) -> None:
    base, record = where
    async with anthropic.AsyncAnthropic(
        base_url=base, api_key="k", http_client=_ahttp2(base, record)
    ) as client:
        msg = await client.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES)
        assert msg.content[0].type == "text" and msg.content[0].text == REPLY
        async with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
    assert text == REPLY and final.usage.output_tokens == REPLY_TOKENS


# --------------------------------------------------------------------------- Ollama


def test_ollama_chat(olla: ollama.Client) -> None:
    parts = list(olla.chat(model="llama3.2", messages=MESSAGES, stream=True))
    assert "".join(p.message.content or "" for p in parts) == REPLY
    assert [p.done for p in parts] == [False] * REPLY_TOKENS + [True]
    last = parts[-1]
    assert (last.done_reason, last.prompt_eval_count, last.eval_count) == ("stop", 14, 12)
    plain = olla.chat(model="llama3.2", messages=MESSAGES, options={"num_predict": 2})
    assert plain.message.content == "Hello!" and plain.done_reason == "length" and plain.eval_count == 2


def test_ollama_generate_embed_list(olla: ollama.Client) -> None:
    gen = olla.generate(model="llama3.2", prompt=PROMPT)
    assert gen.response == REPLY and (gen.prompt_eval_count, gen.eval_count) == (PROMPT_TOKENS, REPLY_TOKENS)
    assert gen.context is not None and len(gen.context) == 26
    streamed = list(olla.generate(model="llama3.2", prompt=PROMPT, stream=True))
    assert "".join(p.response or "" for p in streamed) == REPLY
    emb = olla.embed(model="nomic-embed-text", input=["a b", "c"])
    assert emb.embeddings == [fake_embedding("a b"), fake_embedding("c")] and emb.prompt_eval_count == 3
    assert [m.model for m in olla.list().models] == ["llama3.2:latest", "nomic-embed-text:latest"]


def test_ollama_errors(olla: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        olla.chat(model="missing-model", messages=MESSAGES)
    assert info.value.status_code == 404
    assert info.value.error == 'model "missing-model" not found, try pulling it first'
    with pytest.raises(ollama.ResponseError) as info:
        list(olla.generate(model="missing-model", prompt="x", stream=True))
    assert info.value.status_code == 404
    with pytest.raises(httpx.RemoteProtocolError):
        list(olla.chat(model="cut-stream", messages=MESSAGES, stream=True))


async def test_ollama_async(where: tuple[str, list[RecordedRequest]]) -> None:
    base, record = where
    kwargs: dict[str, Any] = (
        {"transport": mock_transport(httpx, record=record)} if base == "http://fake.test" else {}
    )
    async with ollama.AsyncClient(host=base, **kwargs) as client:
        parts = [p async for p in await client.chat(model="llama3.2", messages=MESSAGES, stream=True)]
        assert "".join(p.message.content or "" for p in parts) == REPLY
        assert (await client.embed(model="nomic-embed-text", input="c")).embeddings == [fake_embedding("c")]


# --------------------------------------------------------------------------- the server itself


def test_server_records_requests_and_keeps_alive(server: FakeProviderServer) -> None:
    server.clear_requests()
    with httpx2.Client(base_url=server.url, headers={"x-custom": "1"}) as client:
        first = client.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES})
        second = client.post("/api/chat", json={"model": "m", "messages": MESSAGES, "stream": True})
        unknown = client.get("/nope", params={"a": "1"})
    assert first.headers["content-length"] == str(len(first.content))
    assert second.headers["transfer-encoding"] == "chunked" and "content-length" not in second.headers
    assert unknown.status_code == 404 and unknown.json()["error"]["message"] == "Invalid URL (GET /nope)"
    reqs = server.requests
    assert [(r.method, r.path, r.query) for r in reqs] == [
        ("POST", "/v1/chat/completions", ""),
        ("POST", "/api/chat", ""),
        ("GET", "/nope", "a=1"),
    ]
    assert all(r.headers["x-custom"] == "1" for r in reqs)
    assert reqs[0].json()["messages"] == MESSAGES
    assert len({r.client for r in reqs}) == 1  # one keep-alive connection


def test_server_chunked_wire_format(server: FakeProviderServer) -> None:
    body = json.dumps({"model": "m", "prompt": "Hi", "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\ntransfer-encoding: chunked" in head.lower()
    line = json.dumps(
        {"model": "m", "created_at": "2025-01-01T00:00:00Z", "response": "Hello", "done": False}
    )
    first = line.replace(", ", ",").replace(": ", ":").encode() + b"\n"
    assert rest.startswith(b"%x\r\n%s\r\n" % (len(first), first))
    assert rest.endswith(b"\r\n0\r\n\r\n")


def test_server_spaces_chunks_in_time() -> None:
    with FakeProviderServer(chunk_delay=0.03) as slow, httpx2.Client() as client:
        arrivals = []
        body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
        started = time.monotonic()
        with client.stream("POST", slow.url + "/v1/chat/completions", json=body) as resp:
            for _ in resp.iter_raw():
                arrivals.append(time.monotonic())
    assert len(arrivals) == 1 + 6 + 1 + 1  # each chunk arrives on its own
    # The server sleeps between chunks, so the last cannot arrive before the sleeps add up
    # (a lower bound: a busy machine only makes it later, never earlier).
    assert arrivals[-1] - started >= 8 * 0.03


async def test_mock_delay_header_async() -> None:
    async with httpx2.AsyncClient(transport=mock_transport(httpx2)) as client:
        started = time.monotonic()
        resp = await client.post(
            "http://fake.test/api/generate",
            json={"model": "m", "prompt": "Hi"},
            headers={"x-fake-delay": "0.01"},
        )
        assert time.monotonic() - started >= 0.06  # 7 chunks, 6 gaps
    assert [json.loads(line)["done"] for line in resp.text.splitlines()][-1] is True


def test_module_runs_as_a_script() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "httptrack._fake", "--port", "0"],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with httpx2.Client() as client:
            assert client.get(url + "/api/tags").json()["models"][0]["name"] == "llama3.2:latest"
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
        if proc.stdout is not None:
            proc.stdout.close()
