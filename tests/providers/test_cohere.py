"""Cohere through its own SDK (``cohere`` on httpx, the transport given as ``httpx_client=``):
v2 chat plain and streamed (SSE ending in ``message-end``), v1 chat streamed
(``application/stream+json`` lines ending in ``stream-end``), embed and rerank, answered by a
MockTransport in Cohere's wire format (as its API reference and recorded exchanges in
tests/fixtures/providers/cohere show it). The rows hold what the SDK reported to the app."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cohere
import httpx
import pytest
from helpers import read_rows

import httptrack

BILLED = {
    "billed_units": {"input_tokens": 9, "output_tokens": 5},
    "tokens": {"input_tokens": 75, "output_tokens": 5},
}


def handler(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    body = json.loads(request.content)
    if path == "/v2/chat" and body.get("stream"):
        events = [
            (
                "message-start",
                {"id": "c2", "type": "message-start", "delta": {"message": {"role": "assistant"}}},
            ),
            (
                "content-delta",
                {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Paris"}}}},
            ),
            ("message-end", {"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": BILLED}}),
        ]
        text = (
            "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
            + "data: [DONE]\n\n"
        )
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=text.encode())
    if path == "/v2/chat":
        message = {"role": "assistant", "content": [{"type": "text", "text": "Paris."}]}
        return httpx.Response(
            200, json={"id": "c1", "message": message, "finish_reason": "COMPLETE", "usage": BILLED}
        )
    if path == "/v1/chat":
        lines = [
            {"is_finished": False, "event_type": "stream-start", "generation_id": "g1"},
            {"is_finished": False, "event_type": "text-generation", "text": "Paris"},
            {
                "is_finished": True,
                "event_type": "stream-end",
                "finish_reason": "COMPLETE",
                "response": {
                    "response_id": "r1",
                    "text": "Paris",
                    "finish_reason": "COMPLETE",
                    "meta": BILLED,
                },
            },
        ]
        text = "".join(json.dumps(line) + "\n" for line in lines)
        return httpx.Response(200, headers={"content-type": "application/stream+json"}, content=text.encode())
    if path == "/v2/embed":
        meta = {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 3}}
        return httpx.Response(
            200, json={"id": "e1", "embeddings": {"float": [[0.1, 0.2]]}, "texts": ["hi"], "meta": meta}
        )
    if path == "/v2/rerank":
        meta = {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
        return httpx.Response(
            200, json={"id": "k1", "results": [{"index": 0, "relevance_score": 0.9}], "meta": meta}
        )
    return httpx.Response(404, json={"message": f"no route {path}"})


def test_cohere_sdk_chat_stream_embed_rerank(db: Path) -> None:
    transport = httptrack.TrackingTransport(httpx.MockTransport(handler), db=db, cache=False)
    client = cohere.ClientV2(api_key="co-test", httpx_client=httpx.Client(transport=transport))
    answer = client.chat(model="command-r", messages=[{"role": "user", "content": "Capital of France?"}])
    assert answer.usage is not None and answer.usage.billed_units is not None
    assert answer.usage.billed_units.input_tokens == 9
    streamed = [
        e.type for e in client.chat_stream(model="command-r", messages=[{"role": "user", "content": "Hi"}])
    ]
    assert streamed[-1] == "message-end"
    client.embed(model="embed-v4.0", texts=["hi"], input_type="search_query", embedding_types=["float"])
    client.rerank(model="rerank-v3.5", query="q", documents=["a"])
    v1 = cohere.Client(api_key="co-test", httpx_client=httpx.Client(transport=transport))
    assert [e.event_type for e in v1.chat_stream(model="command-r", message="Hi")][-1] == "stream-end"
    transport.close()

    rows = read_rows(db)
    assert [(r["provider"], r["endpoint"], r["operation"], r["stream"]) for r in rows] == [
        ("cohere", "/v2/chat", "chat", 0),
        ("cohere", "/v2/chat", "chat", 1),
        ("cohere", "/v2/embed", "embeddings", 0),
        ("cohere", "/v2/rerank", "other", 0),
        ("cohere", "/v1/chat", "chat", 1),
    ]
    for row in (rows[0], rows[1], rows[4]):
        # The billed units, not the tokens the model read (which count Cohere's template).
        assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (9, 5, 14)
        assert row["tokens_estimated"] == 0 and row["status"] == "success"
        # genai-prices' command-r: $0.15/M input, $0.60/M output.
        assert row["cost_usd"] == pytest.approx(9 * 0.15e-6 + 5 * 0.6e-6, rel=1e-12)
    assert rows[1]["finish_reason"] == "COMPLETE"
    embed = rows[2]
    assert (embed["input_tokens"], embed["output_tokens"]) == (3, None)
    assert embed["cost_usd"] == pytest.approx(3 * 0.12e-6, rel=1e-12)  # embed-v4.0: $0.12/M
    rerank = rows[3]
    assert rerank["cost_usd"] is None and "rerank-v3.5" in rerank["cost_note"]


def test_cohere_stream_error_keeps_its_billed_usage(db: Path) -> None:
    """A v1 stream ending ``finish_reason: ERROR`` is an error, with the figures it billed."""

    def failing(request: httpx.Request) -> httpx.Response:
        lines = [
            {"is_finished": False, "event_type": "text-generation", "text": "Par"},
            {
                "is_finished": True,
                "event_type": "stream-end",
                "finish_reason": "ERROR",
                "response": {
                    "text": "Par",
                    "meta": {"billed_units": {"input_tokens": 7, "output_tokens": 1}},
                },
            },
        ]
        text = "".join(json.dumps(line) + "\n" for line in lines)
        return httpx.Response(200, headers={"content-type": "application/stream+json"}, content=text.encode())

    transport = httptrack.TrackingTransport(httpx.MockTransport(failing), db=db, cache=False)
    with httpx.Client(transport=transport) as client:
        client.post(
            "https://api.cohere.com/v1/chat", json={"model": "command-r", "message": "Hi", "stream": True}
        )
    transport.close()
    (row,) = read_rows(db)
    assert (row["status"], row["error_code"]) == ("error", "error")
    assert (row["input_tokens"], row["output_tokens"], row["tokens_estimated"]) == (7, 1, 0)


def test_cohere_compatibility_api_is_read_as_openai(db: Path) -> None:
    usage = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}

    def answer(request: httpx.Request) -> httpx.Response:
        message = {"role": "assistant", "content": "Hi"}
        body: dict[str, Any] = {
            "id": "x",
            "model": "command-r",
            "choices": [{"index": 0, "message": message}],
        }
        return httpx.Response(200, json={**body, "usage": usage})

    transport = httptrack.TrackingTransport(httpx.MockTransport(answer), db=db, cache=False)
    with httpx.Client(transport=transport) as client:
        client.post(
            "https://api.cohere.ai/compatibility/v1/chat/completions",
            json={"model": "command-r", "messages": [{"role": "user", "content": "Hi"}]},
        )
    transport.close()
    (row,) = read_rows(db)
    assert (row["provider"], row["operation"], row["input_tokens"], row["output_tokens"]) == (
        "cohere",
        "chat",
        4,
        2,
    )
