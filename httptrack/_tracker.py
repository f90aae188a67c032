"""The tracking pipeline, shared by every transport: sync and async, httpx and httpx2.

It knows nothing of either HTTP library beyond the request/response attributes they have
in common (``method``, ``url.host/port/path/query``, ``headers``), so each transport shell
in ``_transport`` is a few lines around these steps:

1. ``begin``: match the host to a provider (unknown host → the path's API shape, if it
   has one; else ``None``: pass through untouched), take the ``X-Httptrack-*`` control
   headers off the request, capture attribution. Cheap: dictionary lookups and a clock read.
2. ``take_body``: the request body for the record and the cache key (a body in memory as
   it is; a streamed one through a tee, chunk by chunk as it is sent).
3. ``lookup``: the response cache, when enabled (a hit is replayed chunk by chunk).
4. ``respond``: note status and headers, label the response for the app.
5. ``finish``: hand the finished exchange to the background writer (from the tee's
   close, or ``failed`` when no response came at all).

Any fault in steps 1–5 is httptrack's problem, never the app's: it is reported once and the
call goes on as if httptrack were not there.
"""

from __future__ import annotations

import operator
from typing import Any

from ._context import ControlHeaders, current_attribution
from ._errors import CacheMiss
from ._exchange import BuiltRow, Exchange
from ._faults import report_fault
from ._include_usage import usage_filter, usage_request
from ._settings import Settings
from ._streams import ReplayChunks

__all__ = ["CACHE_HEADER", "CALL_ID_HEADER", "Tracker", "raw_headers", "set_header"]

CALL_ID_HEADER = "X-Httptrack-Call-Id"
CACHE_HEADER = "X-Httptrack-Cache"
_CACHE_HEADER_B = CACHE_HEADER.encode()
_CALL_ID_HEADER_B = CALL_ID_HEADER.encode()
#: ``providers.provider_for_host`` and ``provider_for_shape``, imported with the first
#: Tracker (when a transport is made), so that ``import httptrack`` stays light.
provider_for_host: Any = None
provider_for_shape: Any = None


