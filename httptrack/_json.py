"""``json.loads`` for request and response bodies (bytes), without its layers of Python.

Bodies are decoded on hot paths: the cache key on the app's thread, every row in the
writer. ``json.loads(bytes)`` spends as long finding the encoding, decoding and wrapping
errors as the C scanner spends on a small body. :func:`loads_bytes` calls the scanner
directly and gives exactly what ``json.loads`` gives (the same value, or a ``ValueError``
where it raises one); anything that is not plainly UTF-8 goes to ``json.loads`` itself.

Where ``msgspec`` is installed (a dependency) a document is first decoded by its JSON
decoder, 3-4x faster than the C scanner; whatever it refuses (NaN, a lone surrogate, JSON
that is not valid, a byte order mark, ...) goes the way above, so the outcome is always
exactly ``json.loads``'s (msgspec keeps integers of any size, like ``json``, unlike orjson,
which turns those past 64 bits into floats).

The C scanner holds the GIL for a whole document: 10 MB of JSON (an embeddings reply, a
request with an image) stops every other thread of the app for 100-400 ms. The writer
decodes what is longer than :data:`SCAN_IN_C_MAX` with :func:`loads_in_steps` instead:
json's own pure-Python scanner (the same values, or the same errors), which lets go of the
GIL between values; its strings are still decoded in C, one at a time.
"""

from __future__ import annotations

import json
import re
from json.scanner import py_make_scanner  # type: ignore[attr-defined]
from typing import Any

__all__ = ["SCAN_IN_C_MAX", "STEPPING_DECODER", "loads_bytes", "loads_in_steps", "loads_text"]

#: The longest JSON (bytes or characters) decoded by the C scanner in the writer: ~2-10 ms.
SCAN_IN_C_MAX = 256 * 1024
#: A decoder whose ``raw_decode``/``decode`` run json's pure-Python scanner.
STEPPING_DECODER = json.JSONDecoder()
STEPPING_DECODER.scan_once = py_make_scanner(STEPPING_DECODER)  # type: ignore[attr-defined]

try:
    from msgspec.json import Decoder as _FastDecoder

    _fast: Any = _FastDecoder().decode
    #: msgspec's DecodeError is a ValueError; a str it cannot encode raises UnicodeEncodeError.
    _FAST_ERRORS: tuple[type[BaseException], ...] = (ValueError, RecursionError)
except ImportError:  # pragma: no cover - msgspec is a dependency; json alone still works
    _fast = None
    _FAST_ERRORS = ()

# The C scanner, as json.loads uses it (an attribute typeshed does not declare).
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_space = re.compile(r"[ \t\n\r]*").match  # json.decoder.WHITESPACE


def loads_bytes(data: bytes) -> Any:
    """``json.loads(data)`` for ``bytes``; raises ``ValueError`` where it does."""
    if _fast is not None:
        try:
            return _fast(data)
        except _FAST_ERRORS:
            pass  # json's own rules decide: its value, or its error
    # What json.detect_encoding would call UTF-8: an ASCII first byte (no byte order mark,
    # no NUL) and, at these lengths, no NUL second byte (UTF-16/32 without a BOM).
    if not data or not 0 < data[0] < 0x80 or (len(data) != 3 and len(data) > 1 and not data[1]):
        return json.loads(data)  # empty, a byte order mark, UTF-16/32 ...: its own rules
    return _decode(data.decode("utf-8", "surrogatepass"))


def loads_text(text: str) -> Any:
    """``json.loads(text)`` for ``str`` (a stream event's data); raises ``ValueError`` where it does."""
    if _fast is not None:
        try:
            return _fast(text)
        except _FAST_ERRORS:
            pass
    if text[:1] == "\ufeff":
        return json.loads(text)  # its own error for a byte order mark
    return _decode(text)


def _decode(text: str) -> Any:
    """What ``json.JSONDecoder.decode`` does, with the C scanner called directly."""
    try:
        value, end = _scan(text, _space(text).end())  # type: ignore[union-attr]
    except StopIteration as exc:
        raise json.JSONDecodeError("Expecting value", text, exc.value) from None
    end = _space(text, end).end()  # type: ignore[union-attr]
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def loads_in_steps(data: bytes | str) -> Any:
    """:func:`loads_bytes` / :func:`loads_text`, for the writer: a document longer than
    :data:`SCAN_IN_C_MAX` is decoded by the pure-Python scanner, never holding the GIL for
    long. Raises ``ValueError`` where ``json.loads`` does (and ``RecursionError`` for a
    document nested too deeply, sooner than the C scanner: each level is a few frames)."""
    if len(data) <= SCAN_IN_C_MAX:
        return loads_text(data) if isinstance(data, str) else loads_bytes(data)
    if isinstance(data, bytes):
        data = data.decode(json.detect_encoding(data), "surrogatepass")
    if data[:1] == "\ufeff":
        return json.loads(data)  # its own error for a byte order mark
    return STEPPING_DECODER.decode(data)
