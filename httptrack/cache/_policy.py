"""The response cache: identical requests answered locally, streams replayed chunk by chunk.

The policy lives here (what is looked up, what is stored, for how long, in which mode); keys
are made in ``_cache_key`` and entries kept in ``_cache_store``. The pipeline calls it twice:

- ``lookup`` on the app's thread, before the request is rewritten or sent: computes the key
  (so control headers and httptrack's own request changes never change it), then answers
  from the cache, or marks the call a ``MISS``. In ``replay`` mode a request the cache cannot
  answer raises :class:`CacheMiss` and nothing is sent.
- ``after_record`` in the background writer, once the call's row exists: stores the
  response if it is a complete, successful answer from a cacheable endpoint.

Modes (``HTTPTRACK_CACHE`` / ``cache=``): ``on`` read and store; ``off`` neither; ``refresh``
always call, then store; ``replay`` serve only from the cache. Per request, the
``X-Httptrack-Cache`` header: ``no-cache`` (do not read), ``no-store`` (do not store),
``off`` (neither); ``X-Httptrack-Cache-Ttl`` sets the TTL (seconds, or ``30m``, ``2h`` ...).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import CacheMiss
from .._faults import report_fault
from .._redact import CREDENTIAL_IN_RESPONSE, is_secret_header, render_url
from .._settings import Settings, SettingsError, parse_duration
from ._entry import CacheEntry
from ._flight import (
    DONE,
    LIVE,
    POLL_SECONDS,
    RESOLVED,
    Answer,
    LiveEntry,
    Relay,
    Sleep,
    Wait,
    figures_of,
    shared_state,
)
from ._guard import WINDOW, guard
from ._key import body_digest, request_key
from ._storage import CacheStorage
from ._store import shared_store

if TYPE_CHECKING:
    from .._exchange import BuiltRow, Exchange

__all__ = ["CacheMiss", "ResponseCache"]


#: Entries staged at most before they are stored, within one batch of the writer (a batch
#: holds up to a thousand calls: their entries are not all kept until its end).
STAGED_MAX = 100


def _directive(value: str) -> tuple[bool, bool]:
    """``(read, write)`` allowed by an ``X-Httptrack-Cache`` value."""
    read = write = True
    for token in value.replace(" ", "").split(","):
        if token == "no-cache":
            read = False
        elif token == "no-store":
            write = False
        elif token == "off":
            read = write = False
        elif token not in ("", "on"):
            report_fault(
                "control_headers",
                f"X-Httptrack-Cache: unknown value {token!r} ignored (use no-cache, no-store or off)",
            )
    return read, write


class ResponseCache:
    """The response cache as one transport uses it: its mode and TTLs, over the store its
    cache folder shares with every other transport and process using that folder.

    ``clock`` (default :func:`time.time`) decides expiry; tests pass their own.
    """

    __slots__ = ("_replacing", "_shared", "_staged", "clock", "mode", "settings", "store")

    def __init__(
        self, settings: Settings, store: CacheStorage, clock: Callable[[], float] | None = None
    ) -> None:
        self.settings = settings
        self.mode = settings.cache
        self.store = store
        self.clock: Callable[[], float] = clock or time.time
        #: What every transport of this process over this storage shares: calls in flight,
        #: answers delivered but not stored yet, the membership filter (``_flight``).
        self._shared = shared_state(store)
        #: Responses to store at the end of the writer's batch (:meth:`after_batch`), and
        #: the exchanges they came from.
        self._staged: list[tuple[str, CacheEntry, Exchange]] = []
        #: Whether one of them was fetched without reading the cache (``refresh`` mode,
        #: ``no-cache``): it may replace an answer other processes hold in memory.
        self._replacing = False

    @classmethod
    def for_settings(cls, settings: Settings, *, clock: Callable[[], float] | None = None) -> ResponseCache:
        """A cache for a transport with these settings (no disk or network access until
        first use): in Redis when ``cache_url`` names a server, else in the cache folder."""
        if settings.cache_url:
            from ._redis import shared_redis_store  # redis-py only with a Redis URL

            return cls(settings, shared_redis_store(settings.cache_url), clock)
        return cls(settings, shared_store(settings.cache_dir, settings.cache_size_limit), clock)

    # -- the app's thread -----------------------------------------------------------------

    def lookup(self, exchange: Exchange) -> CacheEntry | LiveEntry | None:
        """The stored response for this request, if fresh (or the live answer of the
        identical request in flight); ``None`` to send it. Sets ``exchange.cache_key`` (and
        ``cache_ttl`` when the answer may be stored). Waits (blocking this thread, at most
        ``cache_wait``) while an identical request is in flight."""
        steps = self._lookup(exchange)
        try:
            wait = next(steps)
            while True:
                wait.block()
                wait = next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def alookup(self, exchange: Exchange) -> CacheEntry | LiveEntry | None:
        """:meth:`lookup` for async transports: waits without blocking the event loop."""
        steps = self._lookup(exchange)
        try:
            wait = next(steps)
            while True:
                await wait.ablock()
                wait = next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _lookup(self, exchange: Exchange) -> Generator[Wait, None, CacheEntry | LiveEntry | None]:
        """The lookup's steps, shared by :meth:`lookup` and :meth:`alookup`: each ``Wait`` it
        yields is waited on (a thread blocks, a task awaits) before it goes on."""
        mode = self.mode
        read = mode in ("on", "replay")
        write = mode in ("on", "refresh")
        control = exchange.control
        directive = control.cache if control is not None else None
        if directive:
            allowed_read, allowed_write = _directive(directive)
            read, write = read and allowed_read, write and allowed_write
        if exchange.request_parts is not None:  # streamed: not in memory to key, never cached
            if mode == "replay":
                raise self.miss(exchange, "a streamed request body (an iterator, a file) is never cached")
            return None
        provider = exchange.provider
        if not provider.cacheable(exchange.method, exchange.path, exchange.operation):
            if mode == "replay":
                raise self.miss(exchange, "this endpoint is never cached (uploads, batches, deletes ...)")
            return None
        # Asked of the parser that reads this path (Anthropic's API on an OpenAI-compatible
        # host, OpenAI's on Ollama's /v1 ...), as the request is read.
        parser = provider.parser_for(exchange.method, exchange.path)
        if not parser.cacheable_request(exchange.method, exchange.path, exchange.request_body):
            if mode == "replay":
                raise self.miss(
                    exchange,
                    "this request changes state on the server (a stored conversation, a background "
                    "job, loading a model) and is never cached",
                )
            return None
        if not read and not write:
            if mode == "replay":
                raise self.miss(exchange, f"X-Httptrack-Cache: {directive} asks to bypass the cache")
            return None
        ttl = self._ttl(exchange)
        store = self.store
        key, _ = request_key(store.salt(), exchange)
        exchange.cache_key = key
        exchange.cache_ttl = ttl if write and ttl > 0 else None
        if not read:  # refresh, or no-cache: send it (replay mode never gets here: it never writes)
            return None
        shared = self._shared
        wait = self.settings.cache_wait
        # Single-flight: only a request whose answer may be stored leads others (and, in
        # replay mode, one follows what an `on` transport of this process has in flight).
        single = wait > 0 and (exchange.cache_ttl is not None or mode == "replay")
        deadline = time.monotonic() + wait
        while True:
            answer = self._answer(exchange, key, shared.find(key, self), ttl)
            if answer is not None:
                return answer
            if not single or time.monotonic() >= deadline:
                break
            flight, leading = shared.join(key, exchange)
            if flight is None:  # this thread or task leads it: send this one
                break
            if not leading:
                yield flight.waiter(deadline)
                state = flight.state
                if state in (LIVE, DONE):
                    exchange.cache_flight = flight
                    return flight.live()
                if state == RESOLVED:
                    answer = self._answer(exchange, key, flight.entry, ttl)
                    if answer is not None:
                        return answer
                continue  # FAILED: look again (one of the followers leads); or past the deadline
            if mode == "replay":
                shared.settle(flight, None)
                break
            # This request leads in this process; across processes, whoever takes the
            # storage's lease. While another process holds it, this one polls the storage
            # for that answer (and the followers of this process wait for this one).
            polled = False
            while True:
                if polled:  # the holder may have stored its answer (and let go) meanwhile
                    answer = self._answer(exchange, key, store.get(key), ttl)
                    if answer is not None:
                        shared.settle(flight, None, entry=answer)
                        return answer
                if store.acquire(key, wait):
                    if polled:  # stored and let go between that look and this lease?
                        answer = self._answer(exchange, key, store.get(key), ttl)
                        if answer is not None:
                            store.release(key)
                            shared.settle(flight, None, entry=answer)
                            return answer
                    flight.lease = True
                    exchange.cache_flight = flight
                    exchange.cache_status = "MISS"
                    return None
                if time.monotonic() >= deadline:
                    shared.settle(flight, None)  # waited long enough: everyone goes
                    exchange.cache_status = "MISS"
                    return None
                polled = True
                yield Sleep(POLL_SECONDS)
        if mode == "replay":
            if store.broken is not None:
                raise self.miss(exchange, f"the cache folder cannot be used ({store.broken})")
            raise self.miss(exchange, "there is no cached response")
        exchange.cache_status = "MISS"
        return None

    def _answer(
        self, exchange: Exchange, key: str, entry: CacheEntry | None, ttl: float
    ) -> CacheEntry | None:
        """``entry`` if it may answer this request now (fresh, and the loop guard allows)."""
        if entry is None:
            return None
        # Replay mode is for offline runs and tests of recorded calls: a recording is served
        # whatever its age (entries stay on disk past their TTL for this).
        if self.mode == "replay":
            return entry
        now = self.clock()
        if not entry.fresh(now, ttl):
            return None
        limit = self.settings.cache_max_hits
        if guard.allow(key, limit, now):
            return entry
        # The loop guard (_guard): answered `limit` times within a minute; send it.
        exchange.cache_note = (
            f"the cache answered this request {limit} times within {WINDOW:.0f} s "
            "(HTTPTRACK_CACHE_MAX_HITS): sent to the provider again"
        )
        report_fault(
            "cache_loop",
            f"an identical request was answered from the cache {limit} times within a minute "
            "(a loop?); it is sent to the provider again (HTTPTRACK_CACHE_MAX_HITS)",
        )
        return None

    def _ttl(self, exchange: Exchange) -> float:
        control = exchange.control
        if control is not None and control.cache_ttl:
            try:
                return parse_duration(control.cache_ttl, "X-Httptrack-Cache-Ttl")
            except SettingsError as exc:
                report_fault("control_headers", f"{exc}; the default TTL applies")
        return self.settings.ttl_for(exchange.operation)

    def miss(self, exchange: Exchange, reason: str) -> CacheMiss:
        """The :class:`CacheMiss` naming this request (method, URL without credentials, model)."""
        url = render_url(exchange.scheme, exchange.host, exchange.port, exchange.path, exchange.query)
        _, model = body_digest(exchange.request_body)
        return CacheMiss(exchange.method, url, model, reason)

    def responded(
        self,
        exchange: Exchange,
        status: int,
        headers: list[tuple[bytes, bytes]],
        stream: Any,
        content: bytes | None = None,
    ) -> Any:
        """The leader of a flight got its response: followers learn its status and headers
        (a 2xx: they follow it chunk by chunk; anything else: they go themselves). Returns
        the stream to hand on (one that tells the followers of each chunk as it passes);
        ``content``: a body already read whole (a test double's)."""
        flight = exchange.cache_flight
        if flight is None or flight.leader is not exchange:
            return stream
        if exchange.cache_ttl is None or not 200 <= status < 300 or status == 206:
            self._shared.settle(flight, None)  # not an answer to share (an error, a test double)
            return stream
        flight.respond(status, headers, exchange.rewritten)
        if content is not None:
            flight.add(content)
        return Relay(stream, flight) if stream is not None else None

    def ended(self, exchange: Exchange) -> None:
        """A call ended, on the app's thread, before it is handed to the writer. The answer
        of a call that may be stored becomes visible at once to every transport of this
        process (read-your-writes), until the writer has stored it; the followers of a call
        that ended badly go themselves; a follower gets the figures it saved."""
        flight = exchange.cache_flight
        if flight is not None and flight.leader is not exchange:
            exchange.replayed_row = flight.figures()  # a follower: recorded as a hit
            return
        if exchange.cache_ttl is None or exchange.cached or exchange.cache_key is None:
            if flight is not None:
                self._shared.settle(flight, None)
            return
        answer = Answer(exchange) if _looks_storable(exchange) else None
        if flight is None:
            if answer is not None:
                self._shared.remember(answer)
            return
        # The followers mirroring it got every chunk the leader did: their body ends well
        # if the leader's answer is whole. Read to its end, it is; an SDK that stopped
        # reading after the stream's end marker (cut short, as far as the tee knows) needs
        # the leader's row to tell (built once, shared with the followers' rows).
        outcome = exchange.outcome
        if outcome == "complete" and 200 <= (exchange.status or 0) < 300:
            self._shared.settle(flight, answer, whole=_yes)
        elif outcome == "cut_short" and 200 <= (exchange.status or 0) < 300:
            self._shared.settle(flight, answer, whole=lambda: _whole(flight))
        else:
            self._shared.settle(flight, answer)

    # -- the background writer ------------------------------------------------------------

    def after_record(self, exchange: Exchange, built: BuiltRow) -> None:
        """Stage the response of a finished call for storing, if it is one to keep (stored
        by :meth:`after_batch`, which the writer calls once its batch is recorded)."""
        key = exchange.cache_key
        ttl = exchange.cache_ttl
        flight = exchange.cache_flight
        if flight is not None:
            # The writer is the last to use it: let go (a leader and its flight hold each
            # other while someone follows it; see ``Shared.settle``).
            exchange.cache_flight = None
        if key is None or ttl is None or exchange.cached:
            return
        if flight is not None:
            flight.built = built
        if not _storable(exchange, built):
            self._shared.withdraw(key, exchange, self.store)
            return
        entry = self.entry(exchange, built, source=_row_source(exchange, built))
        self._shared.verified(key, exchange, entry)
        self._staged.append((key, entry, exchange))
        if exchange.cache_status is None:  # stored without being looked up (see lookup)
            self._replacing = True
        if len(self._staged) >= STAGED_MAX:  # a long batch: store as it goes (bounded memory)
            self._store_staged()

    def entry(self, exchange: Exchange, built: BuiltRow, source: tuple[str, str] | None = None) -> CacheEntry:
        """The entry that keeps this call's answer (its chunks: the same bytes, not a copy);
        ``source``: the row that holds them too (:func:`_row_source`)."""
        row = built.row
        return CacheEntry(
            status=exchange.status or 0,
            headers=_stored_headers(exchange.response_headers),
            chunks=tuple(exchange.chunks),
            figures=figures_of(exchange, row),
            created=self.clock(),
            ttl=exchange.cache_ttl or 0.0,
            info={
                "method": exchange.method,
                "url": row.get("url"),
                "model": row.get("model"),
                "provider": row.get("provider"),
                "operation": exchange.operation,
                "call_id": exchange.call_id,
                "stream": bool(row.get("stream")),
                # The stored chunks are what the provider sent: for a request httptrack
                # rewrote (asking for the usage chunk) that includes an event the app never
                # saw, so a replay must hide it again.
                "rewritten": exchange.rewritten,
            },
            source=source,
        )

    def verify(self, exchange: Exchange) -> CacheEntry | None:
        """The entry for an answer delivered but not yet judged by the writer, judged now on
        the calling thread (the writer's own rules: ``build_row`` and ``_storable``), or
        ``None`` when it is not one to keep."""
        from ..record._row import build_row

        built = build_row(exchange)
        flight = exchange.cache_flight
        if flight is not None and flight.built is None:
            flight.built = built
        return self.entry(exchange, built) if _storable(exchange, built) else None

    def after_batch(self) -> None:
        """Store what :meth:`after_record` staged: one transaction for the batch. When one
        was fetched to replace what the cache holds, other processes are told to forget
        their in-memory copies (these calls are rare: one generation bump per batch)."""
        self._store_staged()
        self._shared.refresh_filter(self.store, writer=True)

    def _store_staged(self) -> None:
        staged, self._staged = self._staged, []
        replacing, self._replacing = self._replacing, False
        if staged:
            stored = self.store.put_many([(key, entry) for key, entry, _ in staged])
            self._shared.stored(staged, self.store, stored == len(staged))
            if stored and replacing:
                self.store.announce_replaced()


def _row_source(exchange: Exchange, built: BuiltRow) -> tuple[str, str] | None:
    """``(log path, call id)`` when the call's row, written, holds this answer's exact bytes
    and the figures a hit takes (so the cache folder keeps only the rest: one copy of the
    bytes); ``None`` when the entry must keep them itself: a Postgres log, bodies not
    stored, cut by the size cap, changed by redaction or a ``redact`` hook, content-encoded
    (the row holds the decoded text), not valid UTF-8, or the row not written yet (the log
    locked). Asked in the writer thread, after the batch's rows were handed to the log."""
    db = exchange.settings.db
    if not isinstance(db, Path) or exchange.cache_note:
        return None
    body = built.row.get("response_body")
    if body.__class__ is not str:
        return None
    chunks = exchange.chunks
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if len(body) > len(data) or body.encode("utf-8", "surrogatepass") != data:
        return None
    found = _logs.get(db)
    if found is None:
        from ..record._writer import writer

        found = _logs[db] = (os.path.abspath(db), writer())
    path, log_writer = found
    if not log_writer.logged(db):
        return None
    return path, exchange.call_id


#: Per log path: its absolute path and the writer (see ``_row_source``).
_logs: dict[Path, tuple[str, Any]] = {}


def _yes() -> bool:
    return True


def _whole(flight: Any) -> bool:
    """Whether a flight's leader, cut short as far as its tee knows, read its answer whole
    (the stream's end marker arrived): its row says so."""
    from ..record._row import build_row

    built = flight.built
    if built is None:
        built = flight.built = build_row(flight.leader)
    return bool(built.outcome == "complete")


def _looks_storable(exchange: Exchange) -> bool:
    """What the app's thread can tell cheaply at the end of a call about whether its answer
    may be stored: everything :func:`_storable` asks but what needs the body read (complete,
    no error inside, no credential). An answer that passes is visible at once, but served
    only once judged whole (:meth:`ResponseCache.verify` or the writer's ``after_record``)."""
    status = exchange.status or 0
    if not 200 <= status < 300 or status == 206 or exchange.truncated:
        return False
    # Cut short as far as the tee knows: an SDK stops reading once the stream's end marker
    # came (the row then says complete); judged with the rest.
    if exchange.outcome not in ("complete", "cut_short"):
        return False
    return _headers_storable(exchange.response_headers)


def _headers_storable(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        lower = name.lower()
        if lower == b"cache-control" and b"no-store" in value.lower():
            return False
        if lower in (b"set-cookie", b"set-cookie2") and not _infrastructure_cookie(value):
            return False
    return True


def _storable(exchange: Exchange, built: BuiltRow) -> bool:
    """Only complete, successful answers: a 2xx (not a partial 206) whose body arrived whole
    and in full (not cut short, not failed, not over the size cap), that is positively
    known complete (a stream's end marker was read, a body parsed as JSON, and the parser
    did not find a job still running or a model being loaded: the recorder's
    ``Parsed.complete``, so a proxy closing a stream cleanly mid-answer is not enough),
    with no error inside (an error event in a 200 stream makes the row an error; an error
    object in a 200 body leaves an error code), that the provider did not mark
    ``Cache-Control: no-store``, that sets no cookie (a session: an answer for one client;
    a load balancer's or Cloudflare's own cookies aside, see ``_INFRASTRUCTURE_COOKIES``),
    and that holds no credential (one the request carried, echoed back, or a new one it
    mints)."""
    status = exchange.status or 0
    if not 200 <= status < 300 or status == 206 or exchange.truncated:
        return False
    if not built.response_complete:
        return False
    row = built.row
    if row.get("status") != "success" or row.get("outcome") != "complete" or row.get("error_code"):
        return False
    if row.get(CREDENTIAL_IN_RESPONSE):
        return False
    return _headers_storable(exchange.response_headers)


#: Cookies set by the network in front of an API, not by the API: Cloudflare's bot
#: management and load balancing (``api.openai.com`` sets ``__cf_bm`` and ``_cfuvid`` on
#: every answer), AWS load balancers' stickiness. They say nothing about who is calling;
#: refusing to cache every answer that carries one would turn the cache off for OpenAI.
#: They are never stored either way (see ``_stored_headers``).
_INFRASTRUCTURE_COOKIES = frozenset(
    {
        b"__cf_bm",
        b"_cfuvid",
        b"__cflb",
        b"__cfruid",
        b"awsalb",
        b"awsalbcors",
        b"awsalbtg",
        b"awsalbtgcors",
        b"awselb",
    }
)


def _infrastructure_cookie(value: bytes) -> bool:
    return value.partition(b"=")[0].strip().lower() in _INFRASTRUCTURE_COOKIES


def _stored_headers(raw: list[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    """The response headers as received, minus cookies and anything credential-like (a
    replayed cookie would also be stale). Rate-limit headers that merely mention tokens stay."""
    kept = []
    dropped = _dropped_headers
    for name, value in raw:
        drop = dropped.get(name)
        if drop is None:
            lower = name.decode("latin-1").lower()
            drop = is_secret_header(lower) and ("ratelimit" not in lower or "cookie" in lower)
            if len(dropped) > 4096:  # names without end (a server's own): don't grow forever
                dropped.clear()
            dropped[bytes(name)] = drop
        if not drop:
            kept.append((bytes(name), bytes(value)))
    return tuple(kept)


#: Response header name (as received) → whether :func:`_stored_headers` leaves it out.
_dropped_headers: dict[bytes, bool] = {}
