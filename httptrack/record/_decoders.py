"""Incremental decoders for the stream formats LLM APIs use.

Each decoder is fed bytes in whatever pieces the network delivered — split mid-line,
mid-event or mid-UTF-8 character — and returns the complete events found so far. Feeding
the same bytes split any other way yields the same events; that property is fuzzed.

- ``SSEDecoder``: Server-Sent Events (OpenAI, Anthropic, Gemini ``alt=sse``, Mistral ...),
  per the WHATWG spec: ``\\r\\n``, ``\\r`` or ``\\n`` line ends, multi-line ``data:``,
  comments, a leading BOM.
- ``NDJSONDecoder``: one JSON value per line (Ollama).
- ``JSONArrayDecoder``: one JSON array whose elements arrive over time (Gemini's
  ``streamGenerateContent`` without ``alt=sse``).
- ``ContentDecoder``: undoes ``Content-Encoding`` (gzip, deflate, br, zstd) incrementally
  and in bounded pieces (a compression bomb is never inflated at once); the transport sees
  the bytes as they came off the wire.
"""

from __future__ import annotations

import codecs
import importlib
import itertools
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .._json import SCAN_IN_C_MAX, STEPPING_DECODER, loads_in_steps

__all__ = [
    "TOO_DEEP",
    "ContentDecoder",
    "JSONArrayDecoder",
    "NDJSONDecoder",
    "SSEDecoder",
    "SSEEvent",
    "StreamDecoder",
    "decoder_for",
    "sse_pairs",
]


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class _TooDeep:
    """What an event decodes to when its JSON is nested deeper than Python's recursion
    limit (``json`` raises ``RecursionError``): it is skipped, with a note."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TOO_DEEP"


TOO_DEEP = _TooDeep()


class StreamDecoder:
    """Base: ``feed(bytes) -> events``, ``close() -> events`` (what a final partial line held)."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> list[Any]:
        raise NotImplementedError

    def close(self) -> list[Any]:
        raise NotImplementedError

    def decode_all(self, chunks: list[bytes]) -> list[Any]:
        """Every event of a body held as ``chunks``: ``feed`` each, then ``close``."""
        events = []
        for chunk in chunks:
            events += self.feed(chunk)
        return events + self.close()


class _WholeBody(StreamDecoder):
    """A decoder whose events never depend on where the bytes were split (SSE and NDJSON:
    a line is read once complete): a body is fed in one piece, so the work per piece (the
    incremental text decoder, the buffer, the line search) is done once, not per chunk."""

    def decode_all(self, chunks: list[bytes]) -> list[Any]:
        return self.feed(b"".join(chunks)) + self.close()


class SSEDecoder(_WholeBody):
    def __init__(self) -> None:
        super().__init__()
        self._buffer = ""
        self._started = False
        self._pending_cr = False
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, data: bytes) -> list[SSEEvent]:
        return self._push(self._text.decode(data))

    def close(self) -> list[SSEEvent]:
        events = self._push(self._text.decode(b"", final=True))
        if self._buffer:
            # A last line with no terminator: the spec drops an unterminated event, but a
            # stream cut short is exactly when we want whatever arrived; keep it.
            self._line(self._buffer, events)
            self._buffer = ""
        self._dispatch(events)
        return events

    def _push(self, text: str) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if not text:
            return events
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._pending_cr:
            # The previous piece ended with "\r": a following "\n" belongs to that line end.
            self._pending_cr = False
            if text.startswith("\n"):
                text = text[1:]
        buffer = self._buffer + text
        if "\r" not in buffer:
            # "\n" line ends only (as every provider sends them): the lines are the pieces
            # between them, the last (unterminated) one kept for the next piece.
            *lines, self._buffer = buffer.split("\n")
            data = self._data
            for line in lines:
                # The two lines of nearly every event read here, without a call: "data: ..."
                # and the blank line that ends the event (as _line and _dispatch read them).
                if not line:
                    if data:
                        events.append(SSEEvent(self._event, "\n".join(data), self._id))
                        data = self._data = []
                    self._event = None
                elif line.startswith("data: "):
                    data.append(line[6:])
                else:
                    self._line(line, events)
            return events
        start = 0
        length = len(buffer)
        # The next "\r" and "\n" at or after ``start``, searched for again only once passed:
        # a piece with no "\r" at all (the usual case) is not scanned to its end per line.
        cr = lf = -2
        while start < length:
            if cr != -1 and cr < start:
                cr = buffer.find("\r", start)
            if lf != -1 and lf < start:
                lf = buffer.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, after = lf, lf + 1
            elif cr + 1 < length:
                end, after = cr, cr + 2 if buffer[cr + 1] == "\n" else cr + 1
            else:
                end, after = cr, cr + 1
                self._pending_cr = True
            self._line(buffer[start:end], events)
            start = after
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value

    def _dispatch(self, events: list[SSEEvent]) -> None:
        if self._data:
            events.append(SSEEvent(self._event, "\n".join(self._data), self._id))
        self._event = None
        self._data = []


