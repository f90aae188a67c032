"""Offline token counting, for when a provider sends no usage.

An OpenAI stream without a usage chunk, a stream cut short, a provider that never reports
usage: httptrack then counts the tokens itself and flags the figures as estimated. It counts
with OpenAI's ``o200k_base`` and ``cl100k_base`` BPE ranks *shipped inside this package*
(``httptrack/encodings/*.tiktoken.gz``), never ``tiktoken.get_encoding``, which would try to
download them on first use. Each file is checked against the sha256 that tiktoken itself
pins for the official download (``tiktoken_ext/openai_public.py``) the first time it is
loaded, so what is shipped is provably the official encoding.
``scripts/build_encodings.py`` regenerates the files. The ranks are encoded by tiktoken's
algorithm in Python (``_bpe``), to the same token ids: tiktoken's own ``Encoding`` is never
built, as its Rust constructor holds the GIL for 100-200 ms and stops every thread of the app.

Which encoding: OpenAI's own table (``tiktoken.model``, a pure lookup) for the models it
knows, ``o200k_base`` for everything else (Claude, Gemini, Llama, ...: the count is an
estimate then, as is any count made with a tokenizer other than the model's).

Nothing here imports tiktoken or ``regex`` at module import time; the first count loads one
encoding (~0.15-0.3 s for ``o200k_base``, in steps that each hold the GIL a millisecond or
two), once per process, under a lock.

How a request's prompt is shaped is each provider family's to say
(``Provider.count_prompt`` in ``providers/``): OpenAI-style chat by the formula of OpenAI's
cookbook ("How to count tokens with tiktoken"), Anthropic and Gemini prompts as their text
only (their tokenizers and message framing are not public). This module supplies the
encoding and the tally (``providers.PromptTally``). An image counts :data:`IMAGE_TOKENS`,
audio and files nothing.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import zlib
from binascii import a2b_base64
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import EncodingDataError
from ..providers import PromptTally, Provider, prompt_readers, registered_providers, shape_parser
from ..providers._prompt import IMAGE_TOKENS

if TYPE_CHECKING:
    from ._bpe import BytePairEncoding

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

_ENCODINGS_DIR = Path(__file__).resolve().parent.parent / "encodings"

# Same special tokens and split patterns as tiktoken_ext/openai_public.py (tiktoken 0.14.0);
# tests/record/test_tokens.py checks they still agree with the installed tiktoken.
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


_lock = threading.Lock()
_encodings: dict[str, BytePairEncoding] = {}
_failures: dict[str, EncodingDataError] = {}


# --------------------------------------------------------------------------- loading


#: Bytes of an encoding file decompressed, hashed and parsed per step (~5,000 lines): each
#: step is a few short loops in C, so loading never holds the GIL for more than a
#: millisecond or two at a time (the file is ~3 MB once decompressed).
_LOAD_STEP = 64 * 1024


def _read_ranks(name: str) -> dict[bytes, int]:
    """Read, verify and parse ``encodings/<name>.tiktoken.gz`` (no cache, no network), in
    steps of :data:`_LOAD_STEP` bytes."""
    path = _ENCODINGS_DIR / f"{name}.tiktoken.gz"
    ranks: dict[bytes, int] = {}
    digest = hashlib.sha256()
    malformed: ValueError | None = None
    try:
        data = path.read_bytes()
        decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
        rest = b""
        while True:
            piece = decompressor.decompress(data, _LOAD_STEP)
            data = decompressor.unconsumed_tail
            if not piece:
                break
            digest.update(piece)
            lines = rest + piece
            end = lines.rfind(b"\n") + 1
            rest = lines[end:]
            if malformed is None:
                try:
                    _add_lines(ranks, lines[:end])
                except ValueError as exc:
                    malformed = exc
        if not decompressor.eof:
            raise EOFError("the compressed file ends before its end-of-stream marker")
        if rest and malformed is None:
            _add_lines(ranks, rest)
    except (OSError, EOFError, zlib.error) as exc:
        raise EncodingDataError(
            f"httptrack's bundled encoding file {path} cannot be read ({exc}); reinstall httptrack"
        ) from exc
    except ValueError as exc:
        malformed = exc
    expected = ENCODING_SHA256[name]
    if digest.hexdigest() != expected:
        raise EncodingDataError(
            f"httptrack's bundled encoding file {path} is not the official {name} "
            f"(sha256 {digest.hexdigest()}, expected {expected}); reinstall httptrack or rerun "
            "scripts/build_encodings.py"
        )
    if malformed is not None:  # unreachable for a file whose hash matched
        raise EncodingDataError(f"{path}: malformed line ({malformed})") from malformed
    return ranks


def _add_lines(ranks: dict[bytes, int], lines: bytes) -> None:
    """Add the ``<base64 token> <rank>`` lines of ``lines`` (whole lines) to ``ranks``."""
    fields = lines.split()
    if len(fields) % 2:
        raise ValueError("a line without its rank")
    ranks.update(zip(map(a2b_base64, fields[0::2]), map(int, fields[1::2]), strict=True))


def _build_encoding(name: str) -> BytePairEncoding:
    """A fresh encoding from the shipped file (no cache). Not ``tiktoken.Encoding``: its
    Rust constructor holds the GIL for 100-200 ms (see ``_bpe``)."""
    from ._bpe import BytePairEncoding

    return BytePairEncoding(name, _PAT_STR[name], _read_ranks(name), dict(_SPECIAL_TOKENS[name]))


def load_encoding(name: str) -> BytePairEncoding:
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


def encoding_for_model(model: str | None) -> BytePairEncoding:
    """The encoding to count ``model``'s tokens with (see
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
    return encoding_for_model(model).count(text)


