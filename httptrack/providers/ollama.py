"""Ollama: the native API (``/api/chat``, ``/api/generate``, ``/api/embed``,
``/api/embeddings``, ``/api/tags``) on a local server or ollama.com, its OpenAI-compatible
``/v1/...`` paths (read by the OpenAI parser; ``stream_options.include_usage`` is accepted
since Ollama 0.5.2 and ignored before, so httptrack asks for the usage chunk) and its
Anthropic-compatible ``/v1/messages`` (read by the Anthropic parser).

Usage, normalized: ``prompt_eval_count`` → input, ``eval_count`` → output (thinking
included). Native chat and generate stream NDJSON *by default* (unless ``"stream": false``);
the figures arrive on the last line, the one with ``"done": true``.
"""

from __future__ import annotations

from typing import Any

from .._usage import Usage
from .._vocab import Operation
from ._base import Parsed, Provider, as_int, dig, first_str, json_object, positive_int
from ._prompt import PromptTally
from .openai import INCLUDE_USAGE, OpenAICompatible, count_chat, count_tools, endpoint_kind

__all__ = ["Ollama"]

_NATIVE_OPERATIONS: dict[str, Operation] = {
    "/api/chat": "chat",
    "/api/generate": "completion",
    "/api/embed": "embeddings",
    "/api/embeddings": "embeddings",
    "/api/tags": "models",
    "/api/ps": "models",
    "/api/show": "models",
}


#: Why a native chat or generate answered with ``done: true`` is not an answer: the request
#: only loaded the model, or unloaded it (``keep_alive: 0``).
_NOT_ANSWERS = frozenset({"load", "unload"})
#: The hosted service; any other host is the user's own machine or server.
_HOSTED = "ollama.com"


