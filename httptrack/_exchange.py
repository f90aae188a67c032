"""The raw exchange: what the app's thread captures about one call, for the recorder; and
the writer's contract with the pipeline (:class:`RecordSink`, :class:`BuiltRow`).

Everything here is cheap by design. The app's thread only copies references and reads the
clock; decoding, parsing, pricing and writing happen later in the background writer, which
never writes on an ``Exchange``: what it learns travels in a :class:`BuiltRow`.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._context import Attribution, ControlHeaders
    from ._settings import Settings
    from ._vocab import Operation, Outcome
    from .providers import Provider

__all__ = ["TAIL_BYTES", "BuiltRow", "Exchange", "RecordSink", "new_call_id"]

#: When a body is longer than the storage cap, the last bytes are still kept (apart from
#: the stored head) so the figures at the end of a long body or stream can be read.
TAIL_BYTES = 1024 * 1024

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Two characters per 10 bits: 26 characters (130 bits, the top 2 always 0) in 13 steps.
_CROCKFORD_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]


_id_lock = threading.Lock()
_last_id = [0, 0]  # (milliseconds, random part) of the last id made in this process
#: httptrack's own generator, seeded from os.urandom here and again in a forked child (an
#: app's random.seed() must not make two processes draw the same ids). Not os.urandom per
#: id: that call releases the GIL, and the app's thread then waits for the busy writer.
_rng = random.Random()


_LOW_40 = (1 << 40) - 1
#: The text of the last millisecond seen (its first 10 characters), made once per millisecond.
_last_prefix: tuple[int, str] = (-1, "")


def new_call_id(now: float | None = None) -> str:
    """A monotonic ULID: 48 bits of milliseconds + 80 random bits in Crockford base32, so
    ids sort by time as text. Within one millisecond the random part counts up, so calls
    made by one process also sort in the order they were made."""
    global _last_prefix
    ms = int((time.time() if now is None else now) * 1000)
    with _id_lock:
        if ms <= _last_id[0]:
            ms, rand = _last_id[0], _last_id[1] + 1
        else:
            rand = _rng.getrandbits(79)  # 80 bits less one: headroom for counting up
        _last_id[0], _last_id[1] = ms, rand
    # 130 bits, two characters (10 bits) at a time: the top 2 bits (always 0) and the 48 of
    # the milliseconds make the first 10 characters, the 80 random bits the other 16. Done
    # on 40-bit halves: shifting small ints is cheaper than shifting one 130-bit int.
    pairs = _CROCKFORD_PAIRS
    cached_ms, prefix = _last_prefix
    if cached_ms != ms:
        prefix = (
            f"{pairs[(ms >> 40) & 1023]}{pairs[(ms >> 30) & 1023]}{pairs[(ms >> 20) & 1023]}"
            f"{pairs[(ms >> 10) & 1023]}{pairs[ms & 1023]}"
        )
        _last_prefix = (ms, prefix)
    high = rand >> 40  # (rand has 80 bits: high has 40)
    low = rand & _LOW_40
    # One f-string: no tuple to build and join.
    return (
        f"{prefix}{pairs[high >> 30]}{pairs[(high >> 20) & 1023]}{pairs[(high >> 10) & 1023]}"
        f"{pairs[high & 1023]}{pairs[low >> 30]}{pairs[(low >> 20) & 1023]}"
        f"{pairs[(low >> 10) & 1023]}{pairs[low & 1023]}"
    )


def _reset_ids_after_fork() -> None:
    # A forked child must not count up from its parent's last id (they would collide).
    global _id_lock
    _id_lock = threading.Lock()
    _last_id[0] = _last_id[1] = 0
    _rng.seed()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_ids_after_fork)


class BuiltRow:
    """What the writer learned about one finished exchange (``record._row.build_row``).
    (A plain class, not a dataclass: making a dataclass costs ``import httptrack`` ~0.7 ms.)"""

    __slots__ = ("response_complete", "row")

    def __init__(self, row: dict[str, Any], response_complete: bool) -> None:
        #: The ``calls`` row, by column name (its ``outcome`` is the final one: a stream the
        #: SDK stopped reading after its end marker is ``complete``, not ``cut_short``).
        self.row = row
        #: The response is known whole (a stream's end marker was read, a body parsed as
        #: JSON: ``Parsed.complete``): the condition for storing it in the response cache.
        self.response_complete = response_complete

    @property
    def outcome(self) -> str:
        return self.row["outcome"]  # type: ignore[no-any-return]


class RecordSink(Protocol):
    """Who hears from the writer thread once an exchange's row exists (the ``Tracker`` that
    began it: its response cache stores the answer). Both run in the writer thread."""

    def after_record(self, exchange: Exchange, built: BuiltRow) -> None:
        """The row of ``exchange`` was built (and handed to the log)."""

    def after_batch(self) -> None:
        """Every call of the writer's batch has had :meth:`after_record`."""


