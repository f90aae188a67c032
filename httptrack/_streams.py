"""Tee streams: hand every chunk to the app as it arrives, keep a reference for the record.

The app's view is untouched: the same chunks, in the same sizes, at the same moments (no
buffering, no re-chunking). Per chunk the tee does a length check and a list append.

The record is finished exactly once, whichever comes first:
- the inner stream is exhausted → ``complete``;
- the inner stream raises → ``failed`` (the exception still reaches the app unchanged);
- the app closes the response before the end (``break`` out of a stream, an exception in
  its own code) → ``cut_short``, with what was received. httpx always calls
  ``close()``/``aclose()`` here; a generator's ``finally`` would not be reliable;
- the response is garbage-collected unread and unclosed → ``cut_short``.

``SyncTee``/``AsyncTee`` hold the logic; the httpx and httpx2 clients assert that a
response stream is an instance of *their* ``SyncByteStream``/``AsyncByteStream``, so
``_transport`` mixes these into per-library subclasses.

One exception to "the same chunks": when httptrack itself asked a stream for its usage
chunk (``_include_usage``), the exchange carries a :class:`UsageChunkFilter` and the app
receives the stream without that one event (when the stream shows it was sent because
httptrack asked: see the filter). The recorder still gets every byte.

The request side: :class:`RequestTee` passes a streamed upload (``content=`` an iterator)
on chunk by chunk as the inner transport reads it, keeping a copy for the record.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ._exchange import Exchange

if TYPE_CHECKING:
    from ._vocab import Outcome

__all__ = ["AsyncTee", "ReplayChunks", "RequestTee", "SyncTee", "UsageChunkFilter", "finish_open_streams"]

# The end of an SSE event: a blank line, whatever the line endings.
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r|\n\r\n|\r\n\n")


class UsageChunkFilter:
    """Cuts an SSE stream at event boundaries and drops the one usage event that httptrack
    asked for, and only that: the first one with a ``usage`` object that ``is_usage_chunk``
    (the provider's test, given the event's decoded JSON) calls the usage chunk.

    Which usage event httptrack caused: it asks for usage only in a request that did not
    (``_include_usage``), so the app would have received no usage chunk from a server that
    sends one only when asked. OpenAI's protocol says such a server then gives every other
    chunk a ``"usage": null`` member, and OpenAI does (recorded in
    ``provider-samples/openai_chat_stream_include_usage``; a stream that did not ask has no
    ``usage`` member at all). A usage event that comes after chunks without that mark was
    sent whether asked or not (OpenAI's own recorded fixture in its SDK's tests has one;
    so do servers that always report usage): the app would have had it, and receives it.
    ``needs_mark=False`` is for servers known to answer the option without marking their
    chunks (``Provider.marks_usage_chunks``: Ollama's ``/v1``, vLLM): there the first usage
    event is httptrack's.

    The app's SSE parser acts on complete events only, so forwarding each complete event as
    soon as its blank line arrives delays nothing it could act on; only the bytes of an
    unfinished event wait (for the rest of that event). Per chunk: a few ``rfind`` calls and
    substring tests; an event is parsed only when it holds a usage object.
    """

    __slots__ = ("_buffer", "_is_usage_chunk", "done", "marked", "removed")

    def __init__(self, is_usage_chunk: Callable[[Any], bool], *, needs_mark: bool = True) -> None:
        self._buffer = b""
        self._is_usage_chunk = is_usage_chunk
        #: A chunk with ``"usage": null`` was seen (the server answered the option);
        #: ``True`` from the start when the mark is not needed.
        self.marked = not needs_mark
        #: The usage event was found and kept from the app.
        self.removed = False
        #: The first usage-only event has gone by (kept from the app or not): the rest of
        #: the stream is passed on as it is.
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """The bytes of ``chunk`` (with what was held back) that the app may have now."""
        data = self._buffer + chunk if self._buffer else chunk
        if data.endswith(b"\n\n"):  # the common case: servers flush whole events
            self._buffer = b""
        else:
            # The last blank line: LF, CRLF or CR line ends (one server uses one kind; a
            # stream mixing them within one blank line only waits longer, nothing is lost).
            lf, crlf, cr = data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n"), data.rfind(b"\r\r")
            end = max(lf + 2 if lf >= 0 else -1, crlf + 4 if crlf >= 0 else -1, cr + 2 if cr >= 0 else -1)
            if end < 0:
                self._buffer = data
                return b""
            self._buffer = data[end:]
            data = data[:end]
        return self._filter(data)

    def flush(self) -> bytes:
        """What is left at the end of the stream (an event with no closing blank line)."""
        data, self._buffer = self._buffer, b""
        return self._filter(data) if data else data

    def _filter(self, data: bytes) -> bytes:
        if self.done:
            return data
        if not _has_usage_object(data):
            if not self.marked and _has_usage_null(data):
                self.marked = True
            return data
        pieces = _EVENT_END.split(data)
        ends = _EVENT_END.findall(data)
        kept: list[bytes] = []
        for index, event in enumerate(pieces):
            end = ends[index] if index < len(ends) else b""
            if not self.done and self._is_usage_event(event):
                self.done = True
                if self.marked:  # httptrack's: kept from the app
                    self.removed = True
                    continue
                # else the server's own: the app would have had it without httptrack
            elif not self.marked and _has_usage_null(event):
                self.marked = True
            kept.append(event + end)
        return b"".join(kept)

    def _is_usage_event(self, event: bytes) -> bool:
        lines = [line for line in re.split(rb"\r\n|\r|\n", event) if line.startswith(b"data:")]
        if not lines:
            return False
        payload = b"\n".join(line[5:].removeprefix(b" ") for line in lines)
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError):  # nested too deeply to decode: passed on as it is
            return False
        return self._is_usage_chunk(data)


def _has_usage_null(data: bytes) -> bool:
    """Whether ``data`` has the ``"usage": null`` member of a stream that asked for usage
    (inside a JSON string a quote is escaped, so this cannot match generated text)."""
    return b'"usage":null' in data or b'"usage": null' in data


def _has_usage_object(data: bytes) -> bool:
    """Whether ``data`` has ``"usage":`` followed by an object (every chunk of a stream that
    asked for usage carries ``"usage":null``: that one costs a single scan)."""
    start = data.find(b'"usage":')
    while start >= 0:
        rest = data[start + 8 : start + 10].lstrip()
        if rest.startswith(b"{"):
            return True
        start = data.find(b'"usage":', start + 8)
    return False


#: Streams handed to the app and not finished yet (by ``id`` of their exchange), so that what
#: they received is still recorded when the interpreter exits with responses left open. The
#: exchange and its callback are held, not the tee: a tee nobody closes is still
#: garbage-collected (its ``__del__`` records it). A dict, not a ``WeakSet`` of tees: this
#: runs twice per call on the app's thread, and a weak reference costs several times more.
_open: dict[int, tuple[Exchange, Callable[[Exchange], None]]] = {}


def finish_open_streams() -> None:
    """Record every stream still open as ``cut_short`` (called at interpreter exit)."""
    for exchange, on_end in list(_open.values()):
        if exchange.end("cut_short"):
            _open.pop(id(exchange), None)
            on_end(exchange)


class _Tee:
    def __init__(self, inner: Any, exchange: Exchange, on_end: Callable[[Exchange], None]) -> None:
        self._inner = inner
        self._exchange = exchange
        self._on_end = on_end
        _open[id(exchange)] = (exchange, on_end)

    def _end(self, outcome: Outcome, exc: BaseException | None = None) -> None:
        exchange = self._exchange
        if exchange.end(outcome, exc):
            _open.pop(id(exchange), None)
            self._on_end(exchange)

    def __del__(self) -> None:
        # Last resort for a response nobody closed. Never raise from a finalizer.
        try:
            if not self._exchange.finished:
                self._end("cut_short")
        except Exception:  # pragma: no cover - interpreter shutdown and the like
            pass


class SyncTee(_Tee):
    def __iter__(self) -> Iterator[bytes]:
        add = self._exchange.add_chunk
        chunk_filter = self._exchange.chunk_filter
        try:
            if chunk_filter is None:
                for chunk in self._inner:
                    add(chunk)
                    yield chunk
            else:
                feed = chunk_filter.feed
                for chunk in self._inner:
                    add(chunk)
                    if out := feed(chunk):
                        yield out
                if out := chunk_filter.flush():
                    yield out
        except GeneratorExit:
            raise
        except Exception as exc:
            self._end("failed", exc)
            raise
        except BaseException:  # KeyboardInterrupt and the like: the app stopped it
            self._end("cut_short")
            raise
        self._end("complete")

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._end("cut_short")


class AsyncTee(_Tee):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        add = self._exchange.add_chunk
        chunk_filter = self._exchange.chunk_filter
        try:
            if chunk_filter is None:
                async for chunk in self._inner:
                    add(chunk)
                    yield chunk
            else:
                feed = chunk_filter.feed
                async for chunk in self._inner:
                    add(chunk)
                    if out := feed(chunk):
                        yield out
                if out := chunk_filter.flush():
                    yield out
        except GeneratorExit:
            raise
        except Exception as exc:
            self._end("failed", exc)
            raise
        except BaseException:  # asyncio.CancelledError: the app's task was cancelled
            self._end("cut_short")
            raise
        self._end("complete")

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._inner, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._end("cut_short")


class RequestTee:
    """A streamed request body (``content=`` an iterator or a file, multipart with files)
    handed to the inner transport chunk by chunk, as it reads them: nothing is read ahead,
    so the first byte leaves before the app's generator has made the last, as without
    httptrack. A copy of each chunk is kept for the record (``exchange.request_parts``, up
    to the exchange's body cap) and the bytes sent are counted (``exchange.request_sent``);
    the pipeline joins them into ``request_body`` when the call is recorded.

    ``_transport`` mixes this into the library's ``SyncByteStream`` or ``AsyncByteStream``
    (its transports assert the request stream is one of theirs)."""

    def __init__(self, inner: Any, exchange: Exchange) -> None:
        self._inner = inner
        self._exchange = exchange

    def _keep(self, chunk: bytes) -> None:
        exchange = self._exchange
        kept = exchange.request_sent
        exchange.request_sent = kept + len(chunk)
        parts = exchange.request_parts
        if parts is not None and kept < exchange.limit:
            parts.append(chunk if kept + len(chunk) <= exchange.limit else chunk[: exchange.limit - kept])

    def __iter__(self) -> Iterator[bytes]:
        keep = self._keep
        for chunk in self._inner:
            keep(chunk)
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        keep = self._keep
        async for chunk in self._inner:
            keep(chunk)
            yield chunk

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()

    async def aclose(self) -> None:
        aclose = getattr(self._inner, "aclose", None)
        if aclose is not None:
            await aclose()


class ReplayChunks:
    """Stored chunks as an inner stream (sync and async) for a cache hit: the same chunk
    boundaries as the original response, so an SDK iterating it behaves as with a live one.

    Like a network stream it is a cursor, not a list: iterating it again continues where
    the last iteration stopped (the async ``openai`` SDK drains ``response.stream`` anew
    after ``[DONE]``; starting over would deliver the body twice)."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._chunks = chunks
        self._next = 0

    def __iter__(self) -> Iterator[bytes]:
        chunks = self._chunks
        while self._next < len(chunks):
            self._next += 1
            yield chunks[self._next - 1]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._chunks
        while self._next < len(chunks):
            self._next += 1
            yield chunks[self._next - 1]

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass
