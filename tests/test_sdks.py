"""The real SDKs, used as their users use them, through a tracking transport, against the
built-in fake provider (in-process, or on a real socket): what test_sdk_matrix.py (every
SDK × sync/async × plain/stream, checked figure for figure) does not cover — control
headers, a usage chunk the app asks for itself, embeddings and model lists, Ollama's
generate and embed, errors, streams broken or abandoned, a stream without usage (estimated),
and a real socket with the default inner transport. Rows are checked against what the SDK
itself reported to the app, costs against genai-prices computed independently here.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import groq
import httpx
import httpx2
import ollama
import openai
import pytest
from helpers import genai_price as price
from helpers import one_row, read_rows

import httptrack
from httptrack._fake import FakeProviderServer, mock_transport


@pytest.fixture
def db(log_db: Path | str) -> Path | str:
    """Every test here runs on both engines: a SQLite file, and a Postgres log (a real
    throwaway server, tests/pg_server.py)."""
    return log_db


QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def tracked(lib: Any, db: Path, *, asynchronous: bool = False) -> Any:
    """An httpx/httpx2 client whose tracking transport talks to the in-process fake."""
    if asynchronous:
        return lib.AsyncClient(
            transport=httptrack.AsyncTrackingTransport(mock_transport(lib), db=db, cache=False)
        )
    return lib.Client(transport=httptrack.TrackingTransport(mock_transport(lib), db=db, cache=False))


# -- OpenAI (httpx2) ----------------------------------------------------------------------


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


# -- Ollama (httpx) -----------------------------------------------------------------------


def test_ollama_generate_and_embed_sync(db: Path) -> None:
    client = ollama.Client(
        host="http://localhost:11434",
        transport=httptrack.TrackingTransport(mock_transport(httpx), db=db, cache=False),
    )
    with httptrack.attribute(user="frank"):
        gen = client.generate(model="llama3.2", prompt="Why is the sky blue?")
        emb = client.embed(model="nomic-embed-text", input=["Paris", "France"])
    rows = read_rows(db)
    assert [(r["operation"], r["stream"]) for r in rows] == [("completion", 0), ("embeddings", 0)]
    assert (rows[0]["input_tokens"], rows[0]["output_tokens"]) == (gen.prompt_eval_count, gen.eval_count)
    assert rows[1]["input_tokens"] == emb.prompt_eval_count
    assert {r["provider"] for r in rows} == {"ollama"}
    assert {r["user"] for r in rows} == {"frank"}
    assert {r["cost_usd"] for r in rows} == {0.0}  # local models are free


# -- Groq (httpx) -------------------------------------------------------------------------


def test_groq_async_stream_without_usage_is_estimated(db: Path) -> None:
    async def main() -> list[Any]:
        aclient = groq.AsyncGroq(api_key="gsk-test", http_client=tracked(httpx, db, asynchronous=True))
        stream = await aclient.chat.completions.create(
            model="llama-3.3-70b-versatile", messages=QUESTION, stream=True
        )
        return [chunk async for chunk in stream]

    chunks = asyncio.run(main())
    row = one_row(db)
    assert (row["provider"], row["stream"]) == ("groq", 1)
    # This stream carries no usage: counted locally from the text the app received, flagged.
    assert row["tokens_estimated"] == 1
    assert row["response_text"] == "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert row["output_tokens"] > 0


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
