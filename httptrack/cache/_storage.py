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
- Entries are private: nobody but the owner of the storage reads them (files 0600).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._store import CacheEntry

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

    def close(self) -> None:
        """Let go of the storage's resources (it reopens on next use)."""
