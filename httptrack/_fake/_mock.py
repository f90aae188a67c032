"""The fake provider in-process: handlers for ``httpx.MockTransport`` / ``httpx2.MockTransport``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from typing import Any

from ._common import FakeResponse, RecordedRequest
from ._routes import fake_exchange

__all__ = ["mock_handler", "mock_transport"]


_STREAM_CLASSES: dict[str, type] = {}


def _stream_class(lib: ModuleType) -> type:
    """A byte stream for ``lib`` (httpx or httpx2) that is both sync- and async-iterable."""
    cached = _STREAM_CLASSES.get(lib.__name__)
    if cached is not None:
        return cached

    class FakeByteStream(lib.SyncByteStream, lib.AsyncByteStream):  # type: ignore[name-defined,misc]
        def __init__(self, response: FakeResponse, request: Any) -> None:
            self._response = response
            self._request = request
            # A cursor, as a connection is: iterating again continues where the last
            # iteration stopped (SDKs drain a response's stream after its end marker).
            self._next = 0

        def _broken(self) -> Exception:
            message = "peer closed connection without sending complete message body"
            if self._response.streaming:
                message += " (incomplete chunked read)"
            return lib.RemoteProtocolError(message, request=self._request)  # type: ignore[no-any-return]

        def __iter__(self) -> Iterator[bytes]:
            delay, chunks = self._response.delay, self._response.chunks
            while self._next < len(chunks):
                if self._next and delay > 0:
                    time.sleep(delay)
                self._next += 1
                yield chunks[self._next - 1]
            if self._response.abort:
                raise self._broken()

        async def __aiter__(self) -> AsyncIterator[bytes]:
            delay, chunks = self._response.delay, self._response.chunks
            while self._next < len(chunks):
                if self._next and delay > 0:
                    import anyio

                    await anyio.sleep(delay)
                self._next += 1
                yield chunks[self._next - 1]
            if self._response.abort:
                raise self._broken()

    _STREAM_CLASSES[lib.__name__] = FakeByteStream
    return FakeByteStream


def mock_handler(lib: ModuleType, *, record: list[RecordedRequest] | None = None) -> Callable[[Any], Any]:
    """A handler for ``lib.MockTransport`` (``lib`` is the ``httpx`` or ``httpx2`` module).

    It works for sync and async clients alike: the response's stream yields
    :attr:`FakeResponse.chunks` one by one (sleeping ``delay`` between them) and raises
    ``lib.RemoteProtocolError`` where a real connection would drop. Requests are appended to
    ``record`` when given.
    """
    stream_class = _stream_class(lib)

    def handler(request: Any) -> Any:
        query = request.url.query
        query = query.decode("ascii") if isinstance(query, bytes) else str(query)
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = bytes(request.content)
        if record is not None:
            record.append(RecordedRequest(request.method, request.url.path, query, headers, body))
        response = fake_exchange(request.method, request.url.path, query, headers, body)
        return lib.Response(response.status, headers=response.headers, stream=stream_class(response, request))

    return handler


def mock_transport(lib: ModuleType, *, record: list[RecordedRequest] | None = None) -> Any:
    """``lib.MockTransport(mock_handler(lib))``: a fake provider for ``httpx``/``httpx2`` clients."""
    return lib.MockTransport(mock_handler(lib, record=record))
