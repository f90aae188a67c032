"""The real SDKs of the other providers, used as their users use them, through a tracking
transport: mistralai (httpx2), google-genai (httpx), openai's AzureOpenAI (httpx2), and
anthropic's token counting and message batches (httpx2). (Groq's chat, plain and streamed
with ``x_groq.usage``, is in test_sdk_matrix.py.)

Each server is a small MockTransport handler answering in the provider's wire format (as
its API reference and the SDK's response models define it). Rows are checked against what
the SDK itself reported to the app, and costs against genai-prices computed here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from google import genai
from google.genai import types as genai_types
from helpers import chunk_stream, one_row, read_rows
from helpers import genai_price as price
from mistralai.client import Mistral

import httptrack
from httptrack._fake import mock_transport

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def sse(*events: Any, done: bool = True) -> list[bytes]:
    chunks = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
    return [*chunks, b"data: [DONE]\n\n"] if done else chunks


def reply(lib: Any, chunks: list[bytes], status: int = 200, content_type: str = "application/json") -> Any:
    return lib.Response(status, headers={"content-type": content_type}, stream=chunk_stream(lib, chunks))


# -- Mistral (mistralai on httpx2) -------------------------------------------------------

MISTRAL_MODEL = "mistral-small-2506"


def mistral_handler(request: httpx2.Request) -> httpx2.Response:
    data = json.loads(request.content)
    base = {"id": "cmpl-m1", "object": "chat.completion.chunk", "created": 1735689600, "model": MISTRAL_MODEL}
    usage = {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18}
    if request.url.path == "/v1/embeddings":
        return reply(
            httpx2,
            [
                json.dumps(
                    {
                        "id": "e1",
                        "object": "list",
                        "model": "mistral-embed",
                        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                        "usage": {"prompt_tokens": 6, "total_tokens": 6},
                    }
                ).encode()
            ],
        )
    if data.get("stream"):
        events = [
            {
                **base,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                ],
            },
            {**base, "choices": [{"index": 0, "delta": {"content": "Paris."}, "finish_reason": None}]},
            {
                **base,
                "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}],
                "usage": usage,
            },
        ]
        return reply(httpx2, sse(*events), content_type="text/event-stream")
    body = {
        **base,
        "object": "chat.completion",
        "usage": usage,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}
        ],
    }
    return reply(httpx2, [json.dumps(body).encode()])


def mistral_client(db: Path) -> Mistral:
    transport = httptrack.TrackingTransport(httpx2.MockTransport(mistral_handler), db=db, cache=False)
    return Mistral(api_key="test-key", client=httpx2.Client(transport=transport))


def test_mistral_sdk_chat_stream_and_embeddings(db: Path) -> None:
    client = mistral_client(db)
    plain = client.chat.complete(model="mistral-small-latest", messages=QUESTION)
    events = list(client.chat.stream(model="mistral-small-latest", messages=QUESTION))
    embedding = client.embeddings.create(model="mistral-embed", inputs=["Paris"])
    rows = read_rows(db)
    assert [(r["provider"], r["operation"], r["stream"]) for r in rows] == [
        ("mistral", "chat", 0),
        ("mistral", "chat", 1),
        ("mistral", "embeddings", 0),
    ]
    assert (rows[0]["input_tokens"], rows[0]["output_tokens"]) == (
        plain.usage.prompt_tokens,
        plain.usage.completion_tokens,
    )
    final = events[-1].data.usage
    assert (rows[1]["input_tokens"], rows[1]["output_tokens"], rows[1]["tokens_estimated"]) == (
        final.prompt_tokens,
        final.completion_tokens,
        0,
    )
    assert "stream_options" not in rows[1]["request_body"]  # Mistral rejects unknown fields: nothing added
    assert rows[2]["input_tokens"] == embedding.usage.prompt_tokens
    assert rows[0]["cost_usd"] == price("mistral", MISTRAL_MODEL, input_tokens=10, output_tokens=8)


# -- Gemini (google-genai on httpx) ------------------------------------------------------

GEMINI_USAGE = {
    "promptTokenCount": 9,
    "candidatesTokenCount": 5,
    "thoughtsTokenCount": 20,
    "totalTokenCount": 34,
}


def gemini_handler(request: httpx.Request) -> httpx.Response:
    chunk = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Paris."}]}, "finishReason": "STOP"}],
        "usageMetadata": GEMINI_USAGE,
        "modelVersion": "gemini-2.5-flash",
        "responseId": "r1",
    }
    if ":streamGenerateContent" in request.url.path:
        early = {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "Par"}]}}],
            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
            "modelVersion": "gemini-2.5-flash",
        }
        body = [f"data: {json.dumps(c)}\r\n\r\n".encode() for c in (early, chunk)]
        return reply(httpx, body, content_type="text/event-stream")
    return reply(httpx, [json.dumps(chunk).encode()])


def test_google_genai_sdk_generate_and_stream(db: Path) -> None:
    transport = httptrack.TrackingTransport(httpx.MockTransport(gemini_handler), db=db, cache=False)
    client = genai.Client(
        api_key="test-key",
        http_options=genai_types.HttpOptions(httpx_client=httpx.Client(transport=transport)),
    )
    plain = client.models.generate_content(
        model="gemini-2.5-flash", contents="What is the capital of France?"
    )
    chunks = list(
        client.models.generate_content_stream(model="gemini-2.5-flash", contents="Capital of France?")
    )
    rows = read_rows(db)
    assert [(r["provider"], r["model"], r["stream"]) for r in rows] == [
        ("gemini", "gemini-2.5-flash", 0),
        ("gemini", "gemini-2.5-flash", 1),
    ]
    meta = plain.usage_metadata
    for row in rows:
        assert row["input_tokens"] == meta.prompt_token_count
        assert row["output_tokens"] == meta.candidates_token_count + meta.thoughts_token_count
        assert row["reasoning_tokens"] == meta.thoughts_token_count
        assert row["total_tokens"] == meta.total_token_count
        assert row["tokens_estimated"] == 0
        assert "test-key" not in (row["url"] + row["request_headers"])  # the key never reaches the database
    assert chunks[-1].usage_metadata.total_token_count == rows[1]["total_tokens"]
    assert rows[0]["cost_usd"] == price("google", "gemini-2.5-flash", input_tokens=9, output_tokens=25)


# -- Azure OpenAI (openai.AzureOpenAI on httpx2) -----------------------------------------


def azure_handler(seen: list[httpx2.Request]) -> Any:
    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        data = json.loads(request.content)
        model = "gpt-4o-2024-11-20"
        usage = {
            "prompt_tokens": 14,
            "completion_tokens": 2,
            "total_tokens": 16,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        if not data.get("stream"):
            body = {
                "id": "chatcmpl-az",
                "object": "chat.completion",
                "created": 1735689600,
                "model": model,
                "usage": usage,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Paris."},
                        "finish_reason": "stop",
                    }
                ],
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
            }
            return reply(httpx2, [json.dumps(body).encode()])
        base = {"id": "chatcmpl-az", "object": "chat.completion.chunk", "created": 1735689600, "model": model}
        events: list[Any] = [
            {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": [{"prompt_index": 0}],
            },
            {
                **base,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": "Paris."}, "finish_reason": None}
                ],
            },
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        if (data.get("stream_options") or {}).get("include_usage"):
            # Asked for usage, Azure (as OpenAI) gives every chunk a "usage": null.
            events = [{**event, "usage": None} for event in events]
            events.append({**base, "choices": [], "usage": usage})
        return reply(httpx2, sse(*events), content_type="text/event-stream")

    return handler


@pytest.mark.parametrize(("api_version", "exact"), [("2024-10-21", True), ("2024-06-01", False)])
def test_azure_openai_sdk_deployment_and_stream_usage(api_version: str, exact: bool, db: Path) -> None:
    seen: list[httpx2.Request] = []
    transport = httptrack.TrackingTransport(httpx2.MockTransport(azure_handler(seen)), db=db, cache=False)
    client = openai.AzureOpenAI(
        api_key="azure-key",
        api_version=api_version,
        azure_endpoint="https://contoso.openai.azure.com",
        http_client=httpx2.Client(transport=transport),
    )
    plain = client.chat.completions.create(model="prod-gpt4o", messages=QUESTION)
    chunks = list(client.chat.completions.create(model="prod-gpt4o", messages=QUESTION, stream=True))
    assert all(c.usage is None for c in chunks)  # the app's stream is as Azure sends it without usage
    assert [c.choices == [] for c in chunks] == [True, False, False]  # Azure's own filter-results chunk stays
    rows = read_rows(db)
    for row in rows:
        assert (row["provider"], row["model"], row["response_model"]) == (
            "azure_openai",
            "prod-gpt4o",
            plain.model,
        )
        assert row["host"] == "contoso.openai.azure.com"
        assert "azure-key" not in row["request_headers"]
    assert rows[0]["cost_usd"] == price("openai", "gpt-4o-2024-11-20", input_tokens=14, output_tokens=2)
    assert ("stream_options" in json.loads(seen[1].content)) is exact
    assert rows[1]["tokens_estimated"] == (0 if exact else 1)
    if exact:
        assert (rows[1]["input_tokens"], rows[1]["output_tokens"]) == (14, 2)


# -- Anthropic token counting and message batches (anthropic on httpx2) ------------------


def batch_handler(request: httpx2.Request) -> httpx2.Response:
    path = request.url.path
    batch = {
        "id": "msgbatch_01",
        "type": "message_batch",
        "processing_status": "ended",
        "request_counts": {"processing": 0, "succeeded": 2, "errored": 0, "canceled": 0, "expired": 0},
        "ended_at": "2025-01-01T00:10:00Z",
        "created_at": "2025-01-01T00:00:00Z",
        "expires_at": "2025-01-02T00:00:00Z",
        "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": "https://api.anthropic.com/v1/messages/batches/msgbatch_01/results",
    }
    if path.endswith("/results"):
        lines = []
        for i, (inp, out) in enumerate(((120, 30), (80, 20))):
            message = {
                "id": f"msg_{i}",
                "type": "message",
                "role": "assistant",
                "model": "claude-haiku-4-5-20251001",
                "content": [{"type": "text", "text": "Paris."}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": inp, "output_tokens": out, "service_tier": "batch"},
            }
            lines.append(
                json.dumps(
                    {"custom_id": f"q{i}", "result": {"type": "succeeded", "message": message}}
                ).encode()
                + b"\n"
            )
        return reply(httpx2, lines, content_type="application/binary")
    if path.endswith("/count_tokens"):
        return reply(httpx2, [b'{"input_tokens": 14}'])
    return reply(httpx2, [json.dumps(batch).encode()])


def test_anthropic_sdk_count_tokens_and_batches(db: Path) -> None:
    transport = httptrack.TrackingTransport(httpx2.MockTransport(batch_handler), db=db, cache=False)
    client = anthropic.Anthropic(api_key="sk-ant-test", http_client=httpx2.Client(transport=transport))
    counted = client.messages.count_tokens(model="claude-haiku-4-5", messages=QUESTION)
    created = client.messages.batches.create(
        requests=[
            {
                "custom_id": "q0",
                "params": {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": QUESTION},
            },
            {
                "custom_id": "q1",
                "params": {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": QUESTION},
            },
        ]
    )
    results = list(client.messages.batches.results(created.id))
    rows = read_rows(db)
    assert counted.input_tokens == 14 and len(results) == 2
    count_row, create_row, *_retrieve, results_row = rows
    assert (count_row["endpoint"], count_row["cost_usd"], count_row["input_tokens"]) == (
        "/v1/messages/count_tokens",
        0.0,
        None,
    )  # counting is free and bills no tokens
    assert (create_row["endpoint"], create_row["cost_usd"]) == ("/v1/messages/batches", 0.0)
    assert results_row["endpoint"] == "/v1/messages/batches/msgbatch_01/results"
    total_in = sum(r.result.message.usage.input_tokens for r in results)
    total_out = sum(r.result.message.usage.output_tokens for r in results)
    assert (results_row["input_tokens"], results_row["output_tokens"]) == (total_in, total_out)
    assert results_row["stream"] == 0 and results_row["response_model"] == "claude-haiku-4-5-20251001"
    assert results_row["cost_usd"] == pytest.approx(
        price(
            "anthropic",
            "claude-haiku-4-5-20251001",
            input_tokens=total_in,
            output_tokens=total_out,
            batch=True,
        ),
        rel=1e-12,
    )


def test_anthropic_sdk_count_tokens_against_the_fake(db: Path) -> None:
    transport = httptrack.TrackingTransport(mock_transport(httpx2), db=db, cache=False)
    client = anthropic.Anthropic(api_key="sk-ant-test", http_client=httpx2.Client(transport=transport))
    client.messages.count_tokens(model="claude-sonnet-4-6", messages=QUESTION)
    row = one_row(db)
    assert (row["operation"], row["model"], row["cost_usd"], row["cost_note"]) == (
        "other",
        "claude-sonnet-4-6",
        0.0,
        "not a billed operation",
    )
