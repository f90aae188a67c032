"""The conventions' names for what httptrack knows (pure: a row in, attributes out)."""

from __future__ import annotations

from typing import Any

import pytest

from httptrack.otel._conventions import conventions, error_type, metric_attributes, span_name

OLD, LATEST = conventions({}), conventions({"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"})


@pytest.mark.parametrize(
    ("provider", "operation", "name", "system", "op"),
    [
        ("openai", "chat", "openai", "openai", "chat"),
        ("openai", "completion", "openai", "openai", "text_completion"),
        ("gemini", "chat", "gcp.gemini", "gcp.gemini", "generate_content"),
        ("vertex_ai", "embeddings", "gcp.vertex_ai", "gcp.vertex_ai", "embeddings"),
        ("azure_openai", "chat", "azure.ai.openai", "az.ai.openai", "chat"),
        ("mistral", "chat", "mistral_ai", "mistral_ai", "chat"),
        ("xai", "chat", "x_ai", "xai", "chat"),
        ("ollama", "models", "ollama", "ollama", "models"),
        ("vllm", "other", "vllm", "vllm", "other"),
    ],
)
def test_provider_and_operation_names(provider: str, operation: str, name: str, system: str, op: str) -> None:
    row: dict[str, Any] = {"provider": provider, "operation": operation, "model": "m", "host": "h.example"}
    old = metric_attributes(row, OLD)
    assert (old["gen_ai.provider.name"], old["gen_ai.system"], old["gen_ai.operation.name"]) == (
        name,
        system,
        op,
    )
    assert "gen_ai.system" not in metric_attributes(row, LATEST)
    assert span_name(row) == f"{op} m"


def test_server_and_errors() -> None:
    assert metric_attributes({"host": "127.0.0.1:8000"}, LATEST)["server.port"] == 8000
    assert (
        metric_attributes({"host": "ollama.local", "url": "http://ollama.local/api/chat"}, LATEST)[
            "server.port"
        ]
        == 80
    )
    assert (
        metric_attributes({"host": "api.openai.com", "url": "https://api.openai.com/v1"}, LATEST)[
            "server.port"
        ]
        == 443
    )
    assert error_type({"status": "success", "http_status": 200}) is None
    assert error_type({"status": "error", "error_code": "rate_limit_exceeded", "http_status": 429}) == (
        "rate_limit_exceeded"
    )
    assert error_type({"status": "error", "http_status": 500}) == "500"
    assert error_type({"status": "error"}) == "_OTHER"


@pytest.mark.parametrize(
    ("value", "on_span", "on_event"),
    [("", False, False), ("true", True, False), ("SPAN_ONLY", True, False), ("event_only", False, True),
     ("SPAN_AND_EVENT", True, True), ("NO_CONTENT", False, False), ("false", False, False)],
)  # fmt: skip
def test_content_capture(value: str, on_span: bool, on_event: bool) -> None:
    conv = conventions({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": value})
    assert (conv.content_on_span, conv.content_on_event) == (on_span, on_event)
