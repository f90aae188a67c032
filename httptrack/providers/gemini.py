"""Google Gemini (``generativelanguage.googleapis.com``): generateContent,
streamGenerateContent (SSE with ``alt=sse``, otherwise one JSON array delivered over time),
embedContent / batchEmbedContents, countTokens and model lists.

The model is named in the path (``/v1beta/models/gemini-2.5-flash:generateContent``).

Usage, normalized from ``usageMetadata``: Gemini reports thoughts and tool-use prompt tokens
*apart* from the prompt and candidate counts, so
- input  = ``promptTokenCount`` + ``toolUsePromptTokenCount`` (cached content is already
  inside ``promptTokenCount``; ``cachedContentTokenCount`` is its breakdown);
- output = ``candidatesTokenCount`` + ``thoughtsTokenCount`` (reasoning = thoughts).
Streams repeat ``usageMetadata`` on every chunk with provisional figures: the last wins.
"""

from __future__ import annotations

from typing import Any

from .._usage import Usage
from ._base import Parsed, Provider, as_int, dig, first_str

__all__ = ["Gemini", "read_gemini_usage"]

_ACTIONS = {
    "generateContent": "chat",
    "streamGenerateContent": "chat",
    "embedContent": "embeddings",
    "batchEmbedContents": "embeddings",
}


def read_gemini_usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = as_int(raw.get("promptTokenCount"))
    candidates = as_int(raw.get("candidatesTokenCount"))
    thoughts = as_int(raw.get("thoughtsTokenCount"))
    tool_prompt = as_int(raw.get("toolUsePromptTokenCount"))
    if prompt is None and candidates is None and thoughts is None:
        return None
    input_tokens = None if prompt is None and tool_prompt is None else (prompt or 0) + (tool_prompt or 0)
    output_tokens = None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=as_int(raw.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


def _split_path(path: str) -> tuple[str | None, str | None]:
    """``(model, action)`` from ``.../models/<model>:<action>``."""
    _, sep, rest = path.partition("/models/")
    if not sep:
        return None, None
    model, _, action = rest.partition(":")
    return (model or None), (action or None)


class Gemini(Provider):
    name = "gemini"
    hosts = ("generativelanguage.googleapis.com",)
    request_id_headers = ("x-request-id", "x-goog-request-id")

    def operation(self, method: str, path: str) -> str:
        model, action = _split_path(path)
        if action is not None:
            return _ACTIONS.get(action, "other")
        if path.rstrip("/").endswith("/models") or model is not None:
            return "models" if method == "GET" else "other"
        return "other"

    def cacheable(self, method: str, path: str, operation: str) -> bool:
        if operation == "other":  # countTokens: free and read-only; never batches or uploads
            return method == "POST" and _split_path(path)[1] == "countTokens"
        return super().cacheable(method, path, operation)

    def read_request(self, parsed: Parsed, method: str, path: str, query: str, body: Any) -> None:
        model, action = _split_path(path)
        if action is not None:
            parsed.model = model
        parsed.stream = action == "streamGenerateContent"
        if "batchGenerateContent" in path or "/batches" in path:
            parsed.batch = True
        parsed.state["sse"] = "alt=sse" in query

    def stream_format(self, parsed: Parsed, content_type: str) -> str | None:
        fmt = super().stream_format(parsed, content_type)
        if fmt is None and parsed.stream:
            return "sse" if parsed.state.get("sse") else "json-array"
        return fmt

    def read_body(self, parsed: Parsed, status: int, body: Any) -> None:
        if isinstance(body, list):  # an error or a whole stream delivered as one array
            for item in body:
                self.read_event(parsed, None, item)
            return
        if not isinstance(body, dict):
            return
        if "error" in body:
            self._read_error(parsed, body["error"])
            return
        self._read_chunk(parsed, body)

    def read_event(self, parsed: Parsed, event: str | None, data: Any) -> None:
        if not isinstance(data, dict):
            return
        if "error" in data:
            parsed.stream_error = True
            self._read_error(parsed, data["error"])
            return
        self._read_chunk(parsed, data)

    def _read_chunk(self, parsed: Parsed, chunk: dict[str, Any]) -> None:
        parsed.response_model = first_str(chunk.get("modelVersion")) or parsed.response_model
        parsed.response_id = first_str(chunk.get("responseId")) or parsed.response_id
        usage = read_gemini_usage(chunk.get("usageMetadata"))
        if usage is not None:
            parsed.usage = usage
        candidate = dig(chunk, "candidates", 0)
        if isinstance(candidate, dict):
            finish = first_str(candidate.get("finishReason"))
            if finish:
                parsed.finish_reason = finish
                parsed.stream_done = True
            for part in dig(candidate, "content", "parts") or ():
                if isinstance(dig(part, "text"), str):
                    parsed.output.append(part["text"])
                elif isinstance(dig(part, "functionCall"), dict):
                    parsed.output.append(str(part["functionCall"]))
        feedback = dig(chunk, "promptFeedback", "blockReason")
        if isinstance(feedback, str):
            parsed.finish_reason = feedback

    def _read_error(self, parsed: Parsed, error: Any) -> None:
        if isinstance(error, dict):
            code = first_str(error.get("status"))
            if code is None and error.get("code") is not None:
                code = str(error.get("code"))
            parsed.fail(code, first_str(error.get("message")))
        elif isinstance(error, str):
            parsed.fail(None, error)