class Tracker:
    """One per transport: its settings, its cache, the shared writer."""

    __slots__ = (
        "_detect",
        "_hosts",
        "_otel_parent",
        "_writer",
        "cache",
        "caches_doubles",
        "enforcer",
        "settings",
    )

    def __init__(self, settings: Settings, cache: Any = None) -> None:
        global provider_for_host, provider_for_shape
        if provider_for_host is None:
            from .providers import provider_for_host as lookup
            from .providers import provider_for_shape as by_shape

            provider_for_host, provider_for_shape = lookup, by_shape
        from .record._writer import writer

        self.settings = settings
        self._hosts = settings.hosts or None
        self._detect = settings.detect
        self.cache = cache
        #: Whether answers that did not come over the network (a mock transport, respx, an
        #: ASGI app) may be stored in the cache: only when the app asked the transport for
        #: a cache (``cache=``, ``cache_dir=``), else one test's double would answer another.
        self.caches_doubles = False
        self._writer = writer()
        # -- otel/: with spans on, the app's current span is noted as a call begins (its parent).
        self._otel_parent: Any = None
        if settings.otel and settings.enabled:
            from .otel._live import current_span_getter

            self._otel_parent = current_span_getter()
        # -- limits (limits/): None without limits, so a call pays one attribute test.
        self.enforcer: Any = None
        if settings.limits and settings.enabled:
            from .limits._engine import Enforcer

            self.enforcer = Enforcer(
                settings.limits,
                db=settings.db,
                prices=settings.prices,
                on_alert=settings.on_alert,
                webhook=settings.alert_webhook,
            )

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def begin(self, request: Any) -> Exchange | None:
        """Start tracking ``request``, or ``None`` when it is not an LLM call."""
        try:
            url = request.url
            host = url.host
            port = url.port
            provider = provider_for_host(host, port, self._hosts)
            if provider is None and self._detect and request.method == "POST":
                provider = provider_for_shape(url.path, host)  # an LLM API's path on any host
            headers = request.headers
            raw = raw_headers(headers)  # a new list: made once (again only if headers change)
            control = ControlHeaders.pop_from(headers, raw)
            if provider is None:
                return None
            if control is not None:
                raw = raw_headers(headers)
            method = request.method
            path = url.path
            attribution = current_attribution()
            if control is not None:
                attribution = control.apply_to(attribution)
            query = url.query
            try:
                operation = _operations[provider, method, path]
            except KeyError:
                operation = _operation(provider, method, path)
            exchange = Exchange(
                provider=provider,
                operation=operation,
                settings=self.settings,
                sink=self,
                method=method,
                scheme=url.scheme,
                host=host,
                port=port,
                path=path,
                query=query.decode("ascii", "replace") if isinstance(query, bytes) else str(query),
                request_headers=raw,
                request_body=b"",
                attribution=attribution,
                control=control,
            )
            if self._otel_parent is not None:
                exchange.otel_parent = self._otel_parent()
            return exchange
        except Exception as exc:
            report_fault("begin", "a request could not be tracked", exc)
            return None

    @staticmethod
    def take_body(exchange: Exchange, request: Any, upload: Any) -> None:
        """The request body, for the record and the cache key. A body in memory (JSON:
        nearly every call) is taken as it is. A streamed one (``content=`` an iterator or a
        file, multipart with files) is left to stream: ``upload`` (a
        :class:`~httptrack._streams.RequestTee` of the request's library) keeps a copy as
        the inner transport reads it, and such a request is never looked up in the cache."""
        try:
            exchange.request_body = request.content
            return
        except Exception:  # RequestNotRead: the body is a stream
            pass
        try:
            stream = request.stream
            if type(stream).__name__ == "ByteStream":  # in memory all the same
                exchange.request_body = request.read()
            elif isinstance(stream, upload.accepts):  # else the inner transport says what is wrong
                exchange.request_parts = []
                request.stream = upload(stream, exchange)
        except Exception as exc:
            report_fault("request_body", "a request body could not be followed; it is not recorded", exc)

    def lookup(self, exchange: Exchange) -> Any:
        """The response cache's answer for this request (replayed by :meth:`replay`), or
        ``None`` to send it. In ``replay`` mode a miss is recorded and raises
        :class:`~httptrack.CacheMiss` (nothing is sent). While an identical request is in
        flight this waits for its answer (single-flight, at most ``cache_wait``)."""
        cache = self.cache
        if cache is None:
            return None
        try:
            return cache.lookup(exchange)
        except CacheMiss as miss:
            if exchange.end("cache_miss", miss):
                self.finish(exchange)
            raise
        except Exception as exc:
            report_fault("cache_read", "the response cache could not be consulted; the request is sent", exc)
            return None

    async def alookup(self, exchange: Exchange) -> Any:
        """:meth:`lookup` for async transports (a wait does not block the event loop)."""
        cache = self.cache
        if cache is None:
            return None
        try:
            return await cache.alookup(exchange)
        except CacheMiss as miss:
            if exchange.end("cache_miss", miss):
                self.finish(exchange)
            raise
        except Exception as exc:
            report_fault("cache_read", "the response cache could not be consulted; the request is sent", exc)
            return None

    def replay(self, exchange: Exchange, entry: Any, response_class: type, tee: type) -> Any:
        """A response built from a cache entry: the stored status and headers (plus
        ``X-Httptrack-Cache: HIT`` and the call id), its body replayed chunk by chunk through
        ``tee`` so the hit is recorded like any call. ``None`` if it cannot be built (the
        request is then sent)."""
        try:
            headers = entry.prepared.get(response_class)
            if headers is None:
                headers = response_class(200, headers=[*entry.headers, (_CACHE_HEADER_B, b"HIT")]).headers
                entry.prepared[response_class] = headers
            # `stream=`, never `content=`: the client times the body (response.elapsed).
            response = response_class(entry.status, headers=headers, stream=ReplayChunks(()))
            response.headers[CALL_ID_HEADER] = exchange.call_id
        except Exception as exc:
            report_fault("cache_replay", "a cached response could not be replayed; the request is sent", exc)
            if self.settings.cache != "replay":
                return None
            miss = self.cache.miss(exchange, f"the cached response could not be replayed ({exc!r})")
            if exchange.end("cache_miss", miss):
                self.finish(exchange)
            raise miss from exc
        exchange.cached = True
        exchange.cache_status = "HIT"
        exchange.replayed_row = entry.figures
        exchange.received_headers(entry.status, list(entry.headers))
        exchange.rewritten = entry.info.get("rewritten")
        if exchange.rewritten is not None:
            content_type = next((v for k, v in entry.headers if k.lower() == b"content-type"), b"")
            self.hide_injected_usage(exchange, entry.status, content_type.decode("latin-1"), response.headers)
        # The recorded chunks; for a follower of a call in flight, its chunks as they arrive.
        response.stream = tee(entry.stream(response_class), exchange, self.finish)
        return response

    # -- limits (limits/) ------------------------------------------------------------------
    # After the cache lookup: a cache hit costs nothing, so it is neither limited nor counted.

    def check_limits(self, exchange: Exchange, library: Any) -> Any:
        """Reserve the call's share of every limit that counts it (waiting here while a
        ``wait`` limit holds it). ``None``: send the call. Else the 429 response the app
        gets instead, in ``library``'s types (httpx or httpx2); nothing is sent."""
        return self._limited(exchange, self.enforcer.check(exchange), library)

    async def acheck_limits(self, exchange: Exchange, library: Any) -> Any:
        """:meth:`check_limits` off the event loop (worker thread, ``anyio.sleep``)."""
        return self._limited(exchange, await self.enforcer.acheck(exchange), library)

    def _limited(self, exchange: Exchange, decision: Any, library: Any) -> Any:
        if decision is None:
            return None
        from .limits._engine import Ticket

        if isinstance(decision, Ticket):
            exchange.limit_ticket = decision  # settled in after_record, with the real cost
            return None
        try:
            from .limits._responses import refusal

            status, headers, body = refusal(exchange, decision)
            response = library.Response(status, headers=headers, stream=library.ByteStream(body))
            response.headers[CALL_ID_HEADER] = exchange.call_id
            exchange.received_headers(status, headers)
            exchange.add_chunk(body)
            if exchange.end("limited"):
                exchange.error_type = decision.error_code
                exchange.error_message = decision.message
                self.finish(exchange)
            return response
        except Exception as exc:
            report_fault("limits", "a refused call's response could not be built; the call is sent", exc)
            return None

    def rewrite(self, exchange: Exchange, request: Any) -> None:
        """Adjust the request on its way out where tracking needs it: ask a stream for its
        usage chunk (``_include_usage``). The app's view does not change (the extra event is
        filtered out in :meth:`respond`), the recorded request and the cache key stay the
        app's own (``exchange.request_body``)."""
        try:
            if not self.settings.include_usage or exchange.operation not in ("chat", "completion"):
                return
            # The body first: most requests are not streams, and that test is cheaper than
            # reading two headers. (usage_request has no side effects: the order only
            # changes what is spent on a request that is left alone.)
            asked = usage_request(exchange)
            if asked is None:
                return
            body, option = asked
            headers = request.headers
            if headers.get("content-encoding") or "json" not in headers.get("content-type", "json"):
                return
            # What httpx's Request.read() leaves: the body in `_content` and a ByteStream
            # over it (the transport already read it). Both libraries build it that way.
            stream_type = type(request.stream)
            if stream_type.__name__ != "ByteStream":
                return
            request.stream = stream_type(body)
            request._content = body
            if "Content-Length" in headers:
                headers["Content-Length"] = str(len(body))
            exchange.rewritten = option
        except Exception as exc:
            report_fault("rewrite", "a request could not be adjusted; it was sent as it was", exc)

    @staticmethod
    def hide_injected_usage(exchange: Exchange, status: int, content_type: str, headers: Any = None) -> None:
        """When :meth:`rewrite` asked for the usage chunk (``exchange.rewritten``) and the
        answer is a 2xx event stream, give the tee the filter that keeps that chunk from the
        app (only if the stream shows the server sent it because it was asked: see
        :class:`~httptrack._streams.UsageChunkFilter`). A replayed cache entry recorded from
        such a request needs the same: set ``exchange.rewritten`` from the entry, then call
        this before wrapping the stream.
        ``headers``: the response's, as the app will see them: its ``Content-Length`` (which
        counts the chunk the app will not get) is removed."""
        if (
            exchange.rewritten is not None
            and 200 <= status < 300
            and content_type.lower().startswith("text/event-stream")
        ):
            exchange.chunk_filter = usage_filter(exchange)
            if headers is not None and "content-length" in headers:
                del headers["content-length"]

    def respond(self, exchange: Exchange, response: Any, tee: type) -> None:
        """Note the response's status and headers, label it for the app, and wrap its
        stream in ``tee`` so the body is captured as the app reads it."""
        try:
            # httpcore gives every response read off a connection its `network_stream`; one
            # without it was made in memory (a mock transport, respx, an ASGI app): a test
            # double, not stored (see caches_doubles).
            if (
                exchange.cache_ttl is not None
                and not self.caches_doubles
                and "network_stream" not in response.extensions
            ):
                exchange.cache_ttl = None
            headers = response.headers
            received = raw_headers(headers)
            shared = exchange.cache_flight is not None  # identical requests wait for this one
            set_header(headers, _CALL_ID_HEADER_B, exchange.call_id)
            if exchange.cache_status is not None:
                set_header(headers, _CACHE_HEADER_B, exchange.cache_status)
            if response.is_stream_consumed:
                # Built with `content=` (mock transports, test doubles): the body is already in
                # memory, decoded, and the stream will never be read. Record it right away.
                exchange.received_headers(
                    response.status_code, [(k, v) for k, v in received if k.lower() != b"content-encoding"]
                )
                content = response.content
                exchange.add_chunk(content)
                if shared:
                    self.cache.responded(
                        exchange, response.status_code, exchange.response_headers, None, content
                    )
                if exchange.rewritten is not None:
                    self.hide_injected_usage(
                        exchange, response.status_code, response.headers.get("content-type", "")
                    )
                    chunk_filter = exchange.chunk_filter
                    if chunk_filter is not None:
                        # The app reads `content`: it gets the body without the usage chunk.
                        shown = chunk_filter.feed(content) + chunk_filter.flush()
                        if shown != content:
                            response._content = shown
                            if "content-length" in response.headers:
                                response.headers["content-length"] = str(len(shown))
                if exchange.end("complete"):
                    self.finish(exchange)
                return
            exchange.received_headers(response.status_code, received)
            if exchange.rewritten is not None:
                content_type = response.headers.get("content-type", "")
                self.hide_injected_usage(exchange, response.status_code, content_type, response.headers)
            stream = response.stream
            if shared:
                stream = self.cache.responded(exchange, response.status_code, received, stream)
            response.stream = tee(stream, exchange, self.finish)
        except Exception as exc:
            report_fault("respond", "a response could not be tracked", exc)

    def failed(self, exchange: Exchange, exc: BaseException) -> None:
        """No response at all (connect error, timeout ...): record it; the caller re-raises."""
        try:
            if exchange.end("transport_error", exc):
                _join_request_body(exchange)
                if exchange.cache_key is not None:
                    self.cache.ended(exchange)  # identical requests waiting for it go themselves
                self._writer.submit(exchange)
        except Exception as fault:
            report_fault("record", "a failed call could not be recorded", fault)

    def finish(self, exchange: Exchange) -> None:
        """The tee's end-of-stream callback (the exchange has just been marked ended)."""
        try:
            _join_request_body(exchange)
            if exchange.cache_key is not None:
                self._ended(exchange)
            self._writer.submit(exchange)
        except Exception as exc:
            report_fault("record", "a call could not be queued for recording", exc)

    def _ended(self, exchange: Exchange) -> None:
        """Tell the cache a call it keyed ended (read-your-writes, single-flight)."""
        try:
            self.cache.ended(exchange)
        except Exception as exc:
            report_fault("cache_write", "a fresh answer could not be shared", exc)

    # -- the RecordSink protocol (see _exchange): called by the writer thread ----------------

    def after_record(self, exchange: Exchange, built: BuiltRow) -> None:
        """Called by the writer thread once the row exists (the cache stages the response)."""
        cache = self.cache
        if cache is not None:
            cache.after_record(exchange, built)
        ticket = exchange.limit_ticket
        if ticket is not None:  # limits: the reservation becomes the real cost and tokens
            ticket.settle(built.row.get("cost_usd"), built.row.get("total_tokens"))

    def after_batch(self) -> None:
        """Called by the writer thread after :meth:`after_record` for each call of a batch
        (the cache stores the batch's responses at once)."""
        cache = self.cache
        if cache is not None:
            cache.after_batch()
        if self.enforcer is not None:
            self.enforcer.flush()  # limits: the batch's calls settled in one transaction


