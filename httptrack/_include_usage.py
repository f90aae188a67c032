"""Ask OpenAI-style streams for their usage, without the app noticing.

An OpenAI chat completions stream reports token usage only when the request says
``"stream_options": {"include_usage": true}``; without it a tracker can only estimate.
For providers known to accept the option (``Provider.include_usage``), the tracking
transport adds it to streaming requests that do not ask for usage, and the response's tee
removes the one extra event it brings (the usage chunk, ``"choices": []``) from what the app
receives (``_streams.UsageChunkFilter``); the recorder still reads it.

The app's own request is what gets recorded and what the response cache keys on: only the
bytes on the wire change. The body is edited in place (the option inserted after the
opening brace) so everything the app wrote keeps its bytes; when it already has a
``stream_options`` object without ``include_usage``, that object is extended instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["INCLUDE_USAGE", "with_include_usage"]

#: What the ``rewritten`` note names.
INCLUDE_USAGE = "stream_options.include_usage"
_OPTION = b'"stream_options":{"include_usage":true},'
# A top-level-looking `"stream": true`: a cheap test before parsing the body at all.
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
# Bodies larger than this are sent untouched (parsing them on the app's thread costs).
_MAX_BODY = 4 * 1024 * 1024


def with_include_usage(body: bytes) -> bytes | None:
    """``body`` with ``stream_options.include_usage`` set, or ``None`` when it needs no change
    (not a streaming request, usage already asked for, not a JSON object, too large)."""
    if len(body) > _MAX_BODY or body.lstrip()[:1] != b"{" or _STREAM_TRUE.search(body) is None:
        return None  # (a UTF-16 or UTF-32 body starts otherwise: never edited byte-wise)
    try:
        data: Any = json.loads(body)
    except ValueError:
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
