"""The provider layer on its own: hosts, operations, which parser reads which path, GraphQL,
estimates for streams that end early, and parsers that never raise on shapes they do not
know."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from helpers import chunk_stream, one_row
from hypothesis import given, settings
from hypothesis import strategies as st

import httptrack
from httptrack.providers import Parsed, provider_for_host, register_provider, registered_providers
from httptrack.providers.anthropic import Anthropic
from httptrack.providers.graphql import GraphQL, operation_name
from httptrack.providers.openai import OpenAICompatible


@pytest.mark.parametrize(
    ("host", "port", "name"),
    [
        ("api.openai.com", None, "openai"),
        ("contoso.openai.azure.com", None, "azure_openai"),
        ("contoso.cognitiveservices.azure.com", None, "azure_openai"),
        ("contoso.services.ai.azure.com", None, "azure_openai"),
        ("api.anthropic.com", None, "anthropic"),
        ("localhost", 11434, "ollama"),
        ("127.0.0.1", 11434, "ollama"),
        ("ollama.com", None, "ollama"),
        ("generativelanguage.googleapis.com", None, "gemini"),
        ("us-central1-aiplatform.googleapis.com", None, "vertex_ai"),
        ("aiplatform.googleapis.com", None, "vertex_ai"),
        ("api.mistral.ai", None, "mistral"),
        ("codestral.mistral.ai", None, "mistral"),
        ("api.groq.com", None, "groq"),
        ("api.deepseek.com", None, "deepseek"),
        ("api.together.xyz", None, "together"),
        ("api.together.ai", None, "together"),
        ("openrouter.ai", None, "openrouter"),
        ("api.x.ai", None, "xai"),
        ("api.fireworks.ai", None, "fireworks"),
        ("api.perplexity.ai", None, "perplexity"),
    ],
)
def test_hosts(host: str, port: int | None, name: str) -> None:
    provider = provider_for_host(host, port)
    assert provider is not None and provider.name == name


@pytest.mark.parametrize(
    "host", ["example.com", "openai.azure.com.evil.example", "localhost", "googleapis.com"]
)
def test_other_hosts_are_not_llm_providers(host: str) -> None:
    assert provider_for_host(host, None) is None


def test_registered_and_mapped_hosts() -> None:
    register_provider("*.llm.corp.example", "vllm")
    provider = provider_for_host("gpu1.llm.corp.example", 8000)
    assert provider is not None and provider.name == "vllm" and isinstance(provider, OpenAICompatible)
    mapped = provider_for_host("10.0.0.5", 8080, {"10.0.0.5:8080": "anthropic"})
    assert mapped is not None and mapped.name == "anthropic"
    assert "vllm" in registered_providers()


@pytest.mark.parametrize(
    ("host", "method", "path", "operation"),
    [
        ("api.openai.com", "POST", "/v1/chat/completions", "chat"),
        ("api.openai.com", "POST", "/v1/responses", "chat"),
        ("api.openai.com", "GET", "/v1/responses/resp_1", "other"),
        ("api.openai.com", "POST", "/v1/completions", "completion"),
        ("api.openai.com", "POST", "/v1/embeddings", "embeddings"),
        ("api.openai.com", "GET", "/v1/models", "models"),
        ("api.openai.com", "POST", "/v1/images/generations", "other"),
        ("api.openai.com", "POST", "/v1/audio/transcriptions", "other"),
        ("api.openai.com", "POST", "/v1/moderations", "other"),
        ("api.openai.com", "POST", "/v1/threads/t1/messages", "other"),
        ("contoso.openai.azure.com", "POST", "/openai/deployments/prod/chat/completions", "chat"),
        ("contoso.openai.azure.com", "POST", "/openai/v1/responses", "chat"),
        ("contoso.services.ai.azure.com", "POST", "/anthropic/v1/messages", "chat"),
        ("api.anthropic.com", "POST", "/v1/messages", "chat"),
        ("api.anthropic.com", "POST", "/v1/messages/count_tokens", "other"),
        ("api.anthropic.com", "POST", "/v1/messages/batches", "other"),
        ("api.anthropic.com", "GET", "/v1/models", "models"),
        ("localhost", "POST", "/api/chat", "chat"),
        ("localhost", "POST", "/api/generate", "completion"),
        ("localhost", "POST", "/api/embed", "embeddings"),
        ("localhost", "GET", "/api/tags", "models"),
        ("localhost", "POST", "/v1/chat/completions", "chat"),
        ("localhost", "POST", "/v1/messages", "chat"),
        (
            "generativelanguage.googleapis.com",
            "POST",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            "chat",
        ),
        ("generativelanguage.googleapis.com", "POST", "/v1beta/models/gemini-2.5-flash:countTokens", "other"),
        (
            "generativelanguage.googleapis.com",
            "POST",
            "/v1beta/models/text-embedding-004:batchEmbedContents",
            "embeddings",
        ),
        ("generativelanguage.googleapis.com", "GET", "/v1beta/models", "models"),
        ("generativelanguage.googleapis.com", "POST", "/v1beta/openai/chat/completions", "chat"),
        (
            "us-central1-aiplatform.googleapis.com",
            "POST",
            "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash:streamGenerateContent",
            "chat",
        ),
        (
            "us-east5-aiplatform.googleapis.com",
            "POST",
            "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict",
            "chat",
        ),
        ("api.mistral.ai", "POST", "/v1/fim/completions", "completion"),
        ("api.mistral.ai", "POST", "/v1/agents/completions", "chat"),
        ("api.mistral.ai", "POST", "/v1/conversations", "chat"),
        ("api.groq.com", "POST", "/openai/v1/chat/completions", "chat"),
        ("openrouter.ai", "POST", "/api/v1/chat/completions", "chat"),
        ("api.fireworks.ai", "POST", "/inference/v1/chat/completions", "chat"),
        ("api.x.ai", "POST", "/v1/messages", "chat"),
    ],
)
def test_operations(host: str, method: str, path: str, operation: str) -> None:
    provider = provider_for_host(host, 11434 if host == "localhost" else None)
    assert provider is not None
    assert provider.operation(method, path) == operation


@pytest.mark.parametrize(
    ("host", "path", "parser"),
    [
        ("localhost", "/v1/messages", Anthropic),
        ("api.x.ai", "/v1/messages", Anthropic),
        ("contoso.services.ai.azure.com", "/anthropic/v1/messages", Anthropic),
        (
            "us-east5-aiplatform.googleapis.com",
            "/v1/projects/p/locations/l/publishers/anthropic/models/c:rawPredict",
            Anthropic,
        ),
        ("generativelanguage.googleapis.com", "/v1beta/openai/chat/completions", OpenAICompatible),
        ("api.openai.com", "/v1/threads/t1/messages", OpenAICompatible),
    ],
)
def test_a_host_serving_a_second_api_shape_is_read_by_that_shapes_parser(
    host: str, path: str, parser: type
) -> None:
    provider = provider_for_host(host, 11434 if host == "localhost" else None)
    assert provider is not None
    assert isinstance(provider.parser_for("POST", path), parser)


# -- GraphQL -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_body", "name"),
    [
        ({"operationName": "GetUser", "query": "query GetUser { me { id } }"}, "GetUser"),
        ({"query": "mutation CreatePost($t: String) { createPost(title: $t) { id } }"}, "CreatePost"),
        ({"query": "# a comment\nsubscription OnEvent { event }"}, "OnEvent"),
        ({"query": "mutation { logout }"}, "mutation"),
        ({"query": "{ me { id } }"}, "query"),
        ({"variables": {}}, None),
    ],
)
def test_graphql_operation_names(request_body: dict[str, Any], name: str | None) -> None:
    assert operation_name(request_body) == name


def test_graphql_batches_get_requests_and_partial_success() -> None:
    parsed = Parsed()
    GraphQL().read_request(
        parsed, "POST", "/graphql", "", [{"operationName": "A"}, {"query": "query B { x }"}]
    )
    assert parsed.endpoint_detail == "A,B"
    parsed = Parsed()
    GraphQL().read_request(parsed, "GET", "/graphql", "operationName=Persisted&extensions=%7B%7D", None)
    assert parsed.endpoint_detail == "Persisted"
    GraphQL().read_body(parsed, 200, {"data": {"x": 1}, "errors": [{"message": "field y denied"}]})
    assert not parsed.stream_error and parsed.notes == ["graphql partial success: field y denied"]


# -- estimates for streams that end early ------------------------------------------------

MESSAGES = "https://api.anthropic.com/v1/messages"


def anthropic_events(*, final: bool) -> list[bytes]:
    events = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5-20250929",
                "content": [],
                "usage": {"input_tokens": 21, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Paris is the capital"},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " of France, and"},
        },
    ]
    if final:
        events += [
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 40}},
        ]
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]


def read_some(db: Path, chunks: list[bytes], keep: int, fail_after: int | None = None) -> None:
    def handler(request: Any) -> Any:
        return httpx2.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=chunk_stream(httpx2, chunks, fail_after=fail_after),
        )

    transport = httptrack.TrackingTransport(httpx2.MockTransport(handler), db=db, cache=False)
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    }
    with httpx2.Client(transport=transport) as client, client.stream("POST", MESSAGES, json=body) as reply:
        try:
            for i, _ in enumerate(reply.iter_raw()):
                if i + 1 == keep:
                    break
        except Exception:
            pass


def test_stream_cut_short_replaces_a_provisional_output_figure_with_a_count(db: Path) -> None:
    read_some(db, anthropic_events(final=False), keep=4)
    row = one_row(db)
    assert (row["outcome"], row["status"], row["input_tokens"]) == ("cut_short", "success", 21)
    assert row["tokens_estimated"] == 1
    assert row["output_tokens"] > 1  # "Paris is the capital of France, and" counted, not message_start's 1
    assert row["cost_usd"] > 0


def test_stream_cut_short_after_the_final_figure_keeps_it(db: Path) -> None:
    read_some(db, anthropic_events(final=True), keep=6)  # the app stopped before message_stop
    row = one_row(db)
    assert (row["outcome"], row["input_tokens"], row["output_tokens"], row["tokens_estimated"]) == (
        "cut_short",
        21,
        40,
        0,
    )


def test_stream_broken_by_the_network_is_estimated_from_what_arrived(db: Path) -> None:
    read_some(db, anthropic_events(final=False), keep=0, fail_after=3)
    row = one_row(db)
    assert (row["status"], row["outcome"], row["input_tokens"], row["tokens_estimated"]) == (
        "error",
        "failed",
        21,
        1,
    )
    assert row["output_tokens"] > 1 and row["cost_usd"] > 0


def test_error_event_before_any_output_is_not_estimated(db: Path) -> None:
    error = (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    read_some(db, [error], keep=0)
    row = one_row(db)
    assert (row["status"], row["error_code"], row["error_message"]) == (
        "error",
        "overloaded_error",
        "Overloaded",
    )
    assert (row["input_tokens"], row["output_tokens"], row["tokens_estimated"]) == (None, None, 0)


# -- unknown shapes never break anything -------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "usage",
                    "choices",
                    "delta",
                    "message",
                    "type",
                    "error",
                    "model",
                    "candidates",
                    "usageMetadata",
                    "x_groq",
                    "response",
                    "done",
                    "prompt_tokens",
                    "input_tokens",
                    "output_tokens",
                    "content",
                    "text",
                    "cost",
                    "result",
                    "data",
                    "errors",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)
PARSERS = [
    (provider, path)
    for provider in registered_providers().values()
    for path in (
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/responses",
        "/api/chat",
        "/graphql",
        "/v1beta/models/m:streamGenerateContent",
        "/v1/files/f/content",
    )
]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(PARSERS),
    JSON,
    st.lists(JSON, max_size=5),
    st.sampled_from([None, "message_start", "error"]),
)
def test_parsers_never_raise_on_shapes_they_do_not_know(
    target: tuple[Any, str], request_body: Any, events: list[Any], event: str | None
) -> None:
    provider, path = target
    parser = provider.parser_for("POST", path)
    parsed = Parsed(operation=provider.operation("POST", path))
    parser.read_request(parsed, "POST", path, "", request_body)
    parser.stream_format(parsed, "text/event-stream")
    for data in events:
        parser.read_event(parsed, event, data)
        parser.read_body(parsed, 200, data)
    parser.finish(parsed)


@pytest.mark.parametrize("body", [b"[1, 2", b'{"usage": "lots"}', b"\xff\xfe garbage", b'{"choices": 5}'])
def test_a_payload_no_parser_understands_still_gives_a_row(body: bytes, db: Path) -> None:
    def handler(request: Any) -> Any:
        return httpx2.Response(
            200, headers={"content-type": "application/json"}, stream=chunk_stream(httpx2, [body])
        )

    transport = httptrack.TrackingTransport(httpx2.MockTransport(handler), db=db, cache=False)
    with httpx2.Client(transport=transport) as client:
        reply = client.post(
            "https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o", "messages": []}
        )
    assert reply.content == body
    row = one_row(db)
    assert (row["status"], row["model"]) == ("success", "gpt-4o")
    # Nothing read is said: never a row that looks complete and free.
    assert row["parse_notes"], row
    assert row["cost_usd"] is None or row["tokens_estimated"] == 1, row


def test_output_without_input_is_not_priced_as_a_free_prompt(db: Path) -> None:
    """Usage with output tokens but no readable input (and a prompt that cannot be counted)
    is NULL with the reason: pricing the output alone would undercount the call."""
    message = {
        "type": "message",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": {"output_tokens": 12},
    }

    def handler(request: Any) -> Any:
        return httpx2.Response(200, json=message)

    transport = httptrack.TrackingTransport(httpx2.MockTransport(handler), db=db, cache=False)
    with httpx2.Client(transport=transport) as client:
        client.post("https://api.anthropic.com/v1/messages", content=b"not json", headers={"x-api-key": "k"})
    row = one_row(db)
    assert (row["input_tokens"], row["output_tokens"]) == (None, 12)
    assert row["cost_usd"] is None
    assert row["cost_note"] == "input tokens unknown: none reported and the prompt could not be counted"


def test_a_graphql_reply_with_errors_under_http_200_is_a_failed_call_not_an_http_error(db: Path) -> None:
    httptrack.register_provider("gql.example", "graphql")

    def handler(request: Any) -> Any:
        return httpx2.Response(200, json={"errors": [{"message": "boom"}], "data": None})

    transport = httptrack.TrackingTransport(httpx2.MockTransport(handler), db=db, cache=False)
    with httpx2.Client(transport=transport) as client:
        client.post("https://gql.example/graphql", json={"query": "query Q { a }", "operationName": "Q"})
    row = one_row(db)
    assert (row["status"], row["http_status"], row["cost_usd"]) == ("error", 200, 0.0)
    assert row["cost_note"] == "not billed: the call failed"


@pytest.mark.parametrize(
    "event",
    [
        {"choices": True, "usage": {}},
        {"choices": [{"index": {"n": 0}, "finish_reason": "stop", "delta": {}}]},
    ],
)
def test_openai_stream_events_of_odd_shapes_do_not_raise(event: dict[str, Any]) -> None:
    """Found by the property test above: usage beside a `choices` that is not a list, and
    a finish reason on a choice whose index is not a number."""
    parser = provider_for_host("api.openai.com", None)
    parsed = Parsed(operation="chat", stream=True)
    parser.read_event(parsed, None, event)
    parser.finish(parsed)
    assert not parsed.complete


def test_a_stream_of_a_shape_no_parser_knows_is_noted_also_when_httptrack_rewrote_the_request(
    db: Path,
) -> None:
    body = b'data: {"weird": 1}\n\ndata: [DONE]\n\n'

    def handler(request: Any) -> Any:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    transport = httptrack.TrackingTransport(httpx2.MockTransport(handler), db=db, cache=False)
    with httpx2.Client(transport=transport) as client:
        client.post(
            "https://api.openai.com/v1/chat/completions",
            json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        )
    assert one_row(db)["parse_notes"] == (
        "httptrack added stream_options.include_usage to the request; the app did not see what it added; "
        "no usage and no generated text found in the response: a shape httptrack does not know"
    )
