"""HTTPTRACK_OTEL: real SDK calls become GenAI client spans and metrics, received over real
OTLP/HTTP on 127.0.0.1 and decoded with the official protobuf messages, every attribute
checked against the call's row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from helpers import read_rows

import httptrack
from httptrack._fake import mock_transport
from httptrack._faults import fault_counts

from .expect import STATUS_ERROR, check_span, expected_attributes
from .receiver import Point, Receiver

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
TOKEN_BOUNDS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BOUNDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


def client(db: Path, *, otel: bool = True, **options: Any) -> httpx2.Client:
    transport = httptrack.TrackingTransport(
        mock_transport(httpx2), db=db, settings=httptrack.Settings(otel=otel)
    )
    if options:
        transport = httptrack.TrackingTransport(
            mock_transport(httpx2), db=db, settings=httptrack.Settings(otel=otel), **options
        )
    return httpx2.Client(transport=transport)


def received(receiver: Receiver, count: int) -> None:
    assert httptrack.flush()
    assert receiver.wait_for(lambda: len(receiver.spans) >= count), receiver.spans
    assert len(receiver.spans) == count


def points(receiver: Receiver, metric: str, **attributes: Any) -> list[Point]:
    return [
        p
        for p in receiver.points
        if p.metric == metric and all(p.attributes.get(k) == v for k, v in attributes.items())
    ]


def latest_point(receiver: Receiver, metric: str, count: int, **attributes: Any) -> Point:
    """The newest cumulative point of ``metric`` with these attributes once it counts ``count``."""
    assert receiver.wait_for(lambda: any(p.count == count for p in points(receiver, metric, **attributes)))
    return [p for p in points(receiver, metric, **attributes) if p.count == count][-1]


# -- spans ------------------------------------------------------------------------------------


def test_openai_chat_span_and_metrics(db: Path, receiver: Receiver) -> None:
    sdk = openai.OpenAI(api_key="sk-otel-secret-key-123", http_client=client(db))
    with httptrack.attribute(user="alice", service="summarizer", session="conv-7", team="search"):
        answer = sdk.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    received(receiver, 1)
    (row,) = read_rows(db)
    span = receiver.span_for(row["id"])
    check_span(span, row, "openai")
    assert span.parent_span_id == ""
    assert row["response_id"] == answer.id and row["properties"] == json.dumps({"team": "search"})
    assert span.events == []  # not a stream: no first-token event
    # Prompts and answers stay out unless asked for; the key never goes anywhere.
    assert not any(k.startswith(("gen_ai.input", "gen_ai.output")) for k in span.attributes)
    assert "sk-otel-secret-key-123" not in repr(receiver.spans)

    common = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.system": "openai"}
    common |= {"gen_ai.request.model": row["model"], "gen_ai.response.model": row["response_model"]}
    common |= {"server.address": "api.openai.com", "server.port": 443}
    duration = latest_point(receiver, "gen_ai.client.operation.duration", 1)
    assert duration.unit == "s" and duration.bounds == DURATION_BOUNDS
    assert duration.attributes == common
    assert duration.sum == pytest.approx(row["latency_ms"] / 1000, abs=1e-5)
    for kind, column in (("input", "input_tokens"), ("output", "output_tokens")):
        tokens = latest_point(receiver, "gen_ai.client.token.usage", 1, **{"gen_ai.token.type": kind})
        assert tokens.unit == "{token}" and tokens.bounds == TOKEN_BOUNDS
        assert tokens.attributes == {**common, "gen_ai.token.type": kind}
        assert tokens.sum == row[column]


def test_openai_stream_has_a_first_token_event(db: Path, receiver: Receiver) -> None:
    sdk = openai.OpenAI(api_key="sk-test", http_client=client(db))
    for _ in sdk.chat.completions.create(model="o3-mini", messages=QUESTION, stream=True):
        pass
    received(receiver, 1)
    (row,) = read_rows(db)
    span = receiver.span_for(row["id"])
    assert row["stream"] == 1 and row["reasoning_tokens"]
    check_span(span, row, "openai")
    ((name, at, attributes),) = span.events
    assert name == "httptrack.first_token" and attributes == {"httptrack.ttft_ms": row["ttft_ms"]}
    assert abs((at - span.start_ns) / 1e6 - row["ttft_ms"]) < 0.01


@pytest.mark.parametrize("cache", ["read", "write"])
def test_anthropic_prompt_cache_tokens(db: Path, receiver: Receiver, cache: str) -> None:
    sdk = anthropic.Anthropic(api_key="sk-ant-test", http_client=client(db))
    sdk.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=100,
        system=[{"type": "text", "text": "Be brief. " * 50, "cache_control": {"type": "ephemeral"}}],
        messages=QUESTION,
        extra_headers={"x-fake-cache": cache},
    )
    received(receiver, 1)
    (row,) = read_rows(db)
    assert row["cached_input_tokens" if cache == "read" else "cache_write_tokens"]
    check_span(receiver.span_for(row["id"]), row, "anthropic")


def test_an_error_is_an_error_span(db: Path, receiver: Receiver) -> None:
    sdk = openai.OpenAI(api_key="sk-test", http_client=client(db), max_retries=0)
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="missing-model", messages=QUESTION)
    received(receiver, 1)
    (row,) = read_rows(db)
    span = receiver.span_for(row["id"])
    check_span(span, row, "openai")
    assert span.attributes["error.type"] == row["error_code"]
    assert span.status_message == row["error_message"]
    duration = latest_point(receiver, "gen_ai.client.operation.duration", 1)
    assert duration.attributes["error.type"] == row["error_code"]


def test_a_transport_error(db: Path, receiver: Receiver) -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    transport = httptrack.TrackingTransport(
        httpx2.MockTransport(refuse), db=db, settings=httptrack.Settings(otel=True)
    )
    sdk = openai.OpenAI(api_key="sk-test", http_client=httpx2.Client(transport=transport), max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        sdk.chat.completions.create(model="gpt-4o", messages=QUESTION)
    received(receiver, 1)
    (row,) = read_rows(db)
    span = receiver.span_for(row["id"])
    assert span.attributes["error.type"] == "httpx2.ConnectError" == row["error_code"]
    assert span.status_code == STATUS_ERROR


def test_a_cache_hit(db: Path, receiver: Receiver, cache_dir: Path) -> None:
    sdk = openai.OpenAI(api_key="sk-test", http_client=client(db, cache=True, cache_dir=cache_dir))
    sdk.embeddings.create(model="text-embedding-3-small", input="hello")
    assert httptrack.flush()
    sdk.embeddings.create(model="text-embedding-3-small", input="hello")
    received(receiver, 2)
    first, hit = read_rows(db)
    assert (first["cached"], hit["cached"]) == (0, 1) and hit["cost_saved_usd"]
    for row in (first, hit):
        check_span(receiver.span_for(row["id"]), row, "openai", "embeddings")
    assert receiver.span_for(hit["id"]).attributes["httptrack.cached"] is True
    # A hit cost no tokens: the usage metric counts the first call only.
    latest_point(receiver, "gen_ai.client.operation.duration", 2)
    tokens = latest_point(receiver, "gen_ai.client.token.usage", 1, **{"gen_ai.token.type": "input"})
    assert tokens.sum == first["input_tokens"]


def test_latest_conventions_and_content_capture(
    db: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http,gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_AND_EVENT")
    sdk = anthropic.Anthropic(api_key="sk-ant-secret-999", http_client=client(db))
    sdk.messages.create(model="claude-sonnet-4-5", max_tokens=50, system="Be brief.", messages=QUESTION)
    received(receiver, 1)
    (row,) = read_rows(db)
    span = receiver.span_for(row["id"])
    content = {
        "gen_ai.input.messages": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": QUESTION[0]["content"]}]}]
        ),
        "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
        "gen_ai.output.messages": json.dumps(
            [
                {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": row["response_text"]}],
                    "finish_reason": row["finish_reason"],
                }
            ]
        ),
    }
    assert span.attributes == {**expected_attributes(row, "anthropic", "chat", latest=True), **content}
    assert "gen_ai.system" not in span.attributes
    ((name, at, attributes),) = span.events
    assert name == "gen_ai.client.inference.operation.details" and attributes == content
    assert at == span.end_ns
    assert "sk-ant-secret-999" not in repr(receiver.spans)


def test_off_sends_nothing(db: Path, receiver: Receiver) -> None:
    sdk = openai.OpenAI(api_key="sk-test", http_client=client(db, otel=False))
    sdk.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert httptrack.flush()
    assert len(read_rows(db)) == 1
    assert not receiver.wait_for(lambda: bool(receiver.requests), timeout=0.5)


def test_the_environment_turns_it_on(db: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPTRACK_OTEL", "1")
    assert httptrack.Settings().otel is True
    http = httpx2.Client(transport=httptrack.TrackingTransport(mock_transport(httpx2), db=db))
    openai.OpenAI(api_key="sk-test", http_client=http).models.list()
    received(receiver, 1)
    assert receiver.spans[0].name == "models"


# -- faults -----------------------------------------------------------------------------------


def test_a_fault_in_export_never_breaks_a_call(
    db: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from httptrack.otel import _live

    def broken(self: Any, batch: Any, pause: Any = None) -> None:
        raise RuntimeError("exporter bug")

    monkeypatch.setattr(_live.LiveExporter, "export", broken)
    sdk = openai.OpenAI(api_key="sk-test", http_client=client(db))
    sdk.chat.completions.create(model="gpt-4o", messages=QUESTION)
    sdk.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert httptrack.flush()
    assert len(read_rows(db)) == 2  # recorded all the same
    assert fault_counts().get("otel", 0) >= 1
    assert "rows_dropped" not in fault_counts()


def test_without_opentelemetry(db: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    sdk = openai.OpenAI(api_key="sk-test", http_client=client(db))
    sdk.chat.completions.create(model="gpt-4o", messages=QUESTION)
    sdk.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert httptrack.flush()
    assert len(read_rows(db)) == 2
    assert fault_counts()["otel"] == 1  # said once, not per call
    assert receiver.requests == []


def test_an_unreachable_collector(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from httptrack.otel import _live

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # discard: refused
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    _live.reset()
    try:
        sdk = openai.OpenAI(api_key="sk-test", http_client=client(db))
        sdk.chat.completions.create(model="gpt-4o", messages=QUESTION)
        httptrack.flush()
        assert len(read_rows(db)) == 1
    finally:
        _live.reset()


def test_a_collector_that_hangs_does_not_hold_flush(db: Path, receiver: Receiver) -> None:
    """A collector that accepts and never answers: ``httptrack.flush()`` (and so the writer,
    and exit) waits for httptrack's own exporters at most ``FLUSH_MILLIS``, not the
    exporters' own timeouts and retries (20 s and more)."""
    import threading

    from httptrack.otel import _live

    sdk = openai.OpenAI(api_key="sk-test", http_client=client(db))
    sdk.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert httptrack.flush()
    exporter = _live._get()
    assert exporter is not None and exporter.owned
    hung = threading.Event()
    for provider in exporter.owned:  # as an export to a collector that never answers
        provider.force_flush = lambda timeout_millis=0: hung.wait(60)
    done = threading.Event()
    flusher = threading.Thread(target=lambda: (httptrack.flush(), done.set()), daemon=True)
    try:
        sdk.chat.completions.create(model="gpt-4o", messages=QUESTION)
        flusher.start()
        returned = done.wait(_live.FLUSH_MILLIS / 1000 * 3)
    finally:
        hung.set()
        flusher.join(60)
    assert returned
    assert len(read_rows(db)) == 2


