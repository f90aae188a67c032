"""Anthropic: the Messages API (plain and streaming), token counting, model lists, message
batches (creation is free; the results file carries every request's usage, at batch prices),
and the legacy text completions API.

Usage, normalized: Anthropic's ``input_tokens`` counts only the *uncached* input, with
``cache_read_input_tokens`` and ``cache_creation_input_tokens`` reported beside it; all three
are billed input, so ``input_tokens`` here is their sum, with the cache figures kept as
breakdowns (priced at the cache-read and cache-write rates, never as plain input, never
twice). Thinking tokens are already inside ``output_tokens``.

Streams: ``message_start`` carries the input figures and a provisional ``output_tokens``;
each ``message_delta`` carries cumulative figures that replace earlier ones (recent API
versions repeat the input figures there too). An ``error`` event ends the stream in error.

The same parser reads Anthropic's API wherever it is served: on Vertex AI (model in the
path), Azure AI Foundry, and the Anthropic-compatible endpoints of Ollama, xAI or a LiteLLM
proxy (see ``Provider.parser_for``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from .._usage import Usage
from .._vocab import Operation
from ._base import Parsed, Provider, add_shape, as_int, dig, first_str, items, positive_int
from ._batch import add_batch_result, finish_batch_results, is_batch_results
from ._prompt import PromptTally

__all__ = ["Anthropic", "read_anthropic_usage"]

_USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def read_anthropic_usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    uncached = as_int(raw.get("input_tokens"))
    output = as_int(raw.get("output_tokens"))
    cache_read = as_int(raw.get("cache_read_input_tokens"))
    cache_write = as_int(raw.get("cache_creation_input_tokens"))
    if uncached is None and output is None and cache_read is None and cache_write is None:
        return None
    input_tokens = None
    if uncached is not None or cache_read is not None or cache_write is not None:
        input_tokens = (uncached or 0) + (cache_read or 0) + (cache_write or 0)
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output,
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
    )
    # One-hour cache writes cost more than five-minute ones: keep the split for pricing.
    one_hour = as_int(dig(raw, "cache_creation", "ephemeral_1h_input_tokens"))
    if one_hour:
        usage.extra["cache_write_1h_tokens"] = one_hour
        usage.extra["cache_write_5m_tokens"] = max((cache_write or 0) - one_hour, 0)
    searches = as_int(dig(raw, "server_tool_use", "web_search_requests"))
    if searches:
        usage.extra["web_searches"] = searches
    usage.reasoning_tokens = as_int(dig(raw, "output_tokens_details", "thinking_tokens"))
    return usage


#: The speed billed at the standard price (``fast`` has prices of its own).
_STANDARD_SPEED = "standard"


class Anthropic(Provider):
    name = "anthropic"
    hosts: ClassVar[tuple[str, ...]] = ("api.anthropic.com",)
    request_id_headers = ("request-id", "x-request-id")
    cache_key_headers = frozenset({b"anthropic-beta", b"anthropic-version"})
    price_provider: ClassVar[str | None] = "anthropic"
    batch_discount: ClassVar[float | None] = 0.5

    def operation(self, method: str, path: str) -> Operation:
        path = path.rstrip("/")
        if path.endswith(("/messages", ":rawPredict", ":streamRawPredict")):
            return "chat"
        if path.endswith("/complete"):
            return "completion"
        if path.endswith("/models") or ("/models/" in path and ":" not in path.rpartition("/")[2]):
            return "models"
        return "other"  # count_tokens, message batches, files ...

    def cacheable(self, method: str, path: str, operation: str) -> bool:
        if operation == "other":  # token counting: free and read-only; never batches or files
            return method == "POST" and path.rstrip("/").endswith("/messages/count_tokens")
        return super().cacheable(method, path, operation)

    def max_output(self, body: dict[str, Any]) -> tuple[int | None, int]:
        return positive_int(body.get("max_tokens")), 1  # thinking included

    def limit_error(self, message: str, code: str, metric: str) -> dict[str, Any]:
        return {"type": "error", "error": {"type": "rate_limit_error", "message": message}}

    def read_request(self, parsed: Parsed, method: str, path: str, query: str, body: Any) -> None:
        super().read_request(parsed, method, path, query, body)
        if parsed.model is None and "/models/" in path:
            # Vertex AI and Bedrock name the model in the path: .../models/claude-...:rawPredict
            model = path.rpartition("/models/")[2].partition(":")[0]
            parsed.model = model or None
            parsed.stream = parsed.stream or path.endswith(":streamRawPredict")
        if isinstance(body, dict):
            parsed.user = first_str(dig(body, "metadata", "user_id"))
            _take_speed(parsed, body.get("speed"))  # as requested; the response's usage.speed wins
        path = path.rstrip("/")
        if "/batches" in path:
            parsed.batch = True
            parsed.billed = False  # creating, listing or cancelling a batch costs nothing
            parsed.state["results"] = path.endswith("/results")
        elif path.endswith("/count_tokens") or parsed.operation == "models":
            parsed.billed = False

    def stream_format(self, parsed: Parsed, content_type: str) -> str | None:
        if parsed.state.get("results"):
            return "ndjson"  # served as application/binary (.jsonl)
        return super().stream_format(parsed, content_type)

    def read_body(self, parsed: Parsed, status: int, body: Any) -> None:
        if not isinstance(body, dict):
            return
        if body.get("type") == "error" or status >= 400:
            self._read_error(parsed, body)
            return
        if body.get("type") in ("message_batch", "model") or parsed.billed is False:
            parsed.response_id = first_str(body.get("id"))
            return
        self._read_message(parsed, body)
        for block in items(body.get("content")):
            self._take_block_text(parsed, block)
        if isinstance(body.get("completion"), str):  # legacy text completions
            parsed.output.append(body["completion"])

    def _read_message(self, parsed: Parsed, message: dict[str, Any]) -> None:
        parsed.response_model = first_str(message.get("model")) or parsed.response_model
        parsed.response_id = first_str(message.get("id")) or parsed.response_id
        parsed.finish_reason = first_str(message.get("stop_reason")) or parsed.finish_reason
        raw = message.get("usage")
        if isinstance(raw, dict):
            parsed.state["usage"] = {**parsed.state.get("usage", {}), **_present(raw)}

    def _take_block_text(self, parsed: Parsed, block: Any) -> None:
        if not isinstance(block, dict):
            return
        for key in ("text", "thinking"):
            if isinstance(block.get(key), str):
                parsed.output.append(block[key])
        if block.get("type") in ("tool_use", "server_tool_use") and block.get("input") is not None:
            parsed.output.append(str(block.get("name") or "") + str(block["input"]))

    def _read_error(self, parsed: Parsed, body: dict[str, Any]) -> None:
        error = body.get("error") if isinstance(body.get("error"), dict) else body
        parsed.fail(first_str(dig(error, "type")), first_str(dig(error, "message")))

    def read_event(self, parsed: Parsed, event: str | None, data: Any) -> None:
        if not isinstance(data, dict):
            return
        if parsed.state.get("results"):
            self._read_result_line(parsed, data)
            return
        kind = data.get("type") or event
        if kind == "message_start" and isinstance(data.get("message"), dict):
            self._read_message(parsed, data["message"])
        elif kind == "content_block_start":
            self._take_block_text(parsed, data.get("content_block"))
        elif kind == "content_block_delta":
            delta = data.get("delta")
            if isinstance(delta, dict):
                for key in ("text", "thinking", "partial_json"):
                    if isinstance(delta.get(key), str):
                        parsed.output.append(delta[key])
        elif kind == "message_delta":
            parsed.finish_reason = first_str(dig(data, "delta", "stop_reason")) or parsed.finish_reason
            raw = data.get("usage")
            if isinstance(raw, dict):
                # Cumulative figures: later values replace earlier ones key by key.
                parsed.state["usage"] = {**parsed.state.get("usage", {}), **_present(raw)}
                parsed.usage_final = True
        elif kind == "message_stop":
            parsed.stream_done = parsed.complete = True
        elif kind == "completion":  # legacy text completions stream
            if isinstance(data.get("completion"), str):
                parsed.output.append(data["completion"])
            parsed.finish_reason = first_str(data.get("stop_reason")) or parsed.finish_reason
            if data.get("stop_reason"):
                parsed.stream_done = parsed.complete = True
        elif kind == "error":
            parsed.stream_error = True
            self._read_error(parsed, data)

    def _read_result_line(self, parsed: Parsed, line: dict[str, Any]) -> None:
        """One line of a batch's results: ``{"custom_id", "result": {"type": "succeeded",
        "message": {...}}}`` (errored, canceled and expired requests are not billed)."""
        message = dig(line, "result", "message")
        if dig(line, "result", "type") != "succeeded" or not isinstance(message, dict):
            return
        add_batch_result(parsed, first_str(message.get("model")), read_anthropic_usage(message.get("usage")))

    def finish(self, parsed: Parsed) -> None:
        if is_batch_results(parsed):
            finish_batch_results(parsed)
            return
        raw = parsed.state.get("usage")
        usage = read_anthropic_usage(raw)
        if usage is not None:
            parsed.usage = usage
        if isinstance(raw, dict):
            if raw.get("service_tier") == "batch":
                parsed.batch = True
            _take_speed(parsed, raw.get("speed"))  # the speed it actually ran (and is billed) at

    def count_prompt(self, tally: PromptTally, operation: str, body: dict[str, Any]) -> None:
        # Text only: Claude's tokenizer and its message framing are not public.
        if "messages" in body:
            tally.content(body.get("system"), _count_part)
            messages = body.get("messages")
            if isinstance(messages, list):
                for message in messages:
                    if isinstance(message, dict):
                        tally.found = True
                        tally.content(message.get("content"), _count_part)
            tools = body.get("tools")
            if isinstance(tools, list):
                for tool in tools:
                    if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                        tally.text(tool["name"])
                        tally.text(tool.get("description"))
                        tally.json(tool.get("input_schema"))
        elif "prompt" in body:  # legacy text completions
            tally.prompt(body.get("prompt"))


def _take_speed(parsed: Parsed, speed: Any) -> None:
    """Fast mode (``speed: "fast"``) has prices of its own; a later value replaces an earlier one."""
    if isinstance(speed, str) and speed:
        parsed.price_tier = None if speed == _STANDARD_SPEED else ("speed", speed)


def _count_part(tally: PromptTally, part: dict[str, Any], depth: int) -> None:
    """One content block: text, an image, a tool call, a tool result (its own content), a
    document with a plain-text or content-block source. Thinking is not counted."""
    ptype = part.get("type")
    if isinstance(part.get("text"), str):
        tally.text(part["text"])
    elif ptype == "image":
        tally.images()
    elif ptype in ("tool_use", "server_tool_use"):
        tally.text(part.get("name"))
        tally.json(part.get("input"))
    elif isinstance(ptype, str) and ptype.endswith("tool_result"):
        tally.content(part.get("content"), _count_part, depth + 1)
    elif ptype == "document":
        source = part.get("source")
        if isinstance(source, dict) and source.get("type") == "text":
            tally.text(source.get("data"))
        elif isinstance(source, dict) and source.get("type") == "content":
            tally.content(source.get("content"), _count_part, depth + 1)


def _present(raw: dict[str, Any]) -> dict[str, Any]:
    """The keys of a usage object that carry a value (``null`` never erases a figure)."""
    return {k: v for k, v in raw.items() if v is not None}


#: The reader of Anthropic's API shape wherever another family's host serves it.
add_shape("anthropic", Anthropic())
