"""What the transports of one process share over one cache storage, in memory: calls in
flight (single-flight), answers delivered but not stored yet (read-your-writes), and a
membership filter of the keys stored (misses answered without asking the storage).

Everything here works over any :class:`~httptrack.cache._storage.CacheStorage`; across
processes, single-flight uses the storage's leases and the answer reaches the others when
the writer has stored it.

**Single-flight.** The first cacheable request for a key (the *leader*) registers a
:class:`Flight`; identical requests of this process that look up meanwhile (*followers*:
threads, or tasks of any event loop) wait for it. When the leader's response arrives, a 2xx
is shared: each follower gets a response with the same status and headers whose body is
the leader's chunks, each handed on as the leader receives it (:class:`Mirror`); anything
else (an error, a connection failure, a response not to be stored) releases them, and one
of them leads anew. A follower is recorded as a cache hit, with the leader's figures.
Across processes the leader also takes the storage's lease on the key; a request of
another process that finds the lease held polls the storage (every :data:`POLL_SECONDS`)
until the answer is stored, the lease is given up (it then leads), or its wait is over
(it then sends it itself).

**Read-your-writes.** When a call that may be stored ends, before the app gets the end of
the body, its :class:`Answer` is remembered here until the writer has stored it: every
transport of the process over this storage finds it at once. It is served only once judged
whole, by the writer's own rules: by the writer (``after_record``), or, if a lookup comes
first, by that lookup on its own thread (``ResponseCache.verify``: the row built once more).
An answer found not to be kept (a 200 stream that ends in an error event, a credential in
the body) is withdrawn before anyone is served it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from .._faults import report_fault
from ._entry import ORIGINAL_COLUMNS

if TYPE_CHECKING:
    from .._exchange import Exchange
    from ._entry import CacheEntry
    from ._storage import CacheStorage

__all__ = [
    "DONE",
    "FAILED",
    "LIVE",
    "ORIGINAL_COLUMNS",
    "POLL_SECONDS",
    "RESOLVED",
    "WAITING",
    "Answer",
    "Flight",
    "Judge",
    "LiveEntry",
    "Mirror",
    "Relay",
    "Shared",
    "Sleep",
    "Wait",
    "figures_of",
    "shared_state",
]


def figures_of(exchange: Exchange, row: dict[str, Any]) -> dict[str, Any]:
    """What a hit takes from the row of the call that fetched it (less the loop guard's
    note, which was about that call, not about the answer)."""
    figures = {name: row.get(name) for name in ORIGINAL_COLUMNS}
    note = exchange.cache_note
    if note and figures.get("parse_notes"):
        kept = [n for n in str(figures["parse_notes"]).split("; ") if n != note]
        figures["parse_notes"] = "; ".join(kept) or None
    return figures


#: How often a request waiting for another process's answer asks the storage for it.
POLL_SECONDS = 0.025
#: How long the membership filter answers lookups after it asked the storage what other
#: processes stored (then they ask the storage, until it is refreshed again).
FILTER_REFRESH = 1.0
#: How often the writer refreshes it while calls come (before it is too old to answer).
FILTER_REFRESH_EVERY = 0.5
#: The membership filter: 2**21 bits (256 KiB, whatever the number of keys), 3 bits per key
#: (under 1% false positives at 100,000 keys, ~5% at 500,000: a false positive costs one
#: lookup in the storage, nothing else).
_FILTER_BITS = 21
_FILTER_MASK = (1 << _FILTER_BITS) - 1

# A flight's states.
WAITING = "waiting"  #: the leader has no response yet (or polls another process's lease)
LIVE = "live"  #: the leader's 2xx is arriving: followers mirror its chunks
DONE = "done"  #: the leader read its answer whole
FAILED = "failed"  #: the leader's answer is not to be shared: followers go themselves
RESOLVED = "resolved"  #: another process's answer was found stored (``Flight.entry``)


class Judge(Protocol):
    """Who judges an answer delivered but not stored yet (``ResponseCache.verify``)."""

    def verify(self, exchange: Exchange) -> CacheEntry | None: ...


class Wait:
    """Something a lookup waits for: blocking a thread, or awaited by a task."""

    def block(self) -> None:
        raise NotImplementedError

    async def ablock(self) -> None:
        raise NotImplementedError


class Sleep(Wait):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def block(self) -> None:
        time.sleep(self.seconds)

    async def ablock(self) -> None:
        import anyio

        await anyio.sleep(self.seconds)


def _owner() -> tuple[int, int]:
    """This thread, and this asyncio task if one runs here."""
    loop = asyncio._get_running_loop()  # None, not RuntimeError, outside an event loop
    task = asyncio.current_task(loop) if loop is not None else None
    return threading.get_ident(), id(task) if task is not None else 0


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Flight:
    """One request in flight for a key, and the followers waiting for it."""

    __slots__ = (
        "_async",
        "_cond",
        "_figures",
        "_live",
        "_lock",
        "_sleepers",
        "built",
        "bytes",
        "chunks",
        "entry",
        "followers",
        "headers",
        "key",
        "leader",
        "lease",
        "limit",
        "owner",
        "rewritten",
        "state",
        "status",
        "version",
    )

    def __init__(self, key: str, leader: Exchange) -> None:
        self.key = key
        self.leader = leader
        #: This process holds the storage's lease on the key (released when settled).
        self.lease = False
        self.state = WAITING
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.rewritten: str | None = None
        #: The leader's chunks as they arrive (the same bytes objects: no copy).
        self.chunks: list[bytes] = []
        self.bytes = 0
        self.limit = leader.limit
        self.entry: CacheEntry | None = None
        #: How many requests of this process waited for this one.
        self.followers = 0
        #: The thread and task that lead it (see ``Shared.join``).
        self.owner: tuple[int, int] = (0, 0)
        #: The leader's row once built (by the writer, or by the first follower to end).
        self.built: Any = None
        self._figures: dict[str, Any] | None = None
        self._live: LiveEntry | None = None
        self.version = 0
        self._lock = threading.Lock()
        #: Made on the lock when a thread first waits (most flights have no follower).
        self._cond: threading.Condition | None = None
        self._sleepers = 0
        self._async: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    # -- the leader's side ------------------------------------------------------------------

    def _changed(self) -> None:
        """Wake every waiter (``_lock`` held)."""
        self.version += 1
        if self._sleepers and self._cond is not None:
            self._cond.notify_all()
        if self._async:
            waiting, self._async = self._async, []
            for loop, future in waiting:
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits there
                    loop.call_soon_threadsafe(_wake, future)

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], rewritten: str | None) -> None:
        with self._lock:
            if self.state != WAITING:
                return
            self.status, self.headers, self.rewritten = status, list(headers), rewritten
            self.state = LIVE
            self._changed()

    def add(self, chunk: bytes) -> None:
        with self._lock:
            if self.state != LIVE:
                return
            self.bytes += len(chunk)
            # Too long to hold for followers: those still waiting go themselves. One already
            # mirroring it keeps getting it (failing it would break a call that is fine).
            if self.bytes > self.limit and self._live is None:
                self.state = FAILED
                self.chunks = []
            else:
                self.chunks.append(chunk)
            self._changed()

    def finish(self, state: str, entry: CacheEntry | None = None) -> None:
        with self._lock:
            if self.state in (DONE, FAILED, RESOLVED):
                return
            self.state = state
            self.entry = entry
            self._changed()

    # -- the followers' side ----------------------------------------------------------------

    def waiter(self, deadline: float) -> FlightWait:
        """Wait (until ``deadline``, monotonic) for the leader's response, or its end."""
        return FlightWait(self, self.version, deadline, (WAITING,))

    def live(self) -> LiveEntry:
        with self._lock:  # under the lock: ``add`` tells whether anyone mirrors it
            live = self._live
            if live is None:
                live = self._live = LiveEntry(self)
        return live

    def figures(self) -> dict[str, Any] | None:
        """What a follower's row takes from the leader's (tokens, cost ...): the leader's
        row, built once (by the writer if it got there first, else here)."""
        if self._figures is None:
            from ..record._row import build_row

            built = self.built
            if built is None:
                built = self.built = build_row(self.leader)
            self._figures = figures_of(self.leader, built.row)
        return self._figures

    def take(self, index: int) -> tuple[bytes | None, str]:
        """The chunk at ``index`` if it has arrived (``None`` if not), and the state."""
        with self._lock:
            chunks = self.chunks
            return (chunks[index] if index < len(chunks) else None), self.state

    def wait_sync(self, seen: int, timeout: float) -> None:
        with self._lock:
            if self.version != seen or timeout <= 0:
                return
            cond = self._cond
            if cond is None:
                cond = self._cond = threading.Condition(self._lock)
            self._sleepers += 1
            try:
                cond.wait(timeout)
            finally:
                self._sleepers -= 1

    async def wait_async(self, seen: int, timeout: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio): look again shortly
            import anyio

            await anyio.sleep(min(0.005, max(timeout, 0.0)))
            return
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self.version != seen or timeout <= 0:
                return
            self._async.append((loop, future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._async.remove((loop, future))


class FlightWait(Wait):
    """Until the flight's state leaves ``states`` or ``deadline`` (monotonic) passes."""

    def __init__(self, flight: Flight, seen: int, deadline: float, states: tuple[str, ...]) -> None:
        self.flight = flight
        self.deadline = deadline
        self.states = states

    def block(self) -> None:
        flight = self.flight
        while flight.state in self.states:
            left = self.deadline - time.monotonic()
            if left <= 0:
                return
            flight.wait_sync(flight.version, left)

    async def ablock(self) -> None:
        flight = self.flight
        while flight.state in self.states:
            left = self.deadline - time.monotonic()
            if left <= 0:
                return
            await flight.wait_async(flight.version, left)


class LiveEntry:
    """A follower's view of a flight's 2xx, shaped as a :class:`CacheEntry` for
    ``Tracker.replay``: status and headers now, the body as it arrives."""

    __slots__ = ("figures", "flight", "headers", "info", "prepared", "status")

    def __init__(self, flight: Flight) -> None:
        self.flight = flight
        self.status = flight.status
        self.headers = tuple(flight.headers)
        self.info: dict[str, Any] = {"rewritten": flight.rewritten}
        #: Known only when the leader ends (``ResponseCache.ended`` sets the follower's).
        self.figures: dict[str, Any] | None = None
        self.prepared: dict[type, Any] = {}

    def stream(self, response_class: type) -> Mirror:
        module = sys.modules.get(response_class.__module__.partition(".")[0])
        error = getattr(module, "ReadError", None) or OSError
        return Mirror(self.flight, error, self.flight.leader.settings.cache_wait)


class Mirror:
    """A follower's body: the leader's chunks, each as soon as the leader receives it.
    If the leader's answer breaks off (its connection failed, its app stopped reading),
    the follower's body fails as its own connection would have (the library's
    ``ReadError``): what it already received cannot be taken back."""

    def __init__(self, flight: Flight, error: type[BaseException], wait: float) -> None:
        self._flight = flight
        self._error = error
        self._wait = wait
        self._next = 0

    def _broken(self) -> BaseException:
        return self._error(
            "the identical request this one was waiting for (httptrack's single-flight) ended before "
            "its answer did"
        )

    def __iter__(self) -> Iterator[bytes]:
        flight = self._flight
        while True:
            chunk, state = flight.take(self._next)
            if chunk is not None:
                self._next += 1
                yield chunk
                continue
            if state == DONE:
                return
            if state != LIVE:
                raise self._broken()
            seen = flight.version
            if flight.take(self._next)[0] is None and flight.state == LIVE:
                deadline = time.monotonic() + self._wait
                flight.wait_sync(seen, self._wait)
                if flight.version == seen and time.monotonic() >= deadline:
                    raise self._broken()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        flight = self._flight
        while True:
            chunk, state = flight.take(self._next)
            if chunk is not None:
                self._next += 1
                yield chunk
                continue
            if state == DONE:
                return
            if state != LIVE:
                raise self._broken()
            seen = flight.version
            if flight.take(self._next)[0] is None and flight.state == LIVE:
                deadline = time.monotonic() + self._wait
                await flight.wait_async(seen, self._wait)
                if flight.version == seen and time.monotonic() >= deadline:
                    raise self._broken()

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class Relay:
    """The leader's response stream, telling its flight of each chunk as it passes."""

    def __init__(self, inner: Any, flight: Flight) -> None:
        self._inner = inner
        self._flight = flight

    def __iter__(self) -> Iterator[bytes]:
        add = self._flight.add
        for chunk in self._inner:
            if chunk:
                add(chunk)
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        add = self._flight.add
        async for chunk in self._inner:
            if chunk:
                add(chunk)
            yield chunk

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()

    async def aclose(self) -> None:
        aclose = getattr(self._inner, "aclose", None)
        if aclose is not None:
            await aclose()


_judging = threading.Lock()


class Answer:
    """A call's answer, delivered to its app and not yet stored (read-your-writes)."""

    __slots__ = ("entry", "exchange", "lease", "withdrawn")

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        #: The entry, once judged whole (by the writer or a lookup).
        self.entry: CacheEntry | None = None
        self.withdrawn = False
        #: This process holds the storage's lease on the key until the answer is stored.
        self.lease = False

    def judged(self, cache: Judge) -> CacheEntry | None:
        """The entry, judged now if the writer has not yet; ``None`` if not one to keep."""
        entry = self.entry
        if entry is not None or self.withdrawn:
            return entry
        with _judging:  # one lock for all (judging on a lookup's thread is rare)
            if self.entry is None and not self.withdrawn:
                try:
                    self.entry = cache.verify(self.exchange)
                except Exception as exc:
                    report_fault("cache_read", "a fresh answer could not be judged; it is not served", exc)
                    return None
                self.withdrawn = self.entry is None
            return self.entry


class Shared:
    """The in-memory state of one storage in this process (see the module's docstring)."""

    def __init__(self, store: CacheStorage) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.flights: dict[str, Flight] = {}
        self.recent: dict[str, Answer] = {}
        #: The membership filter (``None``: not loaded yet, or the storage cannot list keys).
        self.filter: bytearray | None = None
        self._cursor: object | None = None
        self._refresh_due = 0.0
        #: Until when the filter answers a lookup (``FILTER_REFRESH`` after its last refresh).
        self._trusted_until = 0.0
        self._refreshing = threading.Lock()

    # -- lookups (the app's threads) ----------------------------------------------------------

    def find(self, key: str, cache: Judge, direct: bool = False) -> CacheEntry | None:
        """The answer for ``key``: a recent one (judged whole), else the storage's (not asked
        when the membership filter says it has none, unless ``direct``)."""
        answer = self.recent.get(key)
        if answer is not None:
            entry = answer.judged(cache)
            if entry is not None:
                return entry
        if not direct and not self.may_contain(key):
            return None
        return self.store.get(key)

    def join(self, key: str, exchange: Exchange) -> tuple[Flight | None, bool]:
        """The flight for ``key`` and whether ``exchange`` leads it (a new one); ``None``
        when the flight in progress was begun by this very thread or task: only its own
        reading moves that one on (a response opened and not read yet), so waiting for it
        would wait for itself. Such a request is sent."""
        owner = _owner()
        with self.lock:
            flight = self.flights.get(key)
            if flight is not None:
                if flight.owner == owner:
                    return None, False
                flight.followers += 1
                return flight, False
            flight = self.flights[key] = Flight(key, exchange)
            flight.owner = owner
            return flight, True

    def settle(
        self,
        flight: Flight,
        answer: Answer | None,
        *,
        entry: CacheEntry | None = None,
        whole: Callable[[], bool] | None = None,
    ) -> None:
        """The leader is done with ``flight``. Its ``answer`` (to judge and store) is
        remembered in the same step, so a lookup finds either the flight or the answer.
        Followers that mirror it get the end of their body if ``whole()`` says the leader
        got its answer whole (asked only when someone follows), else their body fails;
        followers still waiting look again (one of them leads). The lease is given up
        unless the answer is to be stored (then the writer gives it up once it is)."""
        key = flight.key
        with self.lock:
            if self.flights.get(key) is flight:
                del self.flights[key]
            if answer is not None:
                answer.lease = flight.lease
                self.recent[key] = answer
        if entry is not None:
            flight.finish(RESOLVED, entry)
        elif whole is not None and (not flight.followers or whole()):
            flight.finish(DONE)
        else:
            flight.finish(FAILED)
        if answer is None and flight.lease:
            flight.lease = False
            self.store.release(key)
        if not flight.followers:
            # Nobody follows it, and nobody can any more (it left ``flights`` above): the
            # leader's exchange lets go of it. Else the two hold each other, a cycle only
            # the garbage collector frees: the calls waiting for the writer, promoted to
            # its oldest generation while they wait, kept their bodies long after.
            leader = flight.leader
            if leader.cache_flight is flight:
                leader.cache_flight = None

    def remember(self, answer: Answer) -> None:
        key = answer.exchange.cache_key
        if key is not None:
            with self.lock:
                self.recent[key] = answer

    # -- the writer ---------------------------------------------------------------------------

    def verified(self, key: str, exchange: Exchange, entry: CacheEntry) -> None:
        answer = self.recent.get(key)
        if answer is not None and answer.exchange is exchange and answer.entry is None:
            answer.entry = entry

    def withdraw(self, key: str, exchange: Exchange, store: CacheStorage) -> None:
        """``exchange``'s answer is not one to keep: forgotten, its lease given up."""
        with self.lock:
            answer = self.recent.get(key)
            if answer is None or answer.exchange is not exchange:
                return
            del self.recent[key]
            answer.withdrawn = True
        if answer.lease:
            store.release(key)

    def stored(self, staged: list[tuple[str, CacheEntry, Exchange]], store: CacheStorage, ok: bool) -> None:
        """The writer stored ``staged`` (all of them if ``ok``): the storage answers for them
        from now on, so they are forgotten here, and their leases given up."""
        released = []
        with self.lock:
            for key, _, exchange in staged:
                if ok:
                    self._add(key)
                answer = self.recent.get(key)
                if answer is not None and answer.exchange is exchange:
                    del self.recent[key]
                    if answer.lease:
                        released.append(key)
        for key in released:
            store.release(key)

    # -- the membership filter ------------------------------------------------------------------

    def may_contain(self, key: str) -> bool:
        """Whether the storage may hold ``key``: ``False`` only when the filter, refreshed
        within the last :data:`FILTER_REFRESH` seconds, says it does not. While calls come
        the writer keeps it so (every :data:`FILTER_REFRESH_EVERY` seconds): a query of the
        storage on the app's thread would hand the GIL to the busy writer. Only a filter left
        older (the writer was idle: the first call after a pause) is refreshed here."""
        bits = self.filter
        if bits is None:
            return True
        if time.monotonic() >= self._trusted_until:
            self.refresh_filter(self.store, writer=False)
            bits = self.filter
            if bits is None or time.monotonic() >= self._trusted_until:
                return True  # being refreshed by the writer right now: ask the storage
        h = hash(key)
        for _ in range(3):
            index = h & _FILTER_MASK
            if not bits[index >> 3] & (1 << (index & 7)):
                return False
            h >>= _FILTER_BITS
        return True

    def _add(self, key: str) -> None:
        bits = self.filter
        if bits is None:
            return
        h = hash(key)
        for _ in range(3):
            index = h & _FILTER_MASK
            bits[index >> 3] |= 1 << (index & 7)
            h >>= _FILTER_BITS

    def refresh_filter(self, store: CacheStorage, *, writer: bool = True) -> None:
        """Add what other processes stored since the last time: by the writer thread after
        each batch, at most every :data:`FILTER_REFRESH_EVERY` seconds, so that while calls
        come the filter is always younger than :data:`FILTER_REFRESH`; on another thread
        (``writer=False``) only once it is older than that. The first load (every key) is
        left to the writer; until then every lookup asks the storage."""
        now = time.monotonic()
        if now < (self._refresh_due if writer else self._trusted_until) or (
            self.filter is None and not writer
        ):
            return
        if not self._refreshing.acquire(blocking=False):
            return
        try:
            self._refresh_due = now + FILTER_REFRESH_EVERY
            changes = store.changes_since(self._cursor)
            if changes is None:
                self.filter = None  # cannot list: ask the storage every time (tried again later)
                self._cursor = None
                return
            keys, cursor = changes
            bits = self.filter if self.filter is not None else bytearray(1 << (_FILTER_BITS - 3))
            for key in keys:
                h = hash(key)
                for _ in range(3):
                    index = h & _FILTER_MASK
                    bits[index >> 3] |= 1 << (index & 7)
                    h >>= _FILTER_BITS
            self._cursor = cursor
            self.filter = bits
            # What was stored before `now` is in it (the storage's listing began after).
            self._trusted_until = now + FILTER_REFRESH
        except Exception:
            self.filter = None
            self._cursor = None
        finally:
            self._refreshing.release()

    def forget(self) -> None:
        """Forget what is remembered (``httptrack cache clear``): recent answers and the
        filter (reloaded by the writer)."""
        with self.lock:
            self.recent.clear()
            self.filter = None
            self._cursor = None
            self._refresh_due = 0.0


_shared: dict[int, tuple[CacheStorage, Shared]] = {}
_shared_lock = threading.Lock()


def shared_state(store: CacheStorage) -> Shared:
    """The one :class:`Shared` of ``store`` in this process."""
    found = _shared.get(id(store))
    if found is not None and found[0] is store:
        return found[1]
    with _shared_lock:
        found = _shared.get(id(store))
        if found is None or found[0] is not store:
            found = _shared[id(store)] = (store, Shared(store))
        return found[1]


def _forget_after_fork() -> None:
    # A child has no flights (their leaders are the parent's threads) and no leases.
    global _shared_lock, _judging
    _shared_lock = threading.Lock()
    _judging = threading.Lock()
    for _, shared in _shared.values():
        shared.lock = threading.Lock()
        shared._refreshing = threading.Lock()
        shared.flights.clear()
        shared.recent.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