def _join_request_body(exchange: Exchange) -> None:
    """A streamed request body's kept chunks, as ``request_body`` for the record."""
    parts = exchange.request_parts
    if parts is not None:
        exchange.request_body = b"".join(parts)


#: (provider, method, path) → the operation it names (a provider's answer depends on those
#: alone): asked once per endpoint instead of once per call.
_operations: dict[tuple[Any, str, str], Any] = {}


def _operation(provider: Any, method: str, path: str) -> Any:
    operation = provider.operation(method, path)
    if len(_operations) > 1024:  # paths with ids in them (/v1/responses/{id}) never repeat
        _operations.clear()
    _operations[provider, method, path] = operation
    return operation


# -- headers ---------------------------------------------------------------------------------
# httpx and httpx2 keep a request's or response's headers as a list of (name, lower-case
# name, value) triples (``Headers._list``). Where a ``Headers`` class is seen to (checked once
# per class, by its behaviour), ``raw`` is made from it in C, and the call id is added without
# the per-header Python loops of ``__setitem__``: on the app's thread for every call, those
# were a fifth of httptrack's Python there. Any other class: its public API.

_name_value = operator.itemgetter(0, 2)
_lower_name = operator.itemgetter(1)
_triples: dict[type, bool] = {}


def _header_triples(headers: Any) -> list[tuple[bytes, bytes, bytes]] | None:
    kind = type(headers)
    known = _triples.get(kind)
    if known is None:
        known = _triples[kind] = _keeps_triples(kind)
    return headers._list if known else None


def _keeps_triples(kind: type) -> bool:
    try:
        probe = kind([("X-One", "a"), ("two", "b")])
        triples = probe._list
        if triples != [(b"X-One", b"x-one", b"a"), (b"two", b"two", b"b")]:
            return False
        if probe.raw != [(b"X-One", b"a"), (b"two", b"b")]:
            return False
        triples.append((b"X-Three", b"x-three", b"c"))
        return bool(probe.get("x-three") == "c" and probe.raw[-1] == (b"X-Three", b"c"))
    except Exception:
        return False


def raw_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """``headers.raw`` (a new list of (name, value) pairs)."""
    triples = _header_triples(headers)
    return list(map(_name_value, triples)) if triples is not None else headers.raw


def set_header(headers: Any, name: bytes, value: str) -> None:
    """``headers[name] = value``: the header added, or replacing any of that name."""
    triples = _header_triples(headers)
    lower = name.lower()
    if triples is None or lower in map(_lower_name, triples):
        headers[name.decode("ascii")] = value
    else:
        triples.append((name, lower, value.encode("ascii")))