class Ollama(Provider):
    name = "ollama"
    hosts = ("localhost:11434", "127.0.0.1:11434", "[::1]:11434", "::1:11434", "0.0.0.0:11434", _HOSTED)
    # Hosted Ollama has no genai-prices provider today: one is used if it appears, rather
    # than pricing a model as another vendor serving a model of the same name.
    price_provider = "ollama"
    usage_option = INCLUDE_USAGE  # on the OpenAI-compatible paths (see include_usage)
    #: Its ``/v1`` chunks leave ``usage`` out (Go's ``omitempty``) rather than ``null``.
    marks_usage_chunks = False

    def __init__(self) -> None:
        self._compat = _OllamaCompatible()

    def parser_for(self, method: str, path: str) -> Provider:
        if path.startswith("/v1/"):
            return self._compat.parser_for(method, path)
        return self

    def max_output(self, body: dict[str, Any]) -> tuple[int | None, int]:
        # options.num_predict: -1 (no limit) and -2 (fill the context) state no maximum.
        return positive_int(dig(body, "options", "num_predict")), 1

    def limit_error(self, message: str, code: str, metric: str) -> dict[str, Any]:
        return {"error": message}  # what the ollama client reads into ResponseError

    def operation(self, method: str, path: str) -> Operation:
        parser = self.parser_for(method, path)
        if parser is not self:
            return parser.operation(method, path)
        return _NATIVE_OPERATIONS.get(path.rstrip("/"), "other")

    def include_usage(self, path: str, query: str) -> bool:
        return path.startswith("/v1/") and endpoint_kind(path) in ("chat", "completion")

    def ask_for_usage(self, body: bytes) -> bytes | None:
        return self._compat.ask_for_usage(body)

    def is_usage_chunk(self, data: Any) -> bool:
        return self._compat.is_usage_chunk(data)

    def cacheable(self, method: str, path: str, operation: str) -> bool:
        parser = self.parser_for(method, path)
        if parser is not self:
            return parser.cacheable(method, path, operation)
        path = path.rstrip("/")
        if path == "/api/ps":  # the models loaded right now: live state, never a stored answer
            return False
        if operation == "models" and path == "/api/show":
            return method == "POST"
        return super().cacheable(method, path, operation)

    def cacheable_request(self, method: str, path: str, body: bytes) -> bool:
        # A generate with no prompt, a chat with no messages, only loads (or, with
        # keep_alive 0, unloads) the model: the effect is the point, never a stored answer.
        # Such a body is small; a long one carries a prompt, and is not parsed here.
        path = path.rstrip("/")
        if path not in ("/api/generate", "/api/chat") or (len(body) > 4096 and b'"keep_alive"' not in body):
            return True
        data = json_object(body)
        if data is None:
            return True
        if path == "/api/generate":
            return bool(data.get("prompt") or data.get("images"))
        return bool(data.get("messages"))

    def read_request(self, parsed: Parsed, method: str, path: str, query: str, body: Any) -> None:
        if isinstance(body, dict):
            parsed.model = first_str(body.get("model"))
            if parsed.operation in ("chat", "completion"):
                parsed.stream = body.get("stream", True) is not False  # Ollama streams by default
            else:
                parsed.stream = body.get("stream") is True

    def stream_format(self, parsed: Parsed, content_type: str) -> str | None:
        fmt = super().stream_format(parsed, content_type)
        if fmt is None and parsed.stream:
            return "ndjson"  # some Ollama versions label NDJSON streams application/json
        return fmt

    def read_body(self, parsed: Parsed, status: int, body: Any) -> None:
        if isinstance(body, dict):
            self._read_line(parsed, body)

    def read_event(self, parsed: Parsed, event: str | None, data: Any) -> None:
        if isinstance(data, dict):
            self._read_line(parsed, data)

    def _read_line(self, parsed: Parsed, line: dict[str, Any]) -> None:
        if line.get("error"):
            if parsed.stream:
                parsed.stream_error = True
            error = line["error"]
            parsed.fail(None, error if isinstance(error, str) else str(error))
            return
        parsed.response_model = first_str(line.get("model")) or parsed.response_model
        text = dig(line, "message", "content")
        if not isinstance(text, str):
            text = line.get("response")
        if isinstance(text, str) and text:
            parsed.output.append(text)
        thinking = dig(line, "message", "thinking")
        if not isinstance(thinking, str):
            thinking = line.get("thinking")
        if isinstance(thinking, str) and thinking:
            parsed.output.append(thinking)
        if line.get("done") is True:
            parsed.stream_done = parsed.usage_final = True
            parsed.complete = line.get("done_reason") not in _NOT_ANSWERS
        if line.get("done") is True or "prompt_eval_count" in line or "eval_count" in line:
            parsed.finish_reason = first_str(line.get("done_reason")) or parsed.finish_reason
            input_tokens = as_int(line.get("prompt_eval_count"))
            output_tokens = as_int(line.get("eval_count"))
            if input_tokens is not None or output_tokens is not None:
                parsed.usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)

    def count_prompt(self, tally: PromptTally, operation: str, body: dict[str, Any]) -> None:
        if "messages" in body:  # /api/chat: OpenAI's chat formula, images beside the content
            messages = body.get("messages")
            count_chat(tally, messages)
            count_tools(tally, body.get("tools"))
            count_tools(tally, body.get("functions"))
            for message in messages if isinstance(messages, list) else ():
                images = message.get("images") if isinstance(message, dict) else None
                if isinstance(images, list):
                    tally.images(len(images))
        elif "input" in body:  # /api/embed
            tally.prompt(body["input"])
        elif "prompt" in body:  # /api/generate, /api/embeddings
            tally.prompt(body.get("prompt"))
            tally.text(body.get("system"))
            tally.text(body.get("suffix"))
            images = body.get("images")
            if isinstance(images, list) and tally.found:
                tally.images(len(images))

    def runs_locally(self, host: str | None) -> bool:
        return host is None or not (host == _HOSTED or host.endswith("." + _HOSTED))


class _OllamaCompatible(OpenAICompatible):
    """Ollama's OpenAI-compatible paths (the name only matters for ``Provider`` subclasses)."""

    name = "ollama"
