"""Figures in datasette's CSV of a call log written as decimals: ``0.000049``, not the
``4.9e-05`` that Python writes for a small float (a spreadsheet, or a person, reads the
first). datasette has no hook for its CSV cells, so this rewrites the response as it
streams, for call log databases only: a field that is a number in exponent form, outside
quotes, becomes that number written out (the same digits: nothing is rounded)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from decimal import Decimal
from typing import Any

__all__ = ["DecimalCsv", "csv_decimals"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
App = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

#: An unquoted CSV field that is a number in exponent form.
_EXPONENT = re.compile(rb"(?:(?<=[,\n])|^)(-?\d+(?:\.\d+)?[eE][-+]?\d+)(?=[,\r\n]|$)")


def _written_out(match: re.Match[bytes]) -> bytes:
    return format(Decimal(match.group(1).decode("ascii")), "f").encode("ascii")


class DecimalCsv:
    """Rewrites a CSV stream chunk by chunk. A chunk is handled up to its last line end
    outside quotes; the rest waits for the next chunk (a field is never cut in two)."""

    def __init__(self) -> None:
        self._pending = b""
        self._quoted = False  # whether the pending text starts inside a quoted field

    def feed(self, data: bytes, *, final: bool = False) -> bytes:
        data = self._pending + data
        parts = data.split(b'"')
        # Part i is outside quotes when i is even (starting outside) or odd (starting inside).
        outside = 0 if not self._quoted else 1
        cut = len(data)
        if not final:
            cut, offset = 0, 0
            for i, part in enumerate(parts):
                if i % 2 == outside:
                    end = part.rfind(b"\n")
                    if end >= 0:
                        cut = offset + end + 1
                offset += len(part) + 1
        ready, self._pending = data[:cut], data[cut:]
        parts = ready.split(b'"')
        out = [
            _EXPONENT.sub(_written_out, part) if i % 2 == outside else part for i, part in enumerate(parts)
        ]
        if (len(parts) - 1) % 2:
            self._quoted = not self._quoted
        return b'"'.join(out)


def csv_decimals(app: App, is_log_path: Callable[[str], bool]) -> App:
    """ASGI middleware: the CSV responses of paths ``is_log_path`` accepts pass through
    :class:`DecimalCsv`; everything else is untouched."""

    async def wrapped(
        scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        path = scope.get("path", "")
        if scope.get("type") != "http" or not path.endswith(".csv") or not is_log_path(path):
            await app(scope, receive, send)
            return
        rewriter: DecimalCsv | None = None

        async def rewriting_send(message: Message) -> None:
            nonlocal rewriter
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                kind = dict((k.lower(), v) for k, v in headers).get(b"content-type", b"")
                if kind.startswith((b"text/csv", b"text/plain")):
                    rewriter = DecimalCsv()
                    # The length changes: sent without one (chunked) instead.
                    message = {
                        **message,
                        "headers": [(k, v) for k, v in headers if k.lower() != b"content-length"],
                    }
            elif message["type"] == "http.response.body" and rewriter is not None:
                more = bool(message.get("more_body"))
                message = {
                    **message,
                    "body": rewriter.feed(bytes(message.get("body") or b""), final=not more),
                }
            await send(message)

        await app(scope, receive, rewriting_send)

    return wrapped
