"""``json.loads`` for request and response bodies (bytes), without its layers of Python.

Bodies are decoded on hot paths: the cache key on the app's thread, every row in the
writer. ``json.loads(bytes)`` spends as long finding the encoding, decoding and wrapping
errors as the C scanner spends on a small body. :func:`loads_bytes` calls the scanner
directly and gives exactly what ``json.loads`` gives (the same value, or a ``ValueError``
where it raises one); anything that is not plainly UTF-8 goes to ``json.loads`` itself.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["loads_bytes", "loads_text"]

# The C scanner, as json.loads uses it (an attribute typeshed does not declare).
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_space = re.compile(r"[ \t\n\r]*").match  # json.decoder.WHITESPACE


def loads_bytes(data: bytes) -> Any:
    """``json.loads(data)`` for ``bytes``; raises ``ValueError`` where it does."""
    # What json.detect_encoding would call UTF-8: an ASCII first byte (no byte order mark,
    # no NUL) and, at these lengths, no NUL second byte (UTF-16/32 without a BOM).
    if not data or not 0 < data[0] < 0x80 or (len(data) != 3 and len(data) > 1 and not data[1]):
        return json.loads(data)  # empty, a byte order mark, UTF-16/32 ...: its own rules
    return _decode(data.decode("utf-8", "surrogatepass"))


def loads_text(text: str) -> Any:
    """``json.loads(text)`` for ``str`` (a stream event's data); raises ``ValueError`` where it does."""
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
