"""Offline token counting, for when a provider sends no usage.

An OpenAI stream without a usage chunk, a stream cut short, a provider that never reports
usage: httptrack then counts the tokens itself and flags the figures as estimated. It uses
tiktoken with OpenAI's ``o200k_base`` and ``cl100k_base`` BPE ranks *shipped inside this
package* (``httptrack/encodings/*.tiktoken.gz``), never ``tiktoken.get_encoding``, which
would try to download them on first use. Each file is checked against the sha256 that
tiktoken itself pins for the official download (``tiktoken_ext/openai_public.py``) the
first time it is loaded, so what is shipped is provably the official encoding.
``scripts/build_encodings.py`` regenerates the files.

Which encoding: OpenAI's own table (``tiktoken.model``, a pure lookup) for the models it
knows, ``o200k_base`` for everything else (Claude, Gemini, Llama, ...: the count is an
estimate then, as is any count made with a tokenizer other than the model's).

Nothing here imports tiktoken at module import time; the first count imports it and loads
one encoding (~0.5-1 s for ``o200k_base``), once per process, under a lock.

Chat prompts are counted with the formula of OpenAI's cookbook ("How to count tokens with
tiktoken"): 3 tokens per message, the tokens of each value, +1 per ``name``, +3 priming
the reply; tool definitions with the cookbook's ``num_tokens_for_tools``. Anthropic and
Gemini prompts are counted as their text only (their tokenizers and message framing are
not public). An image counts :data:`IMAGE_TOKENS`, audio and files nothing.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import logging
import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import EncodingDataError

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "DEFAULT_ENCODING",
    "ENCODING_SHA256",
    "IMAGE_TOKENS",
    "SHIPPED_ENCODINGS",
    "EncodingDataError",
    "count_chat_messages",
    "count_output_text",
    "count_text",
    "count_tools",
    "encoding_for_model",
    "encoding_name_for_model",
    "estimate_prompt_tokens",
    "load_encoding",
]

log = logging.getLogger(__name__)

#: Encoding used for models OpenAI's table does not know.
DEFAULT_ENCODING = "o200k_base"

#: sha256 of each shipped file's *decompressed* content: the ``expected_hash`` values that
#: tiktoken 0.14.0 pins in ``tiktoken_ext/openai_public.py`` for the official downloads.
ENCODING_SHA256: dict[str, str] = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
SHIPPED_ENCODINGS: tuple[str, ...] = tuple(ENCODING_SHA256)

#: Tokens counted for one image part: OpenAI's documented cost of a low-detail image on
#: gpt-4o, a floor for what an image really costs on most models.
IMAGE_TOKENS = 85

_ENCODINGS_DIR = Path(__file__).resolve().parent.parent / "encodings"

# Same special tokens and split patterns as tiktoken_ext/openai_public.py (tiktoken 0.14.0);
# tests/test_tokens.py checks they still agree with the installed tiktoken.
_ENDOFTEXT = "<|endoftext|>"
_FIM_PREFIX = "<|fim_prefix|>"
_FIM_MIDDLE = "<|fim_middle|>"
_FIM_SUFFIX = "<|fim_suffix|>"
_ENDOFPROMPT = "<|endofprompt|>"

_PAT_STR: dict[str, str] = {
    "cl100k_base": (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
        r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
    ),
    "o200k_base": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
}

_SPECIAL_TOKENS: dict[str, dict[str, int]] = {
    "cl100k_base": {
        _ENDOFTEXT: 100257,
        _FIM_PREFIX: 100258,
        _FIM_MIDDLE: 100259,
        _FIM_SUFFIX: 100260,
        _ENDOFPROMPT: 100276,
    },
    "o200k_base": {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
}

# Encodings OpenAI's table may name that are not shipped, and the shipped one that stands in.
# o200k_harmony has o200k_base's ranks (only special tokens differ, and those are counted as
# plain text here), so its counts are exact; the others belong to retired GPT-3 era models.
_STAND_INS: dict[str, str] = {
    "o200k_harmony": "o200k_base",
    "p50k_base": "cl100k_base",
    "p50k_edit": "cl100k_base",
    "r50k_base": "cl100k_base",
    "gpt2": "cl100k_base",
}

# Cookbook constants for tool definitions (func_init, prop_init, prop_key, enum_init,
# enum_item, func_end), measured by OpenAI for gpt-4o/gpt-4o-mini and gpt-3.5/gpt-4.
_TOOL_CONSTANTS: dict[str, tuple[int, int, int, int, int, int]] = {
    "o200k_base": (7, 3, 3, -3, 3, 12),
    "cl100k_base": (10, 3, 3, -3, 3, 12),
}

_MAX_DEPTH = 12


_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}
_failures: dict[str, EncodingDataError] = {}


# --------------------------------------------------------------------------- loading


def _read_ranks(name: str) -> dict[bytes, int]:
    """Read, verify and parse ``encodings/<name>.tiktoken.gz`` (no cache, no network)."""
    path = _ENCODINGS_DIR / f"{name}.tiktoken.gz"
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise EncodingDataError(
            f"httptrack's bundled encoding file {path} cannot be read ({exc}); reinstall httptrack"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    expected = ENCODING_SHA256[name]
    if digest != expected:
        raise EncodingDataError(
            f"httptrack's bundled encoding file {path} is not the official {name} "
            f"(sha256 {digest}, expected {expected}); reinstall httptrack or rerun "
            "scripts/build_encodings.py"
        )
    ranks: dict[bytes, int] = {}
    try:
        for line in data.splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    except ValueError as exc:  # unreachable for a file whose hash matched
        raise EncodingDataError(f"{path}: malformed line ({exc})") from exc
    return ranks


def _build_encoding(name: str) -> tiktoken.Encoding:
    """Construct a fresh ``tiktoken.Encoding`` from the shipped file (no cache)."""
    import tiktoken

    return tiktoken.Encoding(
        name=name,
        pat_str=_PAT_STR[name],
        mergeable_ranks=_read_ranks(name),
        special_tokens=dict(_SPECIAL_TOKENS[name]),
    )


def load_encoding(name: str) -> tiktoken.Encoding:
    """The shipped encoding ``name`` (``o200k_base`` or ``cl100k_base``), loaded once.

    Thread-safe. Raises :class:`EncodingDataError` when the shipped file is missing or
    fails its sha256 check (the failure is remembered: later calls raise it again at no
    cost) and ``KeyError`` for an encoding that is not shipped.
    """
    enc = _encodings.get(name)
    if enc is not None:
        return enc
    if name not in ENCODING_SHA256:
        raise KeyError(
            f"encoding {name!r} is not shipped with httptrack (have: {', '.join(ENCODING_SHA256)})"
        )
    with _lock:
        enc = _encodings.get(name)
        if enc is not None:
            return enc
        failure = _failures.get(name)
        if failure is not None:
            raise failure.with_traceback(None)
        try:
            enc = _build_encoding(name)
        except EncodingDataError as exc:
            log.error("token estimates unavailable: %s", exc)
            _failures[name] = exc
            raise
        _encodings[name] = enc
        return enc


def encoding_name_for_model(model: str | None) -> str:
    """Name of the shipped encoding used to count tokens for ``model``.

    OpenAI's table (``tiktoken.model.encoding_name_for_model``) decides for the names it
    knows, including dated and suffixed ones (``gpt-4o-2024-08-06``, ``o3-mini``,
    ``gpt-4.1-nano``, ``gpt-5.5``) and a ``vendor/`` prefix (``openai/gpt-4o``); anything
    else (or not a string) gets :data:`DEFAULT_ENCODING`.
    """
    if not isinstance(model, str):
        return DEFAULT_ENCODING
    name = model.strip().lower()
    return _encoding_name(name) if name else DEFAULT_ENCODING


@lru_cache(maxsize=1024)
def _encoding_name(name: str) -> str:
    from tiktoken.model import encoding_name_for_model as openai_table

    candidates = [name]
    if "/" in name:
        candidates.append(name.rsplit("/", 1)[1])
    for candidate in candidates:
        try:
            found = openai_table(candidate)
        except KeyError:
            continue
        found = _STAND_INS.get(found, found)
        return found if found in ENCODING_SHA256 else DEFAULT_ENCODING
    return DEFAULT_ENCODING


def encoding_for_model(model: str | None) -> tiktoken.Encoding:
    """The ``tiktoken.Encoding`` to count ``model``'s tokens with (see
    :func:`encoding_name_for_model`). Loads it on first use."""
    return load_encoding(encoding_name_for_model(model))


# --------------------------------------------------------------------------- counting


def count_text(text: str, model: str | None = None) -> int:
    """Tokens in ``text``; special-token strings (``<|endoftext|>``) count as plain text.

    Anything but a string counts 0. Raises :class:`EncodingDataError` only if the shipped
    encoding files are broken.
    """
    if not isinstance(text, str) or not text:
        return 0
    return len(encoding_for_model(model).encode(text, disallowed_special=()))


def count_output_text(text: str, model: str | None) -> int:
    """Tokens of generated ``text`` (a completion read back from a response or stream)."""
    return count_text(text, model)


def _dumps(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        return None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _is_image_part(part: dict[str, Any]) -> bool:
    ptype = part.get("type")
    if ptype in ("image_url", "input_image", "image"):
        return True
    blob = part.get("inlineData") or part.get("inline_data") or part.get("fileData") or part.get("file_data")
    if isinstance(blob, dict):
        mime = blob.get("mimeType") or blob.get("mime_type")
        return isinstance(mime, str) and mime.startswith("image/")
    return False


class _Tally:
    """Adds up tokens of whatever it is shown, skipping what it cannot read."""

    __slots__ = ("enc", "found", "total")

    def __init__(self, enc: tiktoken.Encoding) -> None:
        self.enc = enc
        self.total = 0
        self.found = False

    def text(self, value: Any) -> None:
        if isinstance(value, str):
            self.found = True
            if value:
                self.total += len(self.enc.encode(value, disallowed_special=()))

    def json(self, value: Any) -> None:
        if value is not None:
            self.text(_dumps(value))

    def ids(self, value: Any) -> bool:
        """A list of token ids counts its length; True when ``value`` was one."""
        if isinstance(value, list) and value and all(type(i) is int for i in value):
            self.found = True
            self.total += len(value)
            return True
        return False

    def prompt(self, value: Any) -> None:
        """A completions/embeddings ``prompt``/``input``: str, [str], [id], [[id]]."""
        if isinstance(value, str):
            self.text(value)
        elif isinstance(value, list) and not self.ids(value):
            for item in value:
                if isinstance(item, str):
                    self.text(item)
                else:
                    self.ids(item)

    def content(self, value: Any, depth: int = 0) -> None:
        """Message content: a string, a list of parts, or one part."""
        if depth > _MAX_DEPTH:
            return
        if isinstance(value, str):
            self.text(value)
        elif isinstance(value, list):
            for part in value:
                self.content(part, depth + 1)
        elif isinstance(value, dict):
            self.part(value, depth)

    def part(self, part: dict[str, Any], depth: int) -> None:
        """One content part/block of any provider's shape."""
        ptype = part.get("type")
        if isinstance(part.get("text"), str):  # text, input_text, output_text, Gemini {"text"}
            self.text(part["text"])
        elif isinstance(part.get("refusal"), str):
            self.text(part["refusal"])
        elif _is_image_part(part):
            self.found = True
            self.total += IMAGE_TOKENS
        elif ptype in ("tool_use", "server_tool_use"):  # Anthropic
            self.text(part.get("name"))
            self.json(part.get("input"))
        elif isinstance(ptype, str) and ptype.endswith("tool_result"):  # Anthropic
            self.content(part.get("content"), depth + 1)
        elif ptype == "document":  # Anthropic: plain-text source or content blocks
            source = part.get("source")
            if isinstance(source, dict) and source.get("type") == "text":
                self.text(source.get("data"))
            elif isinstance(source, dict) and source.get("type") == "content":
                self.content(source.get("content"), depth + 1)
        else:  # Gemini
            call = part.get("functionCall") or part.get("function_call")
            if isinstance(call, dict):
                self.text(call.get("name"))
                self.json(call.get("args"))
            resp = part.get("functionResponse") or part.get("function_response")
            if isinstance(resp, dict):
                self.text(resp.get("name"))
                self.json(resp.get("response"))
            code = part.get("executableCode") or part.get("executable_code")
            if isinstance(code, dict):
                self.text(code.get("code"))
            result = part.get("codeExecutionResult") or part.get("code_execution_result")
            if isinstance(result, dict):
                self.text(result.get("output"))

    def chat_message(self, message: Any) -> None:
        """One chat message by the cookbook formula (OpenAI-compatible and Ollama)."""
        if not isinstance(message, dict):
            return
        self.found = True
        self.total += 3  # <|start|>{role/name}\n{content}<|end|>\n
        self.text(message.get("role"))
        self.content(message.get("content"))
        name = message.get("name")
        if isinstance(name, str):
            self.text(name)
            self.total += 1
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    self.function_call(call.get("function"))
        self.function_call(message.get("function_call"))
        images = message.get("images")  # Ollama
        if isinstance(images, list):
            self.total += IMAGE_TOKENS * len(images)

    def function_call(self, fn: Any) -> None:
        if isinstance(fn, dict):
            self.text(fn.get("name"))
            self.json(fn.get("arguments"))

    def chat(self, messages: Any) -> None:
        if isinstance(messages, list) and any(isinstance(m, dict) for m in messages):
            for message in messages:
                self.chat_message(message)
            self.total += 3  # every reply is primed with <|start|>assistant<|message|>

    def tools(self, tools: Any) -> None:
        """OpenAI function tools (chat's nested or Responses' flat shape), cookbook formula."""
        if not isinstance(tools, list):
            return
        func_init, prop_init, prop_key, enum_init, enum_item, func_end = _TOOL_CONSTANTS.get(
            self.enc.name, _TOOL_CONSTANTS[DEFAULT_ENCODING]
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
            seen = self.found = True
            self.total += func_init
            self.text(f"{name}:{_str(fn.get('description')).removesuffix('.')}")
            params = fn.get("parameters")
            props = params.get("properties") if isinstance(params, dict) else None
            if not isinstance(props, dict) or not props:
                continue
            self.total += prop_init
            for key, value in props.items():
                self.total += prop_key
                prop: dict[str, Any] = value if isinstance(value, dict) else {}
                enum = prop.get("enum")
                if isinstance(enum, list):
                    self.total += enum_init
                    for item in enum:
                        self.total += enum_item
                        self.text(item if isinstance(item, str) else _dumps(item))
                ptype = prop.get("type")
                ptype = ptype if isinstance(ptype, str) else _dumps(ptype) or ""
                pdesc = _str(prop.get("description")).removesuffix(".")
                self.text(f"{key}:{ptype}:{pdesc}")
        if seen:
            self.total += func_end

    # -- request shapes

    def responses(self, body: dict[str, Any]) -> None:
        """OpenAI Responses API: ``instructions`` + ``input`` (str or items) + tools."""
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            self.chat_message({"role": "developer", "content": instructions})
        inp = body.get("input")
        if isinstance(inp, str):
            self.chat_message({"role": "user", "content": inp})
        elif isinstance(inp, list):
            for item in inp:
                if isinstance(item, str):
                    self.chat_message({"role": "user", "content": item})
                elif not isinstance(item, dict):
                    continue
                elif "role" in item or item.get("type") == "message":
                    self.chat_message(item)
                elif item.get("type") in ("function_call", "custom_tool_call"):
                    self.total += 3
                    self.found = True
                    self.text(item.get("name"))
                    self.json(item.get("arguments", item.get("input")))
                elif item.get("type") in ("function_call_output", "custom_tool_call_output"):
                    self.total += 3
                    self.found = True
                    self.content(item.get("output"))
                # reasoning items, item references, ...: not counted
        if self.found:
            self.total += 3
        self.tools(body.get("tools"))

    def anthropic(self, body: dict[str, Any]) -> None:
        self.content(body.get("system"))
        messages = body.get("messages")
        if isinstance(messages, list):
            for message in messages:
                if isinstance(message, dict):
                    self.found = True
                    self.content(message.get("content"))
        tools = body.get("tools")
        if isinstance(tools, list):
            for tool in tools:
                if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                    self.text(tool["name"])
                    self.text(tool.get("description"))
                    self.json(tool.get("input_schema"))

    def gemini_content(self, content: Any) -> None:
        if isinstance(content, dict):
            self.content(content.get("parts"))
        elif isinstance(content, list):
            for item in content:
                self.gemini_content(item)
        elif isinstance(content, str):
            self.text(content)

    def gemini(self, body: dict[str, Any]) -> None:
        self.gemini_content(body.get("systemInstruction", body.get("system_instruction")))
        self.gemini_content(body.get("contents"))
        self.gemini_content(body.get("content"))  # embedContent
        requests = body.get("requests")  # batchEmbedContents
        if isinstance(requests, list):
            for request in requests:
                if isinstance(request, dict):
                    self.gemini_content(request.get("content"))
        tools = body.get("tools")
        if isinstance(tools, list):
            for tool in tools:
                if isinstance(tool, dict):
                    decls = tool.get("functionDeclarations", tool.get("function_declarations"))
                    if decls is not None:
                        self.json(decls)


def count_chat_messages(messages: list[Any], model: str | None = None) -> int:
    """Prompt tokens of chat-format ``messages`` by the OpenAI cookbook formula.

    Each message counts 3 plus its role, content (a string or a list of parts: text parts
    by their text, image parts :data:`IMAGE_TOKENS`), ``name`` (+1), and the function name
    and arguments of its ``tool_calls``; the reply is primed with 3 more. What it cannot
    read it skips; anything but a list counts 0.
    """
    if not isinstance(messages, list):
        return 0
    tally = _Tally(encoding_for_model(model))
    tally.chat(messages)
    return tally.total


def count_tools(tools: list[Any], model: str | None = None) -> int:
    """Prompt tokens of OpenAI function-tool definitions, by the cookbook's
    ``num_tokens_for_tools`` (its gpt-4o constants for ``o200k_base`` models, its gpt-4
    ones for ``cl100k_base``). Built-in tools and odd shapes count 0."""
    tally = _Tally(encoding_for_model(model))
    tally.tools(tools)
    return tally.total


def estimate_prompt_tokens(provider: str, operation: str, body: object, model: str | None) -> int | None:
    """Best-effort input tokens of a request ``body`` (decoded JSON), or ``None`` when it
    holds nothing countable (or counting failed). Never raises.

    Reads the shape, with ``provider``/``operation`` as hints: Gemini ``contents`` (and
    ``systemInstruction``); ``messages`` as Anthropic's (``system`` + text only) for
    ``provider == "anthropic"`` or a top-level ``system``, else as OpenAI-compatible/Ollama
    chat (cookbook formula, plus ``tools``/``functions``); ``input`` as a Responses API
    request (chat formula over ``instructions`` and the input items) unless the operation
    is embeddings or the input is plain text/ids outside chat; ``prompt`` (+ ``system``,
    ``suffix``) as legacy completions, Ollama ``/api/generate`` or embeddings. ``model``
    defaults to the body's ``model``.
    """
    try:
        if not isinstance(body, dict):
            return None
        if not model:
            body_model = body.get("model")
            model = body_model if isinstance(body_model, str) else None
        provider = provider.lower() if isinstance(provider, str) else ""
        operation = operation.lower() if isinstance(operation, str) else ""
        tally = _Tally(encoding_for_model(model))
        gemini_provider = any(name in provider for name in ("gemini", "google", "vertex"))
        if any(k in body for k in ("contents", "systemInstruction", "system_instruction")) or (
            gemini_provider and ("content" in body or "requests" in body)
        ):
            tally.gemini(body)
        elif "messages" in body:
            if provider == "anthropic" or "system" in body:
                tally.anthropic(body)
            else:
                tally.chat(body.get("messages"))
                tally.tools(body.get("tools"))
                tally.tools(body.get("functions"))
        elif "input" in body:
            inp = body["input"]
            chat_like = operation in ("chat", "completion", "responses") or "instructions" in body
            items = isinstance(inp, list) and any(isinstance(i, dict) for i in inp)
            if "embed" not in operation and (chat_like or items):
                tally.responses(body)
            else:
                tally.prompt(inp)
        elif "prompt" in body:
            tally.prompt(body.get("prompt"))
            tally.text(body.get("system"))
            tally.text(body.get("suffix"))
            images = body.get("images")  # Ollama /api/generate
            if isinstance(images, list) and tally.found:
                tally.total += IMAGE_TOKENS * len(images)
        return tally.total if tally.found else None
    except Exception:  # an estimate must never break the recorder
        log.debug("token estimate failed for a %s %s request", provider, operation, exc_info=True)
        return None