async def test_async_client(db: Path, receiver: Receiver) -> None:
    transport = httptrack.AsyncTrackingTransport(
        mock_transport(httpx2), db=db, settings=httptrack.Settings(otel=True)
    )
    sdk = openai.AsyncOpenAI(api_key="sk-test", http_client=httpx2.AsyncClient(transport=transport))
    stream = await sdk.chat.completions.create(model="gpt-4o", messages=QUESTION, stream=True)
    async for _ in stream:
        pass
    received(receiver, 1)
    (row,) = read_rows(db)
    check_span(receiver.span_for(row["id"]), row, "openai")


@pytest.mark.parametrize("endpoint", [False, True])
def test_an_app_that_set_up_tracing_only(
    db: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, endpoint: bool
) -> None:
    """The app's TracerProvider gets the spans; metrics go to httptrack's own provider only
    when the variables name an endpoint (else nothing is sent to a default nobody listens on)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from httptrack.otel import _live

    memory = InMemorySpanExporter()
    app = TracerProvider()
    app.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: app)  # as trace.set_tracer_provider
    if not endpoint:
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    _live.reset()
    sdk = openai.OpenAI(api_key="sk-test", http_client=client(db))
    sdk.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert httptrack.flush()
    (row,) = read_rows(db)
    (span,) = memory.get_finished_spans()
    assert span.attributes is not None and span.attributes["httptrack.call_id"] == row["id"]
    exporter = _live._get()
    assert exporter is not None and exporter.tracer is not None
    assert (exporter.duration is not None) is endpoint
    if endpoint:
        assert receiver.wait_for(lambda: "/v1/metrics" in receiver.requests)
    assert "/v1/traces" not in receiver.requests
    app.shutdown()
