"""The real SDKs, used as their users use them, through a tracking transport.

openai and anthropic run on httpx2, ollama and groq on httpx; each sync and async, plain
and streaming, against the built-in fake provider (in-process, or on a real socket). Each
row is checked against what the SDK itself reported to the app, and its cost against
genai-prices computed independently here.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import anthropic
import groq
import httpx
import httpx2
import ollama
import openai
import pytest
from conftest import genai_price as price
from conftest import one_row, read_rows

import httptrack
from httptrack._fake import FakeProviderServer, mock_transport

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def tracked(lib: Any, db: Path, *, asynchronous: bool = False) -> Any:
    """An httpx/httpx2 client whose tracking transport talks to the in-process fake."""
    if asynchronous:
        return lib.AsyncClient(
            transport=httptrack.AsyncTrackingTransport(mock_transport(lib), db=db, cache=False)
        )
    return lib.Client(transport=httptrack.TrackingTransport(mock_transport(lib), db=db, cache=False))


# -- OpenAI (httpx2) ----------------------------------------------------------------------


def test_openai_chat_sync(db: Path) -> None:
    client = openai.OpenAI(api_key="sk-test-openai", http_client=tracked(httpx2, db))
    started = time.perf_counter()
    with httptrack.attribute(user="alice", service="qa"):
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    wall_ms = (time.perf_counter() - started) * 1000
    row = one_row(db)
    assert (row["provider"], row["operation"], row["model"]) == ("openai", "chat", "gpt-4o-mini")
    assert row["response_model"] == reply.model
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
        reply.usage.total_tokens,
    )
    assert row["cached_input_tokens"] == reply.usage.prompt_tokens_details.cached_tokens
    assert row["cost_usd"] == price(
        "openai",
        "gpt-4o-mini",
        input_tokens=reply.usage.prompt_tokens,
        output_tokens=reply.usage.completion_tokens,
    )
    assert (row["user"], row["service"], row["status"], row["stream"]) == ("alice", "qa", "success", 0)
    assert 0 < row["latency_ms"] <= wall_ms
    assert row["finish_reason"] == reply.choices[0].finish_reason == "stop"
    assert row["response_text"] == reply.choices[0].message.content
    assert row["response_id"] == reply.id
    assert row["request_id"] == reply._request_id


def test_openai_chat_stream_with_usage_sync(db: Path) -> None:
    client = openai.OpenAI(api_key="sk-test-openai", http_client=tracked(httpx2, db))
    text, usage = [], None
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=QUESTION,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Httptrack-User": "bob"},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    row = one_row(db)
    assert row["stream"] == 1 and row["outcome"] == "complete"
    assert (row["input_tokens"], row["output_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert row["tokens_estimated"] == 0
    assert row["response_text"] == "".join(text)
    assert row["user"] == "bob"
    assert row["cost_usd"] == price(
        "openai", "gpt-4o", input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens
    )
    assert 0 <= row["ttft_ms"] <= row["latency_ms"]


def test_openai_embeddings_and_models(db: Path) -> None:
    client = openai.OpenAI(api_key="sk-test-openai", http_client=tracked(httpx2, db))
    emb = client.embeddings.create(model="text-embedding-3-small", input=["Paris", "is in France"])
    models = client.models.list()
    rows = read_rows(db)
    assert [r["operation"] for r in rows] == ["embeddings", "models"]
    assert rows[0]["input_tokens"] == emb.usage.prompt_tokens
    assert rows[0]["output_tokens"] is None
    assert rows[0]["cost_usd"] == price(
        "openai", "text-embedding-3-small", input_tokens=emb.usage.prompt_tokens, output_tokens=0
    )
    assert len(models.data) > 0
    assert (rows[1]["method"], rows[1]["cost_usd"]) == ("GET", 0.0)


def test_openai_async_plain_and_stream(db: Path) -> None:
    async def main() -> tuple[Any, list[Any]]:
        client = openai.AsyncOpenAI(
            api_key="sk-test-openai", http_client=tracked(httpx2, db, asynchronous=True)
        )
        with httptrack.attribute(user="carol"):
            plain = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=QUESTION, stream=True, stream_options={"include_usage": True}
            )
            chunks = [chunk async for chunk in stream]
        await client.close()
        return plain, chunks

    plain, chunks = asyncio.run(main())
    rows = read_rows(db)
    assert [(r["stream"], r["user"]) for r in rows] == [(0, "carol"), (1, "carol")]
    assert rows[0]["input_tokens"] == plain.usage.prompt_tokens
    assert rows[1]["output_tokens"] == chunks[-1].usage.completion_tokens


def test_openai_error_reaches_the_app_as_the_sdk_error(db: Path) -> None:
    client = openai.OpenAI(api_key="sk-test-openai", http_client=tracked(httpx2, db), max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="missing-model", messages=QUESTION)
    row = one_row(db)
    assert (row["status"], row["http_status"], row["error_code"]) == ("error", 404, "model_not_found")
    assert row["error_message"] == info.value.body["message"]


def test_openai_stream_broken_midway(db: Path) -> None:
    client = openai.OpenAI(api_key="sk-test-openai", http_client=tracked(httpx2, db), max_retries=0)
    with pytest.raises(openai.APIConnectionError) as info:
        for _ in client.chat.completions.create(model="cut-stream", messages=QUESTION, stream=True):
            pass
    assert isinstance(
        info.value.__cause__, httpx2.RemoteProtocolError
    )  # as the SDK reports it without httptrack
    row = one_row(db)
    assert (row["status"], row["outcome"], row["error_code"]) == (
        "error",
        "failed",
        "httpx2.RemoteProtocolError",
    )


def test_openai_stream_abandoned_by_the_app(db: Path) -> None:
    client = openai.OpenAI(api_key="sk-test-openai", http_client=tracked(httpx2, db))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
    first = next(iter(stream))
    stream.close()
    row = one_row(db)
    assert row["outcome"] == "cut_short"
    assert row["response_id"] == first.id
    assert row["tokens_estimated"] == 1


# -- Anthropic (httpx2) -------------------------------------------------------------------


def test_anthropic_messages_sync_with_cache_read(db: Path) -> None:
    client = anthropic.Anthropic(api_key="sk-ant-test", http_client=tracked(httpx2, db))
    system = [
        {
            "type": "text",
            "text": "You answer geography questions. " * 100,
            "cache_control": {"type": "ephemeral"},
        }
    ]
    with httptrack.attribute(user="dave", service="tutor"):
        msg = client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=100,
            system=system,
            messages=QUESTION,
            extra_headers={"x-fake-cache": "read"},
        )
    row = one_row(db)
    u = msg.usage
    total_input = u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens
    assert u.cache_read_input_tokens > 0
    assert (row["provider"], row["model"], row["user"], row["service"]) == (
        "anthropic",
        "claude-sonnet-4-6",
        "dave",
        "tutor",
    )
    assert (row["input_tokens"], row["output_tokens"]) == (total_input, u.output_tokens)
    assert (row["cached_input_tokens"], row["cache_write_tokens"]) == (
        u.cache_read_input_tokens,
        u.cache_creation_input_tokens,
    )
    assert row["cost_usd"] == price(
        "anthropic",
        "claude-sonnet-4-6",
        input_tokens=total_input,
        output_tokens=u.output_tokens,
        cache_read=u.cache_read_input_tokens,
        cache_write=u.cache_creation_input_tokens,
    )
    assert row["finish_reason"] == msg.stop_reason
    assert row["request_id"] == msg._request_id


def test_anthropic_stream_sync_and_async(db: Path) -> None:
    client = anthropic.Anthropic(api_key="sk-ant-test", http_client=tracked(httpx2, db))
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=QUESTION) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    async def main() -> Any:
        aclient = anthropic.AsyncAnthropic(
            api_key="sk-ant-test", http_client=tracked(httpx2, db, asynchronous=True)
        )
        with httptrack.attribute(user="erin"):
            async with aclient.messages.stream(
                model="claude-haiku-4-5", max_tokens=100, messages=QUESTION
            ) as s:
                return await s.get_final_message()

    afinal = asyncio.run(main())
    rows = read_rows(db)
    assert [(r["stream"], r["user"]) for r in rows] == [(1, None), (1, "erin")]
    for row, message in zip(rows, (final, afinal), strict=True):
        assert (row["input_tokens"], row["output_tokens"]) == (
            message.usage.input_tokens,
            message.usage.output_tokens,
        )
        assert row["cost_usd"] == price(
            "anthropic",
            "claude-haiku-4-5",
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
        )
    assert rows[0]["response_text"] == text


# -- Ollama (httpx) -----------------------------------------------------------------------


def test_ollama_chat_generate_embed_sync(db: Path) -> None:
    client = ollama.Client(
        host="http://localhost:11434",
        transport=httptrack.TrackingTransport(mock_transport(httpx), db=db, cache=False),
    )
    with httptrack.attribute(user="frank"):
        chat = client.chat(model="llama3.2", messages=QUESTION, stream=False)
        parts = list(client.chat(model="llama3.2", messages=QUESTION, stream=True))
        gen = client.generate(model="llama3.2", prompt="Why is the sky blue?")
        emb = client.embed(model="nomic-embed-text", input=["Paris", "France"])
    rows = read_rows(db)
    assert [(r["operation"], r["stream"]) for r in rows] == [
        ("chat", 0),
        ("chat", 1),
        ("completion", 0),
        ("embeddings", 0),
    ]
    assert (rows[0]["input_tokens"], rows[0]["output_tokens"]) == (chat.prompt_eval_count, chat.eval_count)
    assert (rows[1]["input_tokens"], rows[1]["output_tokens"]) == (
        parts[-1].prompt_eval_count,
        parts[-1].eval_count,
    )
    assert rows[1]["response_text"] == "".join(p.message.content for p in parts)
    assert (rows[2]["input_tokens"], rows[2]["output_tokens"]) == (gen.prompt_eval_count, gen.eval_count)
    assert rows[3]["input_tokens"] == emb.prompt_eval_count
    assert {r["provider"] for r in rows} == {"ollama"}
    assert {r["user"] for r in rows} == {"frank"}
    assert {r["cost_usd"] for r in rows} == {0.0}  # local models are free


def test_ollama_async_stream(db: Path) -> None:
    async def main() -> list[Any]:
        client = ollama.AsyncClient(
            host="http://localhost:11434",
            transport=httptrack.AsyncTrackingTransport(mock_transport(httpx), db=db, cache=False),
        )
        return [part async for part in await client.chat(model="llama3.2", messages=QUESTION, stream=True)]

    parts = asyncio.run(main())
    row = one_row(db)
    assert (row["input_tokens"], row["output_tokens"]) == (parts[-1].prompt_eval_count, parts[-1].eval_count)
    assert row["finish_reason"] == parts[-1].done_reason


# -- Groq (httpx) -------------------------------------------------------------------------


def test_groq_sync_and_async(db: Path) -> None:
    client = groq.Groq(api_key="gsk-test", http_client=tracked(httpx, db))
    with httptrack.attribute(service="groq-svc"):
        reply = client.chat.completions.create(model="llama-3.3-70b-versatile", messages=QUESTION)

    async def main() -> list[Any]:
        aclient = groq.AsyncGroq(api_key="gsk-test", http_client=tracked(httpx, db, asynchronous=True))
        stream = await aclient.chat.completions.create(
            model="llama-3.3-70b-versatile", messages=QUESTION, stream=True
        )
        return [chunk async for chunk in stream]

    chunks = asyncio.run(main())
    rows = read_rows(db)
    assert [(r["provider"], r["stream"], r["service"]) for r in rows] == [
        ("groq", 0, "groq-svc"),
        ("groq", 1, None),
    ]
    assert rows[0]["input_tokens"] == reply.usage.prompt_tokens
    assert rows[0]["cost_usd"] == price(
        "groq",
        "llama-3.3-70b-versatile",
        input_tokens=reply.usage.prompt_tokens,
        output_tokens=reply.usage.completion_tokens,
    )
    # This stream carries no usage: counted locally from the text the app received, flagged.
    assert rows[1]["tokens_estimated"] == 1
    assert rows[1]["response_text"] == "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert rows[1]["output_tokens"] > 0


# -- over a real socket, with the library's default inner transport -------------------------


def test_real_http_server_with_default_inner_transport(db: Path) -> None:
    with FakeProviderServer(chunk_delay=0.01) as server:
        host = f"127.0.0.1:{server.port}"
        transport = httptrack.TrackingTransport(db=db, cache=False, hosts={host: "openai"})
        client = openai.OpenAI(
            api_key="sk-live-looking-secret",
            base_url=f"{server.url}/v1",
            http_client=httpx2.Client(transport=transport),
        )
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-Httptrack-Session": "sess-1"},
        )
        chunks = list(stream)
        client.close()
        received = server.requests
    assert not [h for h in received[0].headers if h.lower().startswith("x-httptrack")]
    row = one_row(db)
    assert (row["provider"], row["host"], row["session"]) == ("openai", host, "sess-1")
    assert row["output_tokens"] == chunks[-1].usage.completion_tokens
    # Ten content chunks 10 ms apart on the wire: the first arrives well before the last.
    assert row["ttft_ms"] < row["latency_ms"] - 30
