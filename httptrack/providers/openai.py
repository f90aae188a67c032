"""OpenAI, and the parser every OpenAI-compatible API shares.

Surfaces: chat completions (``/chat/completions``), the Responses API (``/responses``),
legacy completions (``/completions``), embeddings, model lists, images (generations, edits,
variations), audio (transcriptions, translations, speech), moderations, and the output
files of the Batch API; plain JSON and SSE.

Usage, normalized:
- chat/completions/embeddings: ``prompt_tokens`` → input (OpenAI's count already includes
  ``prompt_tokens_details.cached_tokens``); ``completion_tokens`` → output (already includes
  ``completion_tokens_details.reasoning_tokens``). Some compatible APIs (xAI) report the
  reasoning tokens *beside* ``completion_tokens``; their ``total_tokens`` gives it away
  (prompt + completion + reasoning) and the reasoning is then added to the output.
- Responses API, images and token-billed transcriptions: ``input_tokens`` / ``output_tokens``
  with ``input_tokens_details.cached_tokens`` and ``output_tokens_details.reasoning_tokens``,
  in the body or in the stream's closing event (``response.completed``,
  ``image_generation.completed``, ``transcript.text.done``).
- Streams: the usage chunk (``stream_options.include_usage``: a last chunk with
  ``choices: []``), or usage carried on the finish-reason chunk (several compatible
  providers), or Groq's ``x_groq.usage``; a later figure supersedes an earlier one, figure
  by figure.
- Costs some providers report themselves (OpenRouter ``usage.cost``, xAI
  ``cost_in_usd_ticks``, Perplexity ``usage.cost.total_cost``) are kept as reported.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, ClassVar

from .._usage import Usage
from .._vocab import Operation
from ._base import (
    Parsed,
    Provider,
    add_shape,
    all_choices_finished,
    as_int,
    choice_finished,
    dig,
    expect_choices,
    first_str,
    items,
    json_object,
    merge_usage,
    positive_int,
    shape_parser,
)
from ._batch import add_batch_result, finish_batch_results, is_batch_results
from ._openai_chunks import chunk_reader, take_tier, take_tool_calls
from ._prompt import PromptTally, dumps

__all__ = [
    "INCLUDE_USAGE",
    "OpenAI",
    "OpenAICompatible",
    "count_chat",
    "count_tools",
    "endpoint_kind",
    "read_openai_usage",
    "read_reported_cost",
    "with_include_usage",
]

#: What each kind of endpoint counts as in the ``operation`` column.
_OPERATIONS: dict[str, Operation] = {
    "chat": "chat",
    "responses": "chat",
    "completion": "completion",
    "embeddings": "embeddings",
    "models": "models",
}
#: Endpoints billed without being generations (their usage, when reported, is priced) and
#: endpoints that are free whatever they return.
_BILLED = {
    "images": True,
    "audio": True,
    "moderations": False,
    "batches": False,
    "files": False,
    "response_item": False,
    "models": False,
}

# xAI reports cost in "ticks" of 1e-10 USD (checked against its own prices: 739000 ticks for
# 1 + 164 cached input and 2 + 129 reasoning output tokens of grok-4-fast is $0.0000739).
# Divided (correctly rounded: 739000 -> 7.39e-05), not multiplied by 1e-10 (7.390000000000001e-05).
_XAI_TICKS_PER_USD = 10_000_000_000

#: A Responses API object's status while a background job is still running: a 200 that is
#: not the answer (never stored in the response cache).
_RUNNING = frozenset({"queued", "in_progress"})


def endpoint_kind(path: str) -> str:
    """What an OpenAI-style path is: ``chat`` | ``responses`` | ``response_item`` |
    ``completion`` | ``embeddings`` | ``models`` | ``images`` | ``audio`` | ``moderations`` |
    ``batches`` | ``files`` | ``other``. Matched on the path's end, so any prefix works
    (``/v1``, ``/openai/v1``, ``/openai/deployments/{name}``, ``/api/v1``, ``/inference/v1``)."""
    path = path.rstrip("/")
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/responses"):
        return "responses"
    if "/responses/" in path:
        return "response_item"  # retrieve, cancel, input_items, input_tokens
    if path.endswith("/completions"):
        return "completion"
    if path.endswith("/embeddings"):
        return "embeddings"
    if path.endswith("/moderations"):
        return "moderations"
    if "/images/" in path:
        return "images"
    if "/audio/" in path:
        return "audio"
    if path.endswith("/models") or "/models/" in path:
        return "models"
    if "/batches" in path:
        return "batches"
    if "/files" in path:
        return "files"
    return "other"


#: Stands in for a ``*_details`` object that is missing or not an object: every lookup in it
#: gives ``None``, as ``dig`` would. Never written to.
_NO_DETAILS: dict[str, Any] = {}


def read_openai_usage(raw: Any) -> Usage | None:
    """Normalize an OpenAI-style ``usage`` object (chat, completions, embeddings, Responses
    API, images or transcriptions naming). ``None`` when ``raw`` carries no token figure."""
    if not isinstance(raw, dict):
        return None
    # Read once per row for every call: plain ``get``s on the object and its details (a
    # details value that is not an object reads as empty), ``as_int`` only on what is there.
    get = raw.get
    if "input_tokens" in raw or "output_tokens" in raw:  # Responses API / images / audio naming
        input_tokens = as_int(get("input_tokens"))
        output_tokens = as_int(get("output_tokens"))
        input_details = get("input_tokens_details") or get("input_token_details")
        output_details = get("output_tokens_details") or get("output_token_details")
    else:
        input_tokens = as_int(get("prompt_tokens"))
        output_tokens = as_int(get("completion_tokens"))
        input_details = get("prompt_tokens_details")
        output_details = get("completion_tokens_details")
    if input_tokens is None and output_tokens is None:
        return None
    if not isinstance(input_details, dict):
        input_details = _NO_DETAILS
    if not isinstance(output_details, dict):
        output_details = _NO_DETAILS
    reasoning = as_int(output_details.get("reasoning_tokens"))
    if reasoning is None:
        reasoning = as_int(get("reasoning_tokens"))  # Perplexity puts it at the top level
    if reasoning and output_tokens is not None:
        total = as_int(get("total_tokens"))
        if total is not None and total == (input_tokens or 0) + output_tokens + reasoning:
            # Reported beside the completion tokens, not inside them (xAI): every one is billed.
            output_tokens += reasoning
    cached = as_int(input_details.get("cached_tokens"))
    if cached is None:
        cached = as_int(get("prompt_cache_hit_tokens"))  # DeepSeek's naming
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=as_int(input_details.get("cache_write_tokens")),  # OpenRouter
        reasoning_tokens=reasoning,
    )
    if input_details or output_details:
        extra = usage.extra
        for name, value in (
            ("input_audio_tokens", input_details.get("audio_tokens")),
            ("output_audio_tokens", output_details.get("audio_tokens")),
            ("input_image_tokens", input_details.get("image_tokens")),
            ("output_image_tokens", output_details.get("image_tokens")),
        ):
            if value is not None:
                value = as_int(value)
                if value:
                    extra[name] = value
    return usage


def read_reported_cost(raw: Any) -> float | None:
    """The cost a provider put in its ``usage`` object, in USD, or ``None``."""
    if not isinstance(raw, dict):
        return None
    ticks = raw.get("cost_in_usd_ticks")  # xAI
    if isinstance(ticks, int) and not isinstance(ticks, bool) and ticks >= 0:
        return ticks / _XAI_TICKS_PER_USD
    cost = raw.get("cost")
    if isinstance(cost, dict):  # Perplexity: {"input_tokens_cost", ..., "total_cost"}
        cost = cost.get("total_cost")
    if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0:
        total = float(cost)
        # OpenRouter with the user's own provider key: its fee plus what the upstream billed.
        upstream = dig(raw, "cost_details", "upstream_inference_cost")
        if raw.get("is_byok") is True and isinstance(upstream, int | float) and upstream is not True:
            total += float(upstream)
        return total
    return None


# -- asking a stream for its usage --------------------------------------------------------

#: What :func:`with_include_usage` adds, as the ``parse_notes`` entry names it.
INCLUDE_USAGE = "stream_options.include_usage"
_OPTION = b'"stream_options":{"include_usage":true},'
# A top-level-looking `"stream": true`: a cheap test before parsing the body at all.
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
# Bodies larger than this are sent untouched (parsing them on the app's thread costs).
_MAX_EDITED_BODY = 4 * 1024 * 1024


def with_include_usage(body: bytes) -> bytes | None:
    """``body`` with ``stream_options.include_usage`` set, or ``None`` when it needs no change
    (not a streaming request, usage already asked for, not a JSON object, too large).

    A chat completions stream reports its usage only when asked this way. The body is edited
    in place (the option inserted after the opening brace) so everything the app wrote
    keeps its bytes; when it already has a ``stream_options`` object without
    ``include_usage``, that object is extended instead."""
    if len(body) > _MAX_EDITED_BODY or body.lstrip()[:1] != b"{" or _STREAM_TRUE.search(body) is None:
        return None  # (a UTF-16 or UTF-32 body starts otherwise: never edited byte-wise)
    try:
        data: Any = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to decode
        return None
    if not isinstance(data, dict) or data.get("stream") is not True:
        return None
    options = data.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None  # the app asked for usage itself: nothing to add, nothing to hide
    if "stream_options" not in data:
        start = body.index(b"{") + 1
        rest = body[start:].lstrip()
        if rest.startswith(b"}"):
            return None  # an empty object cannot be streaming
        return body[:start] + _OPTION + body[start:]
    # Rare: an options object without include_usage (or include_usage false/null). JSON
    # keeps the last of duplicate keys in some parsers and the first in others, so the body
    # is written anew rather than given a second "stream_options".
    merged = dict(options) if isinstance(options, dict) else {}
    merged["include_usage"] = True
    data["stream_options"] = merged
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


# -- counting a prompt --------------------------------------------------------------------

# The constants of OpenAI's cookbook ("How to count tokens with tiktoken") for tool
# definitions (func_init, prop_init, prop_key, enum_init, enum_item, func_end), measured by
# OpenAI for gpt-4o/gpt-4o-mini (o200k_base) and gpt-3.5/gpt-4 (cl100k_base).
_TOOL_CONSTANTS: dict[str, tuple[int, int, int, int, int, int]] = {
    "o200k_base": (7, 3, 3, -3, 3, 12),
    "cl100k_base": (10, 3, 3, -3, 3, 12),
}


def _count_part(tally: PromptTally, part: dict[str, Any], depth: int) -> None:
    """One content part: text (``text``, ``input_text``, ``output_text``), a refusal, an image."""
    if isinstance(part.get("text"), str):
        tally.text(part["text"])
    elif isinstance(part.get("refusal"), str):
        tally.text(part["refusal"])
    elif part.get("type") in ("image_url", "input_image"):
        tally.images()


def _count_function_call(tally: PromptTally, fn: Any) -> None:
    if isinstance(fn, dict):
        tally.text(fn.get("name"))
        tally.json(fn.get("arguments"))


def _count_message(tally: PromptTally, message: Any) -> None:
    """One chat message by the cookbook formula: 3 tokens, its role, its content, +1 for a
    ``name``, the function name and arguments of its tool calls."""
    if not isinstance(message, dict):
        return
    tally.found = True
    tally.total += 3  # <|start|>{role/name}\n{content}<|end|>\n
    tally.text(message.get("role"))
    tally.content(message.get("content"), _count_part)
    name = message.get("name")
    if isinstance(name, str):
        tally.text(name)
        tally.total += 1
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            if isinstance(call, dict):
                _count_function_call(tally, call.get("function"))
    _count_function_call(tally, message.get("function_call"))


def count_chat(tally: PromptTally, messages: Any) -> None:
    """Chat ``messages`` by the cookbook formula (each message, +3 priming the reply)."""
    if isinstance(messages, list) and any(isinstance(m, dict) for m in messages):
        for message in messages:
            _count_message(tally, message)
        tally.total += 3  # every reply is primed with <|start|>assistant<|message|>


def count_tools(tally: PromptTally, tools: Any) -> None:
    """Function tool definitions (chat's nested or the Responses API's flat shape) by the
    cookbook's ``num_tokens_for_tools``. Built-in tools have no definition to count."""
    if not isinstance(tools, list):
        return
    func_init, prop_init, prop_key, enum_init, enum_item, func_end = _TOOL_CONSTANTS.get(
        tally.encoding, _TOOL_CONSTANTS["o200k_base"]
    )
    seen = False
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        nested = tool.get("function")
        fn: dict[str, Any] = nested if isinstance(nested, dict) else tool
        name = fn.get("name")
        if not isinstance(name, str):
            continue  # built-in tools (web_search, ...) have no definition to count
        seen = tally.found = True
        tally.total += func_init
        tally.text(f"{name}:{_str(fn.get('description')).removesuffix('.')}")
        params = fn.get("parameters")
        props = params.get("properties") if isinstance(params, dict) else None
        if not isinstance(props, dict) or not props:
            continue
        tally.total += prop_init
        for key, value in props.items():
            tally.total += prop_key
            prop: dict[str, Any] = value if isinstance(value, dict) else {}
            enum = prop.get("enum")
            if isinstance(enum, list):
                tally.total += enum_init
                for item in enum:
                    tally.total += enum_item
                    tally.text(item if isinstance(item, str) else dumps(item))
            ptype = prop.get("type")
            ptype = ptype if isinstance(ptype, str) else dumps(ptype) or ""
            pdesc = _str(prop.get("description")).removesuffix(".")
            tally.text(f"{key}:{ptype}:{pdesc}")
    if seen:
        tally.total += func_end


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _count_responses_input(tally: PromptTally, body: dict[str, Any]) -> None:
    """A Responses API request: ``instructions`` (a developer message) and ``input`` (a
    string, or items: messages, function calls and their outputs) by the chat formula,
    and its tools."""
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        _count_message(tally, {"role": "developer", "content": instructions})
    inp = body.get("input")
    if isinstance(inp, str):
        _count_message(tally, {"role": "user", "content": inp})
    elif isinstance(inp, list):
        for item in inp:
            if isinstance(item, str):
                _count_message(tally, {"role": "user", "content": item})
            elif not isinstance(item, dict):
                continue
            elif "role" in item or item.get("type") == "message":
                _count_message(tally, item)
            elif item.get("type") in ("function_call", "custom_tool_call"):
                tally.total += 3
                tally.found = True
                tally.text(item.get("name"))
                tally.json(item.get("arguments", item.get("input")))
            elif item.get("type") in ("function_call_output", "custom_tool_call_output"):
                tally.total += 3
                tally.found = True
                tally.content(item.get("output"), _count_part)
            # reasoning items, item references, ...: not counted
    if tally.found:
        tally.total += 3
    count_tools(tally, body.get("tools"))


