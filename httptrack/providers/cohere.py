"""Cohere: chat (v1 and v2), the legacy generate endpoint, embed (v1, v2) and rerank.

Surfaces (``api.cohere.com``, ``api.cohere.ai``):
- ``/v2/chat``: ``{"message": {"content": [...]}, "finish_reason", "usage"}``; streamed as
  SSE events ``message-start``, ``content-delta``, ``tool-call-delta`` ... ending with
  ``message-end``, whose ``delta`` holds the finish reason and the usage.
- ``/v1/chat`` (and ``/v1/generate``): ``{"text", "finish_reason", "meta"}``; streamed as
  ``application/stream+json``, one JSON object per line (``event_type``: ``stream-start``,
  ``text-generation`` ... ``stream-end``, whose ``response`` is the whole answer with its
  ``meta``).
- ``/v1/embed``, ``/v2/embed``: ``meta.billed_units.input_tokens`` (``images`` for images).
- ``/v1/rerank``, ``/v2/rerank``: billed per search (``meta.billed_units.search_units``);
  servers that copy the shape (vLLM, Jina) report ``usage.total_tokens`` instead.
- ``/compatibility/v1/chat/completions``: Cohere's OpenAI-compatible API, read by the OpenAI
  parser.

Usage, normalized: Cohere reports what it bills (``billed_units``: the prompt without the
system preamble and the template Cohere wraps around it) beside what the model read
(``tokens``). The billed figures are the call's tokens, as they are what the call costs; the
model's own count is used only when no billed figure is there.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .._usage import Usage
from .._vocab import Operation
from ._base import Parsed, Provider, as_int, dig, first_str, items, positive_int, shape_parser
from ._prompt import PromptTally

__all__ = ["Cohere", "read_cohere_usage"]

#: Finish reasons that say the answer failed (v1 ``ERROR``, ``ERROR_TOXIC``, ``ERROR_LIMIT``).
_ERROR_PREFIX = "ERROR"


def read_cohere_usage(raw: Any) -> Usage | None:
    """A v2 ``usage`` or v1 ``meta`` object normalized, or ``None`` when it has no figure."""
    if not isinstance(raw, dict):
        return None
    billed = raw.get("billed_units")
    tokens = raw.get("tokens")
    billed = billed if isinstance(billed, dict) else {}
    tokens = tokens if isinstance(tokens, dict) else {}
    input_tokens = as_int(billed.get("input_tokens"))
    if input_tokens is None:
        input_tokens = as_int(tokens.get("input_tokens"))
    output_tokens = as_int(billed.get("output_tokens"))
    if output_tokens is None:
        output_tokens = as_int(tokens.get("output_tokens"))
    extra: dict[str, int | float] = {}
    searches = as_int(billed.get("search_units"))
    if searches:
        extra["rerank_searches"] = searches  # genai-prices' name for them
    images = as_int(billed.get("images"))
    if images:
        extra["input_images"] = images
    if input_tokens is None and "total_tokens" in raw:  # a rerank server of Cohere's shape
        input_tokens = as_int(raw.get("total_tokens"))
    if input_tokens is None and output_tokens is None and not extra:
        return None
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens, extra=extra)


def _kind(path: str) -> str:
    """``chat`` | ``generate`` | ``embed`` | ``rerank`` | ``models`` | ``tokenize`` | ``other``."""
    path = path.rstrip("/")
    tail = path.rsplit("/", 1)[-1]
    if tail in ("chat", "generate", "embed", "rerank", "classify", "summarize"):
        return tail
    if tail in ("tokenize", "detokenize", "check-api-key"):
        return "tokenize"
    if path.endswith("/models") or "/models/" in path:
        return "models"
    return "other"


_OPERATIONS: dict[str, Operation] = {
    "chat": "chat",
    "generate": "completion",
    "summarize": "completion",
    "embed": "embeddings",
    "models": "models",
}


class Cohere(Provider):
    name = "cohere"
    hosts: ClassVar[tuple[str, ...]] = ("api.cohere.com", "api.cohere.ai")
    price_provider: ClassVar[str | None] = "cohere"
    request_id_headers = ("x-request-id", "x-debug-trace-id")
    #: v2 streams end with ``message-end`` and then, as recorded, ``data: [DONE]``.
    stream_end_markers = frozenset({"[DONE]"})

    def operation(self, method: str, path: str) -> Operation:
        parser = self.parser_for(method, path)
        if parser is not self:
            return parser.operation(method, path)
        return _OPERATIONS.get(_kind(path), "other")

    def parser_for(self, method: str, path: str) -> Provider:
        # Cohere's OpenAI-compatible API (/compatibility/v1/chat/completions, /embeddings).
        if path.rstrip("/").endswith(("/chat/completions", "/embeddings")):
            return shape_parser("openai")
        return self

    def read_request(self, parsed: Parsed, method: str, path: str, query: str, body: Any) -> None:
        super().read_request(parsed, method, path, query, body)
        kind = _kind(path)
        parsed.state["kind"] = kind
        parsed.state["v1"] = "/v1/" in path
        if kind in ("rerank", "classify"):
            parsed.billed = True
        elif kind == "tokenize":
            parsed.billed = False

    def stream_format(self, parsed: Parsed, content_type: str) -> str | None:
        if content_type.startswith("application/stream+json"):  # v1 streams: one object a line
            return "ndjson"
        return super().stream_format(parsed, content_type)

    # -- whole bodies -------------------------------------------------------------------

    def read_body(self, parsed: Parsed, status: int, body: Any) -> None:
        if not isinstance(body, dict):
            return
        if status >= 400:
            self._read_error(parsed, body)
            return
        self._read_answer(parsed, body)

    def _read_answer(self, parsed: Parsed, body: dict[str, Any]) -> None:
        """A whole answer: a response body, or v1's ``stream-end`` ``response``."""
        parsed.response_id = (
            first_str(body.get("id")) or first_str(body.get("response_id")) or parsed.response_id
        )
        usage = read_cohere_usage(body.get("usage")) or read_cohere_usage(body.get("meta"))
        if usage is not None:
            parsed.usage = usage
            parsed.usage_final = True
        reason = first_str(body.get("finish_reason"))
        if reason:
            parsed.finish_reason = reason
            if reason.startswith(_ERROR_PREFIX):
                parsed.stream_error = parsed.stream
                parsed.fail(reason.lower(), first_str(body.get("error")))
        if parsed.stream:
            return  # the text arrived as deltas
        text = body.get("text")
        if isinstance(text, str):  # v1 chat
            parsed.output.append(text)
        for generation in items(body.get("generations")):  # v1 generate
            if isinstance(dig(generation, "text"), str):
                parsed.output.append(generation["text"])
        message = body.get("message")
        if isinstance(message, dict):  # v2 chat
            self._take_message(parsed, message)

    def _take_message(self, parsed: Parsed, message: dict[str, Any]) -> None:
        for part in items(message.get("content")):
            for key in ("text", "thinking"):
                if isinstance(dig(part, key), str):
                    parsed.output.append(part[key])
        if isinstance(message.get("tool_plan"), str):
            parsed.output.append(message["tool_plan"])
        for call in items(message.get("tool_calls")):
            function = dig(call, "function")
            if isinstance(function, dict):
                parsed.output.append(str(function.get("name") or "") + str(function.get("arguments") or ""))

    def _read_error(self, parsed: Parsed, body: dict[str, Any]) -> None:
        message = first_str(body.get("message")) or first_str(body.get("error"))
        parsed.fail(first_str(body.get("code")) or first_str(body.get("type")), message)

    # -- streams --------------------------------------------------------------------------

    def read_event(self, parsed: Parsed, event: str | None, data: Any) -> None:
        if not isinstance(data, dict):
            return
        kind = data.get("type") or data.get("event_type") or event
        if kind == "content-delta" or kind == "tool-plan-delta":  # v2
            delta = dig(data, "delta", "message")
            text = dig(delta, "content", "text")
            if not isinstance(text, str):
                text = dig(delta, "content", "thinking")
            if not isinstance(text, str):
                text = dig(delta, "tool_plan")
            if isinstance(text, str):
                parsed.output.append(text)
        elif kind == "tool-call-delta" or kind == "tool-call-start":
            function = dig(data, "delta", "message", "tool_calls", "function")
            if isinstance(function, dict):
                parsed.output.append(str(function.get("name") or "") + str(function.get("arguments") or ""))
        elif kind == "text-generation":  # v1
            if isinstance(data.get("text"), str):
                parsed.output.append(data["text"])
        elif kind == "message-start" or kind == "stream-start":
            parsed.response_id = first_str(data.get("id")) or first_str(data.get("generation_id"))
        elif kind == "message-end":  # v2: the last event
            delta = data.get("delta")
            if isinstance(delta, dict):
                self._read_end(parsed, delta, delta.get("usage"))
            parsed.stream_done = parsed.complete = True
        elif kind == "stream-end":  # v1: the last line, with the whole answer
            response = data.get("response")
            if isinstance(response, dict):
                self._read_answer(parsed, response)
            self._read_end(parsed, data, None)
            parsed.stream_done = parsed.complete = True
        elif kind == "error" or (data.get("message") and not kind):
            parsed.stream_error = True
            self._read_error(parsed, data)

    def _read_end(self, parsed: Parsed, end: dict[str, Any], usage: Any) -> None:
        """The figures a stream ends with, kept whatever the finish reason (an ``ERROR``
        still reports the tokens it billed)."""
        found = read_cohere_usage(usage)
        if found is not None:
            parsed.usage = found
            parsed.usage_final = True
        reason = first_str(end.get("finish_reason"))
        if reason:
            parsed.finish_reason = reason
            if reason.startswith(_ERROR_PREFIX):
                parsed.stream_error = True
                error = end.get("error")
                parsed.fail(reason.lower(), first_str(error) or first_str(dig(error, "message")))

    # -- estimates and limits -----------------------------------------------------------

    def count_prompt(self, tally: PromptTally, operation: str, body: dict[str, Any]) -> None:
        if isinstance(body.get("messages"), list):  # v2 chat: OpenAI's message shape
            shape_parser("openai").count_prompt(tally, operation, body)
            return
        if isinstance(body.get("message"), str):  # v1 chat
            tally.found = True
            tally.text(body.get("preamble"))
            for turn in items(body.get("chat_history")):
                if isinstance(turn, dict):
                    tally.text(turn.get("message"))
            tally.text(body["message"])
        elif "texts" in body:  # embed
            tally.prompt(body.get("texts"))
        elif "prompt" in body:  # generate
            tally.prompt(body.get("prompt"))

    def max_output(self, body: dict[str, Any]) -> tuple[int | None, int]:
        return positive_int(body.get("max_tokens")), max(positive_int(body.get("num_generations")) or 1, 1)

    def limit_error(self, message: str, code: str, metric: str) -> dict[str, Any]:
        return {"id": code, "message": message}
