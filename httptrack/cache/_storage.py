"""The response cache's one seam: what the cache policy needs from a place to keep entries.

``ResponseCache`` (``_policy``) decides what is looked up, stored and for how long; where the
entries live is behind :class:`CacheStorage`. A diskcache folder shared by the processes of
one machine (``_store.EntryStore``) is the implementation today; a shared cache (Redis)
plugs in by implementing the same few methods and being chosen by ``ResponseCache.for_settings``.

The contract, whatever the engine:

- ``salt()`` is the storage's own secret, the same for every process that shares it: keys
  are keyed hashes of it (``_key``), so the same request has the same key everywhere the
  storage is shared, and a key reveals nothing of the request.
- ``get(key)`` answers with the entry or ``None`` — also when the storage cannot be reached
  (the request is then sent; it never raises into the app's call) — and says why in
  ``broken`` while it cannot be used.
- ``put_many(entries)`` stores a batch (from the writer thread); it returns how many were
  stored. ``drop(key)`` forgets one entry (found damaged). ``announce_replaced()`` tells the
  other processes sharing the storage that answers were replaced (a ``refresh``), so that
  none keeps serving its in-memory copy.
- **Leases** (single-flight across processes): ``acquire(key, seconds)`` takes the lease on
  a key when nobody holds an unexpired one, atomically for every process sharing the
  storage; ``held(key)`` says whether someone (this process included) holds one;
  ``release(key)`` gives it up. A lease expires by itself after ``seconds``, so a holder
  that dies (``kill -9``) blocks nobody for longer than that (the folder storage's POSIX
  record locks: another process's lease lasts until given up, but not past its holder's
  death). Leases are not entries: they
  are never returned by ``get``, counted, evicted with entries or listed.
- **Changes** (misses answered from memory): ``changes_since(cursor)`` lists the keys stored
  since ``cursor`` by any process, so that the policy keeps an in-memory membership filter
  and answers most misses without asking the storage; ``None`` when the storage cannot
  list them cheaply (the policy then asks ``get`` on every lookup).
- No method raises into the app's call: a storage that cannot be reached answers "nothing
  there" (``get`` ``None``, ``held`` ``False``, ``acquire`` ``True``: nobody to wait for,
  ``changes_since`` ``None``), counts a fault and says why in ``broken``.
- Entries are private: nobody but the owner of the storage reads them (files 0600).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._entry import CacheEntry

__all__ = ["CacheStorage"]


class CacheStorage(Protocol):
    """Where the response cache keeps its entries (one object per storage per process)."""

    #: Why the storage cannot be used right now (``None``: it can, or it was not tried).
    broken: str | None

    def salt(self) -> bytes:
        """The storage's secret for keyed hashes (made once, shared by every process)."""

    def get(self, key: str) -> CacheEntry | None:
        """The entry stored under ``key``, or ``None`` (none, damaged, or unreachable)."""

    def put_many(self, entries: list[tuple[str, CacheEntry]]) -> int:
        """Store ``entries``; how many were stored."""

    def drop(self, key: str) -> None:
        """Forget ``key``'s entry."""

    def announce_replaced(self) -> None:
        """Tell the other processes sharing this storage that entries were replaced."""

    def acquire(self, key: str, seconds: float) -> bool:
        """Take the lease on ``key`` for at most ``seconds``: ``True`` when the caller now
        holds it (nobody held an unexpired one), ``False`` when another holder does (this
        process's own earlier lease included: the policy keeps its in-process flights
        itself and asks only once per key). Atomic across every process sharing the
        storage (diskcache: ``mkdir``; Redis: ``SET key value NX PX ms``). ``True`` when the
        storage cannot be reached: there is nobody to wait for."""

    def held(self, key: str) -> bool:
        """Whether anyone holds an unexpired lease on ``key`` (``False`` when unreachable).
        Followers in other processes poll it with :meth:`get` while they wait."""

    def release(self, key: str) -> None:
        """Give up the lease on ``key`` (the answer is stored, or will not be: a failed, cut
        short or uncacheable call). Releasing a lease not held, or already expired, is not
        an error. Best effort: a lease not released expires by itself."""

    def changes_since(self, cursor: object | None) -> tuple[Sequence[str], object] | None:
        """``(keys, new_cursor)``: the keys of entries stored (by any process) since
        ``cursor`` was returned — every key in the storage for ``None`` — and the cursor to
        pass next time. It may repeat keys already listed (a margin against clocks and
        late commits), never miss one. ``None``: the storage cannot list its keys cheaply
        (the policy then asks :meth:`get` on every lookup)."""

    def close(self) -> None:
        """Let go of the storage's resources (it reopens on next use)."""