class OpenAICompatible(Provider):
    """Any API speaking OpenAI's wire format. Subclasses only change ``name``/``hosts``
    (and, where verified, :meth:`include_usage`)."""

    name: ClassVar[str] = "generic"
    cache_key_headers = frozenset({b"openai-beta", b"openai-organization", b"openai-project"})
    stream_end_markers = frozenset({"[DONE]"})
    usage_option = INCLUDE_USAGE

    def operation(self, method: str, path: str) -> Operation:
        parser = self.parser_for(method, path)
        if parser is not self:
            return parser.operation(method, path)
        return _OPERATIONS.get(endpoint_kind(path), "other")

    def parser_for(self, method: str, path: str) -> Provider:
        path = path.rstrip("/")
        # A proxy or server that also speaks Anthropic's Messages API on the same host
        # (Ollama, xAI, LiteLLM, Azure AI Foundry ...); OpenAI's own Assistants API has
        # /threads/{id}/messages, which is not this.
        if path.endswith(("/v1/messages", "/v1/messages/count_tokens")) and "/threads/" not in path:
            return shape_parser("anthropic")
        if path.endswith("/graphql"):
            return shape_parser("graphql")
        return self

    def max_output(self, body: dict[str, Any]) -> tuple[int | None, int]:
        most = None
        for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):  # Responses API: the last
            most = positive_int(body.get(name))
            if most is not None:
                break
        # Legacy completions bill every one of best_of candidates.
        return most, max(positive_int(body.get("n")) or 1, positive_int(body.get("best_of")) or 1)

    def limit_error(self, message: str, code: str, metric: str) -> dict[str, Any]:
        # OpenAI's own types: insufficient_quota for a spent quota, requests/tokens for limits.
        kind = {"usd": "insufficient_quota"}.get(metric, metric)
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def cacheable(self, method: str, path: str, operation: str) -> bool:
        if operation == "other":  # moderations: free and read-only, worth answering locally
            return method == "POST" and path.rstrip("/").endswith("/moderations")
        return super().cacheable(method, path, operation)

    def cacheable_request(self, method: str, path: str, body: bytes) -> bool:
        # Responses API calls that change state on the server: one adding to a stored
        # conversation (a repeat must be appended again), one starting a background job.
        # (The path first: scanning a long chat body for the words costs more.)
        if endpoint_kind(path) == "responses" and (b'"conversation"' in body or b'"background"' in body):
            data = json_object(body)
            if data is not None:
                return data.get("conversation") is None and data.get("background") is not True
        return True

    def ask_for_usage(self, body: bytes) -> bytes | None:
        return with_include_usage(body)

    def is_usage_chunk(self, data: Any) -> bool:
        # The usage chunk: no choices, a usage object.
        return isinstance(data, dict) and not data.get("choices") and isinstance(data.get("usage"), dict)

    def read_request(self, parsed: Parsed, method: str, path: str, query: str, body: Any) -> None:
        super().read_request(parsed, method, path, query, body)
        kind = endpoint_kind(path)
        parsed.state["kind"] = kind
        if kind in _BILLED:
            parsed.billed = _BILLED[kind]
        if isinstance(body, dict):
            parsed.user = first_str(body.get("user")) or first_str(body.get("safety_identifier"))
            _take_service_tier(parsed, body)  # as requested; the response's word replaces it
            if kind == "audio" and path.rstrip("/").endswith("/audio/speech"):
                # Text to speech (tts-1, tts-1-hd) is billed by the characters of the input;
                # the response is the audio alone.
                text = body.get("input")
                if isinstance(text, str):
                    parsed.usage = Usage(extra={"input_characters": len(text)})
            if parsed.stream:
                # What a whole stream ends with (see finish): every choice's finish reason,
                # then the usage chunk when the app asked for it.
                expect_choices(parsed, body.get("n"))
                parsed.state["usage_asked"] = dig(body, "stream_options", "include_usage") is True
        if kind in ("batches",) or "/batch" in path:
            parsed.batch = True

    def stream_format(self, parsed: Parsed, content_type: str) -> str | None:
        if parsed.state.get("kind") == "files" and not content_type.startswith("application/json"):
            # A file's content: the output file of a batch is JSON Lines, whatever its type says.
            return "ndjson"
        return super().stream_format(parsed, content_type)

    # -- whole bodies -------------------------------------------------------------------

    def read_body(self, parsed: Parsed, status: int, body: Any) -> None:
        if not isinstance(body, dict):
            return
        if status >= 400 or ("error" in body and body.get("error")):
            self._read_error(parsed, body.get("error", body))
            return
        if parsed.state.get("kind") == "response_item":
            # A stored response read back: its usage was counted when it was created.
            parsed.response_id = first_str(body.get("id"))
            return
        parsed.response_model = first_str(body.get("model")) or parsed.response_model
        parsed.response_id = first_str(body.get("id")) or parsed.response_id
        _take_service_tier(parsed, body)
        usage = body.get("usage")
        self._take_usage(parsed, usage)
        if body.get("object") == "response" or ("output" in body and "choices" not in body):
            self._read_response_object(parsed, body)
            return
        choices = body.get("choices")
        if "choices" not in body and isinstance(body.get("text"), str):
            parsed.output.append(body["text"])  # a transcription
        if isinstance(usage, dict) and usage.get("type") == "duration":
            # whisper-1 and the like bill the audio's length: genai-prices prices audio_seconds
            # (its input_audio_seconds part is inside it, and must come with it).
            seconds = usage.get("seconds")
            if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
                parsed.usage = Usage(extra={"audio_seconds": seconds, "input_audio_seconds": seconds})
        if parsed.state.get("kind") == "images" and parsed.usage.is_empty:
            # dall-e-2 and dall-e-3 bill per image (by size and quality) and report no tokens:
            # the count is kept so that a price per image, where one is known, applies.
            images = len(items(body.get("data")))
            if images:
                parsed.usage = Usage(extra={"output_images": images})
        choice = choices[0] if isinstance(choices, list) and choices else None
        if isinstance(choice, dict):
            parsed.finish_reason = first_str(choice.get("finish_reason"))
            message = choice.get("message")
            if isinstance(message, dict):
                self._take_message_text(parsed, message)
            elif isinstance(choice.get("text"), str):  # legacy completions
                parsed.output.append(choice["text"])

    def _take_usage(self, parsed: Parsed, raw: Any, *, merge: bool = False) -> None:
        usage = read_openai_usage(raw)
        if usage is not None:
            parsed.usage = merge_usage(parsed.usage, usage) if merge else usage
        cost = read_reported_cost(raw)
        if cost is not None:
            parsed.reported_cost_usd = cost

    def _take_message_text(self, parsed: Parsed, message: dict[str, Any]) -> None:
        for key in ("reasoning_content", "reasoning", "content", "refusal"):
            text = message.get(key)
            if isinstance(text, str):
                parsed.output.append(text)
        for call in items(message.get("tool_calls")):
            function = dig(call, "function")
            if isinstance(function, dict):
                parsed.output.append(str(function.get("name") or "") + str(function.get("arguments") or ""))

    def _read_response_object(self, parsed: Parsed, response: dict[str, Any]) -> None:
        """A Responses API ``response`` object (the body, or inside a stream event)."""
        parsed.response_model = first_str(response.get("model")) or parsed.response_model
        parsed.response_id = first_str(response.get("id")) or parsed.response_id
        _take_service_tier(parsed, response)
        self._take_usage(parsed, response.get("usage"))
        status = first_str(response.get("status"))
        reason = first_str(dig(response, "incomplete_details", "reason"))
        parsed.finish_reason = reason or status or parsed.finish_reason
        if status in _RUNNING:
            parsed.complete = False  # a background job's first word, not its answer
        if status == "failed" or response.get("error"):
            parsed.stream_error = True
            self._read_error(parsed, response.get("error") or {"code": "response_failed"})
        if not parsed.stream:
            for item in items(response.get("output")):
                for part in items(dig(item, "content")) + items(dig(item, "summary")):
                    if isinstance(dig(part, "text"), str):
                        parsed.output.append(part["text"])
                if dig(item, "type") == "function_call":
                    parsed.output.append(str(item.get("name") or "") + str(item.get("arguments") or ""))

    def _read_error(self, parsed: Parsed, error: Any) -> None:
        if isinstance(error, dict):
            code = first_str(error.get("code")) or first_str(error.get("type"))
            if code is None and error.get("code") is not None:
                code = str(error["code"])
            message = error.get("message")
            parsed.fail(code, message if isinstance(message, str) and message else None)
        elif isinstance(error, str):
            parsed.fail(None, error)

    # -- streams --------------------------------------------------------------------------

    def read_event(self, parsed: Parsed, event: str | None, data: Any) -> None:
        if not isinstance(data, dict):
            return  # "[DONE]", keep-alives
        if parsed.state.get("kind") == "files":
            self._read_batch_line(parsed, data)
            return
        # Runs for every chunk of every stream: each field is looked up once.
        get = data.get
        kind = get("type")
        if not isinstance(kind, str):
            kind = event or ""
        if kind and kind.startswith(("response.", "image_generation.", "image_edit.", "transcript.")):
            self._read_typed_event(parsed, kind, data)
            return
        groq = get("x_groq")
        if not isinstance(groq, dict):
            groq = None
        error = get("error")
        if kind == "error" or error or (groq is not None and groq.get("error")):
            parsed.stream_error = True
            if not error and groq is not None:
                error = groq.get("error")
            self._read_error(parsed, error or data)
            # The figures that came with the error are what the call billed (OpenRouter's
            # error chunk carries the usage so far; Groq's x_groq beside its error).
            usage = get("usage")
            if isinstance(usage, dict):
                self._take_usage(parsed, usage, merge=True)
                parsed.usage_final = True
            if groq is not None and isinstance(groq.get("usage"), dict):
                self._take_usage(parsed, groq["usage"], merge=True)
                parsed.usage_final = True
            return
        model = get("model")
        if isinstance(model, str) and model:
            parsed.response_model = model
        response_id = get("id")
        if isinstance(response_id, str) and response_id:
            parsed.response_id = response_id
        choices = get("choices")
        usage = get("usage")
        if isinstance(usage, dict):
            self._take_usage(parsed, usage, merge=True)
            _take_service_tier(parsed, data)  # on every chunk: read with the usage, once
            # The usage chunk (no choices) or the finish-reason chunk carries the final figures;
            # usage on other chunks (continuous usage stats) is a running count.
            if not choices or any(isinstance(c, dict) and c.get("finish_reason") for c in items(choices)):
                parsed.usage_final = True
        if groq is not None and isinstance(groq.get("usage"), dict):
            self._take_usage(parsed, groq["usage"], merge=True)
            parsed.usage_final = True
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            reason = choice.get("finish_reason")
            index = choice.get("index", 0)
            if isinstance(reason, str) and reason and index.__class__ is int:
                choice_finished(parsed, index)
            if index != 0:
                continue
            if isinstance(reason, str) and reason:
                parsed.finish_reason = reason
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._take_delta_text(parsed, delta)
            else:
                text = choice.get("text")
                if isinstance(text, str):  # legacy completions stream
                    parsed.output.append(text)

    def _take_delta_text(self, parsed: Parsed, delta: dict[str, Any]) -> None:
        get = delta.get
        for key in ("reasoning_content", "reasoning", "content"):
            text = get(key)
            if isinstance(text, str) and text:
                parsed.output.append(text)
        calls = get("tool_calls")
        if calls:  # (every chunk of a plain answer has none)
            take_tool_calls(parsed, calls)

    def sse_reader(self, parsed: Parsed) -> Callable[[Parsed, str | None, str], bool] | None:
        if type(self).read_event is not OpenAICompatible.read_event:
            return None  # a family that reads its events otherwise
        return self.chunk_reader(parsed)

    def chunk_reader(self, parsed: Parsed) -> Callable[[Parsed, str | None, str], bool] | None:
        """The reader of chat/completions stream chunks from their text (see ``_openai_chunks``)."""
        if parsed.state.get("kind") == "files":
            return None  # a batch output file
        return chunk_reader(self._take_usage)

    def _read_typed_event(self, parsed: Parsed, kind: str, data: dict[str, Any]) -> None:
        """Events named by their ``type``: the Responses API, image and transcript streams."""
        if kind.endswith(".delta") and isinstance(data.get("delta"), str):
            if kind != "response.audio.delta":  # base64 audio is not text
                parsed.output.append(data["delta"])
        elif kind in ("response.created", "response.in_progress", "response.queued"):
            response = data.get("response")
            if isinstance(response, dict):
                self._read_response_object(parsed, response)
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = data.get("response")
            if isinstance(response, dict):
                self._read_response_object(parsed, response)
            # The response's last event (``incomplete`` is a whole answer cut by a limit the
            # request set, as a chat completion's ``length``; ``failed`` is an error).
            parsed.stream_done = parsed.usage_final = parsed.complete = True
            if kind == "response.failed":
                parsed.stream_error = True
                if parsed.error_code is None:
                    parsed.fail("response_failed", None)
        elif kind == "response.error":
            parsed.stream_error = True
            self._read_error(parsed, data.get("error") or data)
        elif kind.endswith((".completed", ".done")) and kind.startswith(("image_", "transcript.")):
            self._take_usage(parsed, data.get("usage"))
            parsed.stream_done = parsed.usage_final = parsed.complete = True

    # -- batch output files -------------------------------------------------------------

    def _read_batch_line(self, parsed: Parsed, line: dict[str, Any]) -> None:
        """One line of a Batch API output file: ``{"custom_id", "response": {"status_code",
        "body"}}``. The file's usage is every request's usage, at batch prices."""
        body = dig(line, "response", "body")
        if not isinstance(body, dict):
            return
        parsed.batch = True
        add_batch_result(parsed, first_str(body.get("model")), read_openai_usage(body.get("usage")))

    def count_prompt(self, tally: PromptTally, operation: str, body: dict[str, Any]) -> None:
        if "messages" in body:  # chat completions
            count_chat(tally, body.get("messages"))
            count_tools(tally, body.get("tools"))
            count_tools(tally, body.get("functions"))
        elif "input" in body:  # the Responses API, or embeddings and moderations
            inp = body["input"]
            chat_like = operation in ("chat", "completion", "responses") or "instructions" in body
            listed = isinstance(inp, list) and any(isinstance(i, dict) for i in inp)
            if "embed" not in operation and (chat_like or listed):
                _count_responses_input(tally, body)
            else:
                tally.prompt(inp)
        elif "prompt" in body:  # legacy completions
            tally.prompt(body.get("prompt"))
            tally.text(body.get("suffix"))

    def finish(self, parsed: Parsed) -> None:
        if is_batch_results(parsed):
            finish_batch_results(parsed)
            return
        if (
            parsed.state.get("kind") == "audio"
            and parsed.usage.is_empty
            and not parsed.usage.extra
            and parsed.error_code is None
            and parsed.error_message is None
        ):
            # A transcription asked for as text, srt or vtt: whisper-1 bills the audio's
            # seconds, which only the JSON formats report.
            parsed.notes.append("audio: no usage in the response (its duration is in the JSON formats only)")
        # A chat or completions stream is whole at ``[DONE]`` (the recorder sees it), or,
        # for servers that do not send it, once every choice has its finish reason and the
        # usage chunk the app asked for (it follows them) has arrived.
        if (
            parsed.stream
            and all_choices_finished(parsed)
            and (parsed.usage_final or not parsed.state.get("usage_asked"))
        ):
            parsed.complete = True


def _take_service_tier(parsed: Parsed, body: dict[str, Any]) -> None:
    """``service_tier`` of a request or response (chat completions, Responses API): flex and
    priority have prices of their own. A later value (the response's) replaces an earlier one."""
    take_tier(parsed, body.get("service_tier"))


class OpenAI(OpenAICompatible):
    name = "openai"
    hosts = ("api.openai.com",)
    price_provider = "openai"
    batch_discount = 0.5

    def include_usage(self, path: str, query: str) -> bool:
        return endpoint_kind(path) in ("chat", "completion")


#: The reader of OpenAI's API shape wherever another family's host serves it.
add_shape("openai", OpenAICompatible())