def sse_pairs(chunks: list[bytes]) -> list[tuple[str | None, str]]:
    """``(event, data)`` of every event of a whole SSE body held as ``chunks``: what
    ``SSEDecoder().decode_all(chunks)`` gives. A body of the plain shape every provider
    sends (``data: ...`` lines, each after an optional ``event: ...`` line, events ended by
    a blank line) is split at once, without a step per line; any other goes through
    :class:`SSEDecoder`."""
    text = b"".join(chunks).decode("utf-8", "replace").removeprefix("\ufeff")
    if "\r" in text:
        if text.count("\r") != text.count("\r\n"):
            return _decoded_pairs(chunks)  # a lone "\r" line end
        text = text.replace("\r\n", "\n")  # the same lines, whole body at once
    blocks = text.split("\n\n")
    last = blocks.pop().removesuffix("\n")  # an event cut short is kept, as close() keeps it
    if last:
        blocks.append(last)
    pairs: list[tuple[str | None, str]] = []
    append = pairs.append
    for block in blocks:
        if block.startswith("data: ") and "\n" not in block:
            append((None, block[6:]))
        elif block.startswith("event: "):
            name, sep, data = block[7:].partition("\n")
            if not sep or not data.startswith("data: ") or "\n" in data or "\n" in name:
                return _decoded_pairs(chunks)
            append((name, data[6:]))
        elif block:  # (extra blank lines end no event)
            return _decoded_pairs(chunks)
    return pairs


def _decoded_pairs(chunks: list[bytes]) -> list[tuple[str | None, str]]:
    return [(event.event, event.data) for event in SSEDecoder().decode_all(chunks)]