class Exchange:
    """One call, as seen from the transport. Filled on the app's thread, then handed to the
    writer exactly once (``finished``), whatever way the call ended."""

    __slots__ = (
        "attribution",
        "cache_flight",
        "cache_key",
        "cache_note",
        "cache_status",
        "cache_ttl",
        "cached",
        "call_id",
        "chunk_filter",
        "chunks",
        "control",
        "error_message",
        "error_type",
        "finished",
        "host",
        "limit",
        "limit_ticket",
        "method",
        "operation",
        "otel_parent",
        "outcome",
        "path",
        "port",
        "provider",
        "query",
        "received",
        "replayed_row",
        "request_body",
        "request_headers",
        "request_parts",
        "request_sent",
        "response_headers",
        "rewritten",
        "scheme",
        "settings",
        "sink",
        "spooled",
        "started_at",
        "status",
        "t0",
        "t_end",
        "t_first",
        "t_headers",
        "tail",
        "tail_bytes",
    )

    def __init__(
        self,
        *,
        provider: Provider,
        operation: Operation,
        settings: Settings,
        sink: RecordSink | None,
        method: str,
        scheme: str,
        host: str,
        port: int | None,
        path: str,
        query: str,
        request_headers: list[tuple[bytes, bytes]],
        request_body: bytes,
        attribution: Attribution,
        control: ControlHeaders | None,
    ) -> None:
        self.t0 = time.perf_counter()
        self.started_at = time.time()
        self.call_id = new_call_id(self.started_at)
        self.provider = provider
        self.operation = operation
        self.settings = settings
        self.sink = sink
        self.method = method
        self.scheme = scheme
        self.host = host
        self.port = port
        self.path = path
        self.query = query
        self.request_headers = request_headers
        self.request_body = request_body
        #: A streamed request body (``_streams.RequestTee``): the chunks kept for the record
        #: (joined into ``request_body`` when the call is recorded) and the bytes sent in all.
        #: ``None``: the body was in memory from the start (``request_body`` is all of it).
        self.request_parts: list[bytes] | None = None
        self.request_sent = 0
        self.attribution = attribution
        self.control = control
        self.status: int | None = None
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.received = 0
        # Keep the whole body up to the storage cap (and never less than the tail window,
        # so figures at the end of a moderately long body are read from the body itself).
        self.limit = max(settings.max_body_bytes, TAIL_BYTES)
        self.tail: deque[bytes] | None = None
        self.tail_bytes = 0
        self.t_headers: float | None = None
        self.t_first: float | None = None
        self.t_end: float | None = None
        #: "complete" | "cut_short" (the app closed the stream early) | "failed" (the stream
        #: raised) | "transport_error" (no response at all) | "cache_miss" (replay mode) |
        #: "limited" (refused by a limit: nothing sent)
        self.outcome: Outcome = "complete"
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.cached = False
        self.cache_key: str | None = None
        #: ``"HIT"`` / ``"MISS"`` when the cache was consulted (the app sees it as a header).
        self.cache_status: str | None = None
        #: What the cache decided that the row should say (the loop guard sent a request the
        #: cache could have answered): a note in ``parse_notes``.
        self.cache_note: str | None = None
        #: The TTL the response is to be stored with; ``None``: it is not to be stored.
        self.cache_ttl: float | None = None
        #: The single-flight this call leads or follows (``cache._policy``), if any.
        self.cache_flight: Any = None
        #: For a cache hit: the original call's token figures and cost (recorded as is).
        self.replayed_row: dict[str, Any] | None = None
        #: What ``Tracker.rewrite`` changed in the request on its way out (for the record),
        #: and the filter that keeps the app's view of the response as it would have been.
        self.rewritten: str | None = None
        self.chunk_filter: Any = None
        #: The spool segment holding this call (``record._spool``; set by ``submit`` on the
        #: app's thread), or -1: not spooled.
        self.spooled = -1
        self.finished = False
        #: The call's reservations under the transport's limits (``limits/``), settled by
        #: the writer once the row's real cost is known.
        self.limit_ticket: Any = None
        #: With ``Settings(otel=True)``: the app's current span when the call began (an
        #: OpenTelemetry ``SpanContext``), the parent of the call's span.
        self.otel_parent: Any = None

    def received_headers(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.t_headers = time.perf_counter()
        self.status = status
        self.response_headers = headers

    def add_chunk(self, chunk: bytes) -> None:
        """Called for every chunk the app receives: O(1), no copy."""
        size = len(chunk)
        if not size:
            return
        if self.t_first is None:
            self.t_first = time.perf_counter()
        self.received += size
        if self.received <= self.limit:
            self.chunks.append(chunk)
            return
        # Past the cap: keep only a rolling tail (the figures live at the end).
        if self.tail is None:
            self.tail = deque()
            kept = self.limit - (self.received - size)
            if kept > 0:
                self.chunks.append(chunk[:kept])
                chunk = chunk[kept:]
        self.tail.append(chunk)
        self.tail_bytes += len(chunk)
        while self.tail_bytes - len(self.tail[0]) >= TAIL_BYTES:
            self.tail_bytes -= len(self.tail.popleft())

    @property
    def truncated(self) -> bool:
        return self.tail is not None

    def end(self, outcome: Outcome | None = None, exc: BaseException | None = None) -> bool:
        """Mark the exchange finished; ``True`` the first time only (so it is recorded
        once, whichever of close(), an error or garbage collection got here first)."""
        if self.finished:
            return False
        self.finished = True
        self.t_end = time.perf_counter()
        if outcome is not None:
            self.outcome = outcome
        if exc is not None:
            # "httpx.ConnectError", "httpx2.ReadTimeout": the public name, not the private module.
            package = type(exc).__module__.partition(".")[0]
            self.error_type = f"{package}.{type(exc).__qualname__}".removeprefix("builtins.")
            self.error_message = str(exc)[:2000] or None
        return True
