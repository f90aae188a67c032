"""OpenAI, and the parser every OpenAI-compatible API shares.

Surfaces: chat completions (``/chat/completions``), the Responses API (``/responses``),
legacy completions (``/completions``), embeddings and model lists; plain JSON and SSE.

Usage, normalized:
- chat/completions/embeddings: ``prompt_tokens`` → input (OpenAI's count already includes
  ``prompt_tokens_details.cached_tokens``); ``completion_tokens`` → output (already includes
  ``completion_tokens_details.reasoning_tokens``).
- Responses API: ``input_tokens`` / ``output_tokens`` with ``input_tokens_details.cached_tokens``
  and ``output_tokens_details.reasoning_tokens``, in the body or in ``response.completed``.
- Streams: the usage chunk (``stream_options.include_usage``: a last chunk with
  ``choices: []``), or usage carried on the finish-reason chunk (several compatible
  providers), or Groq's ``x_groq.usage``; a later figure replaces an earlier one.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .._usage import Usage
from ._base import Parsed, Provider, as_int, dig, first_str

__all__ = ["OpenAI", "OpenAICompatible", "read_openai_usage"]


def _suffix_operation(path: str) -> str:
    path = path.rstrip("/")
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/responses"):
        return "chat"
    if path.endswith("/completions"):
        return "completion"
    if path.endswith("/embeddings"):
        return "embeddings"
    if path.endswith("/models") or "/models/" in path:
        return "models"
    return "other"


def read_openai_usage(raw: Any) -> Usage | None:
    """Normalize an OpenAI-style ``usage`` object (chat, completions, embeddings or
    Responses API naming). ``None`` when ``raw`` carries no token figure."""
    if not isinstance(raw, dict):
        return None
    if "input_tokens" in raw or "output_tokens" in raw:  # Responses API naming
        input_tokens = as_int(raw.get("input_tokens"))
        output_tokens = as_int(raw.get("output_tokens"))
        input_details = raw.get("input_tokens_details")
        output_details = raw.get("output_tokens_details")
    else:
        input_tokens = as_int(raw.get("prompt_tokens"))
        output_tokens = as_int(raw.get("completion_tokens"))
        input_details = raw.get("prompt_tokens_details")
        output_details = raw.get("completion_tokens_details")
    if input_tokens is None and output_tokens is None:
        return None
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=as_int(dig(input_details, "cached_tokens")),
        reasoning_tokens=as_int(dig(output_details, "reasoning_tokens")),
    )
    if usage.cached_input_tokens is None and "prompt_cache_hit_tokens" in raw:
        usage.cached_input_tokens = as_int(raw.get("prompt_cache_hit_tokens"))  # DeepSeek's naming
    for source, key, extra in (
        (input_details, "audio_tokens", "input_audio_tokens"),
        (output_details, "audio_tokens", "output_audio_tokens"),
    ):
        value = as_int(dig(source, key))
        if value:
            usage.extra[extra] = value
    return usage


class OpenAICompatible(Provider):
    """Any API speaking OpenAI's wire format. Subclasses only change ``name``/``hosts``."""

    name: ClassVar[str] = "generic"

    def operation(self, method: str, path: str) -> str:
        return _suffix_operation(path)

    def cacheable(self, method: str, path: str, operation: str) -> bool:
        if operation == "other":  # moderations: free and read-only, worth answering locally
            return method == "POST" and path.rstrip("/").endswith("/moderations")
        return super().cacheable(method, path, operation)

    def read_request(self, parsed: Parsed, method: str, path: str, query: str, body: Any) -> None:
        super().read_request(parsed, method, path, query, body)
        if isinstance(body, dict):
            parsed.user = first_str(body.get("user"))
        if "/batches" in path:
            parsed.batch = True

    # -- whole bodies -------------------------------------------------------------------

    def read_body(self, parsed: Parsed, status: int, body: Any) -> None:
        if not isinstance(body, dict):
            return
        if status >= 400 or "error" in body and body.get("error"):
            self._read_error(parsed, body.get("error", body))
            return
        parsed.response_model = first_str(body.get("model")) or parsed.response_model
        parsed.response_id = first_str(body.get("id")) or parsed.response_id
        usage = read_openai_usage(body.get("usage"))
        if usage is not None:
            parsed.usage = usage
        if body.get("object") == "response" or "output" in body and "choices" not in body:
            self._read_response_object(parsed, body)
            return
        choice = dig(body, "choices", 0)
        if isinstance(choice, dict):
            parsed.finish_reason = first_str(choice.get("finish_reason"))
            message = choice.get("message")
            if isinstance(message, dict):
                self._take_message_text(parsed, message)
            elif isinstance(choice.get("text"), str):  # legacy completions
                parsed.output.append(choice["text"])

    def _take_message_text(self, parsed: Parsed, message: dict[str, Any]) -> None:
        for key in ("content", "refusal"):
            if isinstance(message.get(key), str):
                parsed.output.append(message[key])
        for call in message.get("tool_calls") or ():
            function = dig(call, "function")
            if isinstance(function, dict):
                parsed.output.append(str(function.get("name") or "") + str(function.get("arguments") or ""))

    def _read_response_object(self, parsed: Parsed, response: dict[str, Any]) -> None:
        """A Responses API ``response`` object (the body, or inside a stream event)."""
        parsed.response_model = first_str(response.get("model")) or parsed.response_model
        parsed.response_id = first_str(response.get("id")) or parsed.response_id
        usage = read_openai_usage(response.get("usage"))
        if usage is not None:
            parsed.usage = usage
        status = first_str(response.get("status"))
        reason = first_str(dig(response, "incomplete_details", "reason"))
        parsed.finish_reason = reason or status or parsed.finish_reason
        if status == "failed" or response.get("error"):
            self._read_error(parsed, response.get("error") or {"code": "response_failed"})
        if not parsed.stream:
            for item in response.get("output") or ():
                for part in dig(item, "content") or ():
                    if isinstance(dig(part, "text"), str):
                        parsed.output.append(part["text"])

    def _read_error(self, parsed: Parsed, error: Any) -> None:
        if isinstance(error, dict):
            code = first_str(error.get("code")) or first_str(error.get("type"))
            if code is None and error.get("code") is not None:
                code = str(error["code"])
            parsed.fail(code, first_str(error.get("message")))
        elif isinstance(error, str):
            parsed.fail(None, error)

    # -- streams --------------------------------------------------------------------------

    def read_event(self, parsed: Parsed, event: str | None, data: Any) -> None:
        if not isinstance(data, dict):
            return  # "[DONE]", keep-alives
        kind = data.get("type")
        if isinstance(kind, str) and kind.startswith("response.") or event and event.startswith("response."):
            self._read_responses_event(parsed, kind or event or "", data)
            return
        if kind == "error" or event == "error" or "error" in data and data.get("error"):
            parsed.stream_error = True
            self._read_error(parsed, data.get("error") or data)
            return
        parsed.response_model = first_str(data.get("model")) or parsed.response_model
        parsed.response_id = first_str(data.get("id")) or parsed.response_id
        usage = read_openai_usage(data.get("usage")) or read_openai_usage(dig(data, "x_groq", "usage"))
        if usage is not None:
            parsed.usage = usage
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            reason = first_str(choice.get("finish_reason"))
            if reason:
                parsed.finish_reason = reason
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._take_delta_text(parsed, delta)
            elif isinstance(choice.get("text"), str):  # legacy completions stream
                parsed.output.append(choice["text"])

    def _take_delta_text(self, parsed: Parsed, delta: dict[str, Any]) -> None:
        content = delta.get("content")
        if isinstance(content, str) and content:
            parsed.output.append(content)
        for call in delta.get("tool_calls") or ():
            function = dig(call, "function")
            if isinstance(function, dict):
                parsed.output.append(str(function.get("name") or "") + str(function.get("arguments") or ""))

    def _read_responses_event(self, parsed: Parsed, kind: str, data: dict[str, Any]) -> None:
        if kind == "response.output_text.delta" and isinstance(data.get("delta"), str):
            parsed.output.append(data["delta"])
        elif kind == "response.function_call_arguments.delta" and isinstance(data.get("delta"), str):
            parsed.output.append(data["delta"])
        elif kind in ("response.created", "response.in_progress", "response.completed",
                      "response.incomplete", "response.failed"):  # fmt: skip
            response = data.get("response")
            if isinstance(response, dict):
                self._read_response_object(parsed, response)
            if kind != "response.created" and kind != "response.in_progress":
                parsed.stream_done = True
            if kind == "response.failed":
                parsed.stream_error = True
                if parsed.error_code is None:
                    parsed.fail("response_failed", None)
        elif kind == "response.error":
            parsed.stream_error = True
            self._read_error(parsed, data.get("error") or data)


class OpenAI(OpenAICompatible):
    name = "openai"
    hosts = ("api.openai.com",)