class NDJSONDecoder(_WholeBody):
    """Yields each line's JSON value, or the raw line text when it is not valid JSON
    (:data:`TOO_DEEP` when it is nested too deeply to decode)."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer = ""

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += self._text.decode(data)
        if "\n" not in self._buffer:
            return []
        *lines, self._buffer = self._buffer.split("\n")
        return [_json_or_text(line) for line in lines if line.strip()]

    def close(self) -> list[Any]:
        rest = self._buffer + self._text.decode(b"", final=True)
        self._buffer = ""
        return [_json_or_text(line) for line in rest.split("\n") if line.strip()]


class JSONArrayDecoder(StreamDecoder):
    """Elements of a top-level JSON array, each as soon as it is complete. An element nested
    too deeply to decode yields :data:`TOO_DEEP`, and ends the reading: where it ends cannot
    be told without decoding it."""

    _decoder = json.JSONDecoder()

    def __init__(self) -> None:
        super().__init__()
        self._buffer = ""
        self._opened = False
        #: The array's closing ``]`` arrived (a stream cut short never has it).
        self.closed = False
        #: An element was nested too deeply to decode: nothing after it is read.
        self.too_deep = False

    def feed(self, data: bytes) -> list[Any]:
        if self.too_deep:
            return []
        self._buffer += self._text.decode(data)
        return self._drain(final=False)

    def close(self) -> list[Any]:
        if self.too_deep:
            return []
        self._buffer += self._text.decode(b"", final=True)
        return self._drain(final=True)

    def _drain(self, *, final: bool) -> list[Any]:
        items: list[Any] = []
        buffer = self._buffer
        pos = 0
        while True:
            pos = _skip(buffer, pos, " \t\r\n,")
            if not self._opened:
                if pos < len(buffer) and buffer[pos] == "[":
                    self._opened = True
                    pos += 1
                    continue
                if pos < len(buffer) and buffer[pos] in '{"':
                    self._opened = True  # a bare object or sequence: read it all the same
                else:
                    break
            if pos >= len(buffer):
                break
            if buffer[pos] == "]":
                self.closed = True
                break
            # A long element is decoded by the pure-Python scanner (see _json).
            decoder = self._decoder if len(buffer) - pos <= SCAN_IN_C_MAX else STEPPING_DECODER
            try:
                item, end = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError:
                break  # incomplete: wait for more
            except RecursionError:
                self.too_deep = True
                items.append(TOO_DEEP)
                pos = len(buffer)
                break
            if type(item) in (int, float) and not final and (end == len(buffer) or buffer[end] not in _AFTER):
                break  # a number may go on in the next chunk: "[12" + "3]", "[1.5e" + "3]"
            items.append(item)
            pos = end
        self._buffer = buffer[pos:]
        return items


#: What may follow an array element (a number is only complete once one of these follows).
_AFTER = frozenset(" \t\r\n,]")


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _json_or_text(line: str) -> Any:
    try:
        return loads_in_steps(line)
    except ValueError:
        return line
    except RecursionError:
        return TOO_DEEP


def decoder_for(fmt: str) -> StreamDecoder:
    if fmt == "sse":
        return SSEDecoder()
    if fmt == "ndjson":
        return NDJSONDecoder()
    if fmt == "json-array":
        return JSONArrayDecoder()
    raise ValueError(f"unknown stream format {fmt!r}")


class ContentDecoder:
    """Undo a ``Content-Encoding`` incrementally, in bounded pieces. Unknown or unavailable
    encodings raise ``ValueError`` at construction so the caller can note it and store the
    raw bytes.

    ``decode`` and ``flush`` yield the decoded bytes in pieces of at most
    :data:`PIECE_BYTES` (brotli's decoder may overshoot a little): a few compressed bytes can
    stand for gigabytes (a compression bomb), so nothing is ever decoded all at once and the
    caller stops reading when it has what it needs. Several encodings ("gzip, br") are piped
    into each other piece by piece.
    """

    def __init__(self, encoding: str) -> None:
        self._steps: list[_Step] = []
        # Encodings apply in the order listed, so decoding runs in reverse.
        for name in reversed([e.strip().lower() for e in encoding.split(",") if e.strip()]):
            if name in ("identity", ""):
                continue
            if name in ("gzip", "x-gzip"):
                self._steps.append(_Zlib(zlib.MAX_WBITS | 16))
            elif name == "deflate":
                self._steps.append(_Deflate())
            elif name == "br":
                self._steps.append(_Brotli())
            elif name == "zstd":
                self._steps.append(_zstd())
            else:
                raise ValueError(f"unsupported content-encoding {name!r}")

    def decode(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of ``data`` (the next piece of the body), piece by piece."""
        pieces: Iterable[bytes] = (data,)
        for step in self._steps:
            pieces = _pipe(step.decode, pieces)
        yield from pieces

    def flush(self) -> Iterator[bytes]:
        """What the decoders still hold once the whole body was fed."""
        pieces: Iterable[bytes] = ()
        for step in self._steps:
            pieces = itertools.chain(_pipe(step.decode, pieces), step.flush())
        yield from pieces

    def decode_all(self, chunks: Iterable[bytes], *, final: bool = True) -> Iterator[bytes]:
        """The decoded bytes of a body held as ``chunks``, piece by piece; without ``final``
        (only the start of the body is there) what the decoders hold back is left unread."""
        for chunk in chunks:
            yield from self.decode(chunk)
        if final:
            yield from self.flush()


#: The most bytes one decoding step produces (what httpx2 itself decodes at a time).
PIECE_BYTES = 1 << 20


def _pipe(decode: Callable[[bytes], Iterator[bytes]], pieces: Iterable[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield from decode(piece)


class _Step(Protocol):
    def decode(self, data: bytes) -> Iterator[bytes]: ...

    def flush(self) -> Iterator[bytes]: ...


class _Zlib:
    """gzip (and zlib-wrapped deflate): ``decompress`` with an output limit, the rest of
    the input kept in ``unconsumed_tail`` for the next piece."""

    def __init__(self, wbits: int) -> None:
        self._obj = zlib.decompressobj(wbits)

    def decode(self, data: bytes) -> Iterator[bytes]:
        if data:
            yield from self._drain(self._obj.decompress(data, PIECE_BYTES))

    def _drain(self, out: bytes) -> Iterator[bytes]:
        obj = self._obj
        while out:  # full pieces may leave output pending even with no input left
            yield out
            out = obj.decompress(obj.unconsumed_tail, PIECE_BYTES)

    def flush(self) -> Iterator[bytes]:
        out = self._obj.flush()  # nothing is pending after _drain but the last few bytes
        if out:
            yield out


class _Deflate(_Zlib):
    """``deflate`` is zlib-wrapped by the spec but raw in the wild: try one, then the other."""

    def __init__(self) -> None:
        super().__init__(zlib.MAX_WBITS)
        self._first = True

    def decode(self, data: bytes) -> Iterator[bytes]:
        if self._first and data:
            self._first = False
            try:
                out = self._obj.decompress(data, PIECE_BYTES)
            except zlib.error:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                out = self._obj.decompress(data, PIECE_BYTES)
            yield from self._drain(out)
        else:
            yield from super().decode(data)


class _Brotli:
    """Google's ``brotli`` (``process``) or ``brotlicffi`` (``decompress``), both of which
    take an ``output_buffer_limit`` since 1.2. Older versions have none: the input is then
    fed a few bytes at a time, which bounds what one call produces only loosely (a byte of
    brotli can stand for megabytes)."""

    #: Half a piece: the C decoder may allocate up to twice the limit (httpx2 does the same).
    LIMIT = PIECE_BYTES // 2
    #: Input fed at a time to a decoder that takes no output limit.
    SLICE = 64

    def __init__(self) -> None:
        try:
            import brotli  # type: ignore[import-not-found]
        except ImportError:
            try:
                import brotlicffi as brotli  # type: ignore[import-not-found]
            except ImportError:
                raise ValueError("content-encoding br needs the brotli package") from None
        decompressor = brotli.Decompressor()
        # Google's brotli calls it ``process``, brotlicffi ``decompress``.
        process = getattr(decompressor, "process", None)
        self._process: Callable[..., bytes] = process if process is not None else decompressor.decompress
        self._limited = True

    def decode(self, data: bytes) -> Iterator[bytes]:
        if not data:
            return
        if self._limited:
            try:
                out = self._process(data, output_buffer_limit=self.LIMIT)
            except TypeError:  # brotli < 1.2: no output limit
                self._limited = False
            else:
                while out:
                    yield out
                    out = self._process(b"", output_buffer_limit=self.LIMIT)
                return
        for start in range(0, len(data), self.SLICE):
            out = self._process(data[start : start + self.SLICE])
            if out:
                yield out

    def flush(self) -> Iterator[bytes]:
        yield from ()


class _ZstdStdlib:
    """``compression.zstd`` (Python 3.14) or its backport: ``decompress`` with a
    ``max_length``; frames one after another each get a fresh decompressor."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self._obj = module.ZstdDecompressor()

    def decode(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self._obj.eof:
                self._obj = self._module.ZstdDecompressor()
            out = self._obj.decompress(data, PIECE_BYTES)
            while out:
                yield out
                if self._obj.needs_input or self._obj.eof:
                    break
                out = self._obj.decompress(b"", PIECE_BYTES)
            data = self._obj.unused_data if self._obj.eof else b""

    def flush(self) -> Iterator[bytes]:
        yield from ()


class _Zstandard:
    """The ``zstandard`` package, whose decompressor takes no output limit: the input is fed
    a few bytes at a time (a zstd block of 128 KiB can be written in 4 bytes, so one call
    produces a few MiB at most)."""

    SLICE = 64

    def __init__(self, module: Any) -> None:
        self._obj = module.ZstdDecompressor().decompressobj()

    def decode(self, data: bytes) -> Iterator[bytes]:
        for start in range(0, len(data), self.SLICE):
            out = self._obj.decompress(data[start : start + self.SLICE])
            if out:
                yield out

    def flush(self) -> Iterator[bytes]:
        yield from ()


def _zstd() -> _Step:
    for name in ("compression.zstd", "backports.zstd"):
        try:
            return _ZstdStdlib(importlib.import_module(name))
        except ImportError:
            continue
    try:
        import zstandard
    except ImportError:
        raise ValueError("content-encoding zstd needs the zstandard package") from None
    return _Zstandard(zstandard)
