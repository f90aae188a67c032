"""``TrackingTransport`` and ``AsyncTrackingTransport``: thin shells over ``_core``.

The same two classes serve ``httpx`` and ``httpx2`` clients. Neither library is imported
here: the library a request belongs to is read off the request's type on first sight, and
its own ``HTTPTransport`` is created as the inner transport when none was given.
"""

from __future__ import annotations

import sys
import threading
from contextvars import ContextVar
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

from ._context import ControlHeaders
from ._settings import Settings
from ._streams import AsyncTee, RequestTee, SyncTee
from ._tracker import Tracker

__all__ = ["AsyncTrackingTransport", "TrackingTransport"]


class _Library:
    """What the shells need from httpx or httpx2: stream base classes (the clients assert
    that a response stream is an instance of *theirs*, the transports that a request
    stream is) and the default transports."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.sync_tee: type[SyncTee] = type("TrackedSyncStream", (SyncTee, module.SyncByteStream), {})
        self.async_tee: type[AsyncTee] = type("TrackedAsyncStream", (AsyncTee, module.AsyncByteStream), {})
        sync_base, async_base = module.SyncByteStream, module.AsyncByteStream
        self.sync_upload: type[RequestTee] = type(
            "TrackedSyncUpload", (RequestTee, sync_base), {"accepts": sync_base}
        )
        self.async_upload: type[RequestTee] = type(
            "TrackedAsyncUpload", (RequestTee, async_base), {"accepts": async_base}
        )


if TYPE_CHECKING:
    import httpx
    import httpx2

    # For type checkers only: a tracking transport is a transport of either library, so
    # `httpx2.Client(transport=TrackingTransport())` type-checks. At run time neither
    # library is imported here.
    class _SyncBase(httpx.BaseTransport, httpx2.BaseTransport):  # type: ignore[misc]
        pass

    class _AsyncBase(httpx.AsyncBaseTransport, httpx2.AsyncBaseTransport):  # type: ignore[misc]
        pass

else:
    _SyncBase = _AsyncBase = object

_libraries: dict[type, _Library] = {}


def _library_of(request: Any) -> _Library:
    kind = type(request)
    library = _libraries.get(kind)
    if library is None:
        module = sys.modules[kind.__module__.partition(".")[0]]
        library = _libraries[kind] = _Library(module)
    return library


def _make_settings(settings: Settings | None, options: dict[str, Any]) -> Settings:
    try:
        return (settings or Settings()).replace(**options) if options else (settings or Settings())
    except TypeError as exc:  # an unknown keyword: name it
        raise TypeError(f"TrackingTransport got an unknown option: {exc}") from None


#: The request an autoload transport (``HTTPTRACK=1``, ``install()``) is handling in this
#: context. A tracking transport of the app's own handed that same request (one autoload
#: could not see when it chose to wrap: in a closure, say) passes it on untouched, so the
#: call is recorded once (by autoload), never twice. Any other request (a token fetched
#: from another client meanwhile) is its own call, tracked as usual.
auto_tracking: ContextVar[object] = ContextVar("httptrack_autoload", default=None)


class _Shell:
    #: Autoload's own wrappers (see _autoload) set this.
    _auto: ClassVar[bool] = False

    def __init__(
        self,
        transport: Any = None,
        *,
        db: str | Any | None = None,
        cache: bool | str | None = None,
        cache_dir: str | Any | None = None,
        settings: Settings | None = None,
        **options: Any,
    ) -> None:
        options.update(db=db, cache=cache, cache_dir=cache_dir)
        self.settings = _make_settings(settings, {k: v for k, v in options.items() if v is not None})
        self._tracker = Tracker(self.settings, _make_cache(self.settings))
        # Answers from test doubles (mock transports, respx) go into the cache only when the
        # app asked this transport for a cache; autoload's never do (see Tracker.respond).
        self._tracker.caches_doubles = not self._auto and bool(
            self.settings.given & {"cache", "cache_dir", "cache_url"}
        )
        self._inner = transport
        self._created: dict[_Library, Any] = {}
        self._lock = threading.Lock()

    def _default_inner(self, library: _Library, make: str) -> Any:
        inner = self._created.get(library)
        if inner is None:
            with self._lock:
                inner = self._created.get(library)
                if inner is None:
                    inner = self._created[library] = getattr(library.module, make)()
        return inner

    def __repr__(self) -> str:
        return f"{type(self).__name__}(transport={self._inner!r}, db={str(self.settings.db)!r})"


def _make_cache(settings: Settings) -> Any:
    if settings.cache == "off" or not settings.enabled:
        return None
    try:
        from .cache._policy import ResponseCache
    except ImportError:
        return None
    return ResponseCache.for_settings(settings)


class TrackingTransport(_Shell, _SyncBase):
    """A transport for ``httpx.Client`` and ``httpx2.Client`` that records every LLM API
    call into SQLite (and serves repeats from a local cache).

    ```python
    client = OpenAI(http_client=httpx2.Client(transport=httptrack.TrackingTransport()))
    ```

    ``transport`` is the inner transport that really sends requests (default: the client
    library's own ``HTTPTransport``). ``db``, ``cache``, ``cache_dir`` and any other
    :class:`Settings` field can be given as keywords; they win over ``HTTPTRACK_*``
    variables. ``close()`` closes the inner transport and flushes what was recorded.
    """

    def handle_request(self, request: Any) -> Any:
        library = _library_of(request)
        inner = self._inner or self._default_inner(library, "HTTPTransport")
        tracker = self._tracker
        if not self._auto and auto_tracking.get() is request:
            return inner.handle_request(request)  # autoload, outside, records this call
        if not tracker.enabled:
            strip_control_headers(request)
            return inner.handle_request(request)
        exchange = tracker.begin(request)
        if exchange is None:
            return inner.handle_request(request)
        tracker.take_body(exchange, request, library.sync_upload)
        cached = tracker.lookup(exchange)
        if cached is not None:
            replayed = tracker.replay(exchange, cached, library.module.Response, library.sync_tee)
            if replayed is not None:
                return replayed
        if tracker.enforcer is not None:  # limits: reserve, wait, or refuse (nothing sent)
            refused = tracker.check_limits(exchange, library.module)
            if refused is not None:
                return refused
        tracker.rewrite(exchange, request)
        try:
            response = inner.handle_request(request)
        except BaseException as exc:
            tracker.failed(exchange, exc)
            raise
        tracker.respond(exchange, response, library.sync_tee)
        return response

    def close(self) -> None:
        try:
            for inner in [self._inner, *self._created.values()]:
                if inner is not None:
                    inner.close()
        finally:
            from .record._writer import flush

            flush()

    def __enter__(self) -> Self:
        if self._inner is not None and hasattr(self._inner, "__enter__"):
            self._inner.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()


def strip_control_headers(request: Any) -> None:
    """Disabled (``HTTPTRACK_ENABLED=0``) the transport records nothing and changes nothing,
    except that ``X-Httptrack-*`` headers, addressed to httptrack (user names, sessions),
    still never reach the provider."""
    try:
        ControlHeaders.pop_from(request.headers)
    except Exception as exc:  # pragma: no cover - never break the call
        from ._faults import report_fault

        report_fault("control_headers", "control headers could not be removed", exc)


class AsyncTrackingTransport(_Shell, _AsyncBase):
    """The ``httpx.AsyncClient`` / ``httpx2.AsyncClient`` counterpart of
    :class:`TrackingTransport`; same arguments, same behaviour."""

    async def handle_async_request(self, request: Any) -> Any:
        library = _library_of(request)
        inner = self._inner or self._default_inner(library, "AsyncHTTPTransport")
        tracker = self._tracker
        if not self._auto and auto_tracking.get() is request:
            return await inner.handle_async_request(request)  # autoload, outside, records this call
        if not tracker.enabled:
            strip_control_headers(request)
            return await inner.handle_async_request(request)
        exchange = tracker.begin(request)
        if exchange is None:
            return await inner.handle_async_request(request)
        tracker.take_body(exchange, request, library.async_upload)
        cached = await tracker.alookup(exchange)
        if cached is not None:
            replayed = tracker.replay(exchange, cached, library.module.Response, library.async_tee)
            if replayed is not None:
                return replayed
        if tracker.enforcer is not None:  # limits: reserve, wait, or refuse (nothing sent)
            refused = await tracker.acheck_limits(exchange, library.module)
            if refused is not None:
                return refused
        tracker.rewrite(exchange, request)
        try:
            response = await inner.handle_async_request(request)
        except BaseException as exc:
            tracker.failed(exchange, exc)
            raise
        tracker.respond(exchange, response, library.async_tee)
        return response

    async def aclose(self) -> None:
        try:
            for inner in [self._inner, *self._created.values()]:
                if inner is not None:
                    await inner.aclose()
        finally:
            # The flush waits on the writer thread: do it off the event loop.
            import anyio.to_thread

            from .record._writer import flush

            await anyio.to_thread.run_sync(flush)

    async def __aenter__(self) -> Self:
        if self._inner is not None and hasattr(self._inner, "__aenter__"):
            await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()
