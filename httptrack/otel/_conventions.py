"""A ``calls`` row in the OpenTelemetry GenAI semantic conventions' terms.

Pure functions over a row (a dict by column name, as the writer builds it and the log
stores it), so the live spans (``_live``) and the backfilled ones (``_backfill``) say the same
of a call. Nothing here imports OpenTelemetry.

Which version of the conventions (``OTEL_SEMCONV_STABILITY_OPT_IN``, as the conventions ask of
instrumentations): with ``gen_ai_latest_experimental`` only the latest names are emitted;
without it, the latest names *and* the older ``gen_ai.system`` (with its older values), so
that backends reading either find the provider. Prompts and answers
(``gen_ai.input.messages``, ``gen_ai.output.messages``, ``gen_ai.system_instructions``) only
when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` opts in: ``true`` (or
``SPAN_ONLY``) on the span, ``EVENT_ONLY`` on a ``gen_ai.client.inference.operation.details``
span event, ``SPAN_AND_EVENT`` both. They come from the stored row, whose bodies are already
scrubbed of credentials (and absent when ``HTTPTRACK_STORE_BODIES=off``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

__all__ = [
    "DURATION_BOUNDARIES",
    "FIRST_TOKEN_EVENT",
    "TOKEN_BOUNDARIES",
    "Conventions",
    "conventions",
    "error_type",
    "message_attributes",
    "metric_attributes",
    "span_attributes",
    "span_name",
    "started_ns",
]

#: The conventions' explicit bucket boundaries for ``gen_ai.client.token.usage``.
TOKEN_BOUNDARIES: tuple[float, ...] = tuple(float(4**i) for i in range(14))
#: ... and for ``gen_ai.client.operation.duration`` (seconds).
DURATION_BOUNDARIES: tuple[float, ...] = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
#: The span event at the first byte of a streamed answer (time to first token).
FIRST_TOKEN_EVENT = "httptrack.first_token"
#: The span event that carries prompts and answers when they go on events.
DETAILS_EVENT = "gen_ai.client.inference.operation.details"

#: httptrack's operation → ``gen_ai.operation.name`` (other values are kept as they are).
_OPERATIONS = {"completion": "text_completion"}
#: httptrack's provider → ``gen_ai.provider.name`` (the well-known values; others as they are).
_PROVIDERS = {
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "azure_openai": "azure.ai.openai",
    "mistral": "mistral_ai",
    "xai": "x_ai",
}
#: ... and → the older ``gen_ai.system`` (v1.36.0 and before).
_SYSTEMS = {
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "azure_openai": "az.ai.openai",
    "mistral": "mistral_ai",
}


class Conventions(NamedTuple):
    """What the environment asks for (read once per exporter)."""

    #: ``OTEL_SEMCONV_STABILITY_OPT_IN`` has ``gen_ai_latest_experimental``.
    latest: bool = False
    #: Prompts and answers as span attributes.
    content_on_span: bool = False
    #: Prompts and answers on a span event.
    content_on_event: bool = False


def conventions(environ: Mapping[str, str] | None = None) -> Conventions:
    env = os.environ if environ is None else environ
    opt_in = {part.strip() for part in env.get("OTEL_SEMCONV_STABILITY_OPT_IN", "").split(",")}
    capture = env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").strip().upper()
    on_span = capture in ("TRUE", "1", "SPAN_ONLY", "SPAN_AND_EVENT")
    on_event = capture in ("EVENT_ONLY", "SPAN_AND_EVENT")
    return Conventions("gen_ai_latest_experimental" in opt_in, on_span, on_event)


def operation_name(row: Mapping[str, Any]) -> str:
    operation = row.get("operation") or "other"
    if operation == "chat" and row.get("provider") in ("gemini", "vertex_ai"):
        return "generate_content"
    return str(_OPERATIONS.get(operation, operation))


def span_name(row: Mapping[str, Any]) -> str:
    """``{gen_ai.operation.name} {gen_ai.request.model}`` (the operation alone without a model)."""
    model = row.get("model")
    operation = operation_name(row)
    return f"{operation} {model}" if model else operation


def _server(row: Mapping[str, Any]) -> tuple[str | None, int | None]:
    host = row.get("host")
    if not host:
        return None, None
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and not host.endswith("]"):
        return name, int(port)
    url = row.get("url") or ""
    return host, 80 if url.startswith("http://") else 443


def error_type(row: Mapping[str, Any]) -> str | None:
    """``error.type`` for a failed call: the provider's error code, the exception's name, the
    HTTP status, or ``_OTHER``."""
    if row.get("status") != "error":
        return None
    code = row.get("error_code")
    if code:
        return str(code)
    status = row.get("http_status")
    return str(status) if status else "_OTHER"


def _common(row: Mapping[str, Any], conv: Conventions) -> dict[str, Any]:
    provider = row.get("provider") or "generic"
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation_name(row),
        "gen_ai.provider.name": _PROVIDERS.get(provider, provider),
    }
    if not conv.latest:
        attributes["gen_ai.system"] = _SYSTEMS.get(provider, provider)
    if row.get("model"):
        attributes["gen_ai.request.model"] = row["model"]
    if row.get("response_model"):
        attributes["gen_ai.response.model"] = row["response_model"]
    address, port = _server(row)
    if address:
        attributes["server.address"] = address
        attributes["server.port"] = port
    return attributes


def metric_attributes(row: Mapping[str, Any], conv: Conventions) -> dict[str, Any]:
    """The attributes of both metrics (``error.type`` is added for the duration)."""
    return _common(row, conv)


#: Row column → span attribute, for the figures that are there when they are not NULL.
_FIGURES = (
    ("input_tokens", "gen_ai.usage.input_tokens"),
    ("output_tokens", "gen_ai.usage.output_tokens"),
    ("cached_input_tokens", "gen_ai.usage.cache_read.input_tokens"),
    ("cache_write_tokens", "gen_ai.usage.cache_creation.input_tokens"),
    ("reasoning_tokens", "gen_ai.usage.reasoning.output_tokens"),
    ("response_id", "gen_ai.response.id"),
    ("session", "gen_ai.conversation.id"),
    ("http_status", "http.response.status_code"),
    ("id", "httptrack.call_id"),
    ("cost_usd", "httptrack.cost_usd"),
    ("cost_saved_usd", "httptrack.cost_saved_usd"),
    ("user", "httptrack.user"),
    ("service", "httptrack.service"),
    ("session", "httptrack.session"),
    ("properties", "httptrack.properties"),
    ("outcome", "httptrack.outcome"),
    ("request_id", "httptrack.request_id"),
    ("ttft_ms", "httptrack.ttft_ms"),
)


def span_attributes(row: Mapping[str, Any], conv: Conventions) -> dict[str, Any]:
    """Every attribute of the call's span (prompts and answers apart: :func:`message_attributes`)."""
    attributes = _common(row, conv)
    for column, name in _FIGURES:
        value = row.get(column)
        if value is not None:
            attributes[name] = value if not isinstance(value, dict) else json.dumps(value, sort_keys=True)
    if row.get("finish_reason"):
        attributes["gen_ai.response.finish_reasons"] = (row["finish_reason"],)
    attributes["httptrack.cached"] = bool(row.get("cached"))
    if row.get("tokens_estimated"):
        attributes["httptrack.tokens_estimated"] = True
    error = error_type(row)
    if error is not None:
        attributes["error.type"] = error
    return attributes