def count_output_text(text: str, model: str | None) -> int:
    """Tokens of generated ``text`` (a completion read back from a response or stream)."""
    return count_text(text, model)


def _counter(model: str | None) -> tuple[Callable[[str], int], str]:
    """The function counting a text's tokens with ``model``'s encoding, and its name."""
    enc = encoding_for_model(model)
    return enc.count, enc.name


def _tally(model: str | None) -> PromptTally:
    """An empty tally counting with ``model``'s encoding."""
    return PromptTally(*_counter(model))


def count_chat_messages(messages: list[object], model: str | None = None) -> int:
    """Prompt tokens of chat-format ``messages`` by the OpenAI cookbook formula.

    Each message counts 3 plus its role, content (a string or a list of parts: text parts
    by their text, image parts :data:`IMAGE_TOKENS`), ``name`` (+1), and the function name
    and arguments of its ``tool_calls``; the reply is primed with 3 more. What it cannot
    read it skips; anything but a list counts 0.
    """
    if not isinstance(messages, list):
        return 0
    tally = _tally(model)
    shape_parser("openai").count_prompt(tally, "chat", {"messages": messages})
    return tally.total


def count_tools(tools: list[object], model: str | None = None) -> int:
    """Prompt tokens of OpenAI function-tool definitions, by the cookbook's
    ``num_tokens_for_tools`` (its gpt-4o constants for ``o200k_base`` models, its gpt-4
    ones for ``cl100k_base``). Built-in tools and odd shapes count 0."""
    tally = _tally(model)
    shape_parser("openai").count_prompt(tally, "chat", {"messages": [], "tools": tools})
    return tally.total


def estimate_prompt_tokens(
    provider: Provider | str | None, operation: str, body: object, model: str | None
) -> int | None:
    """Best-effort input tokens of a request ``body`` (decoded JSON), or ``None`` when it
    holds nothing countable (or counting failed). Never raises.

    ``provider`` is the parser that read the call (``Provider.parser_for``), or a provider
    family's name: it counts the body as its family's requests are shaped; when it finds
    nothing there, the body is tried as each known API shape in turn (OpenAI's, Anthropic's,
    Gemini's). ``model`` picks the encoding; it defaults to the body's ``model``.
    """
    try:
        if not isinstance(body, dict):
            return None
        if not model:
            body_model = body.get("model")
            model = body_model if isinstance(body_model, str) else None
        if not isinstance(provider, Provider):
            name = provider.lower() if isinstance(provider, str) else ""
            provider = registered_providers().get(name) or shape_parser("openai")
        operation = operation.lower() if isinstance(operation, str) else ""
        count, encoding = _counter(model)
        for reader in prompt_readers(provider):
            tally = PromptTally(count, encoding)
            reader.count_prompt(tally, operation, body)
            if tally.found:
                return tally.total
        return None
    except Exception:  # an estimate must never break the recorder
        log.debug("token estimate failed for a %r %s request", provider, operation, exc_info=True)
        return None
