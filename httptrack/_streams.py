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
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from ._exchange import Exchange

__all__ = ["AsyncTee", "ReplayChunks", "SyncTee"]


class _Tee:
    def __init__(self, inner: Any, exchange: Exchange, on_end: Callable[[Exchange], None]) -> None:
        self._inner = inner
        self._exchange = exchange
        self._on_end = on_end

    def _end(self, outcome: str, exc: BaseException | None = None) -> None:
        if self._exchange.end(outcome, exc):
            self._on_end(self._exchange)

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
        try:
            for chunk in self._inner:
                add(chunk)
                yield chunk
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
        try:
            async for chunk in self._inner:
                add(chunk)
                yield chunk
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