def started_ns(row: Mapping[str, Any]) -> int:
    """The call's start (``started_at``, ISO-8601 UTC) in nanoseconds since the epoch."""
    started = datetime.fromisoformat(str(row["started_at"]).replace("Z", "+00:00"))
    return int(started.timestamp() * 1_000_000) * 1000


# -- prompts and answers (opt-in) ------------------------------------------------------------


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, str):
                parts.append({"type": "text", "content": block})
            elif isinstance(block, dict):
                kind = str(block.get("type") or "text")
                if isinstance(block.get("text"), str):
                    parts.append({"type": "text", "content": block["text"]})
                else:  # images, audio, tool calls ...: named, not copied
                    parts.append({"type": kind})
    return parts


def message_attributes(row: Mapping[str, Any]) -> dict[str, str]:
    """``gen_ai.input.messages`` / ``gen_ai.system_instructions`` / ``gen_ai.output.messages``
    as JSON strings (the conventions' form on spans), read from the stored request body and
    generated text. Empty when the row keeps no bodies or its request is not chat-shaped."""
    attributes: dict[str, str] = {}
    body = row.get("request_body")
    request: Any = None
    if isinstance(body, str) and body.startswith("{"):
        try:
            request = json.loads(body)
        except ValueError:  # cut at the storage cap
            request = None
    if isinstance(request, dict):
        messages = request.get("messages")
        if isinstance(messages, list):
            shaped = [
                {"role": str(m.get("role") or "user"), "parts": _parts(m.get("content"))}
                for m in messages
                if isinstance(m, dict)
            ]
            attributes["gen_ai.input.messages"] = json.dumps(shaped, ensure_ascii=False)
        elif isinstance(request.get("prompt"), str):
            shaped = [{"role": "user", "parts": _parts(request["prompt"])}]
            attributes["gen_ai.input.messages"] = json.dumps(shaped, ensure_ascii=False)
        system = request.get("system")
        if isinstance(system, str | list):
            attributes["gen_ai.system_instructions"] = json.dumps(_parts(system), ensure_ascii=False)
    text = row.get("response_text")
    if isinstance(text, str) and text:
        output: dict[str, Any] = {"role": "assistant", "parts": _parts(text)}
        if row.get("finish_reason"):
            output["finish_reason"] = row["finish_reason"]
        attributes["gen_ai.output.messages"] = json.dumps([output], ensure_ascii=False)
    return attributes
