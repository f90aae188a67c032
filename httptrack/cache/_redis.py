"""The response cache in Redis: one cache for every process, on every machine, that names
the same server (``HTTPTRACK_CACHE_URL=redis://host:6379/0``).

The same entries as the cache folder (``_entry.encode_entry``: httptrack's checksummed
format, never pickled), under the same keys (a keyed hash whose salt lives in Redis, made
once by whichever process comes first), in the same modes. What Redis does itself:

- **Expiry.** Each entry is stored with its TTL as the key's expiry (``SET … PX``): Redis
  drops it when it is over. (So ``replay`` mode serves a recording only within its TTL;
  keep recordings for offline tests in a cache folder.)
- **Memory.** Redis's ``maxmemory`` and an eviction policy bound what the cache takes
  (``volatile-lru``: entries all have a TTL, the salt has none and is never evicted). An
  entry over :data:`MAX_ENTRY_BYTES` is not stored.

A Redis outage is **no cache, never a failed call**: every command has short timeouts
(:data:`CONNECT_TIMEOUT`, :data:`SOCKET_TIMEOUT`, no retries), and after a failure Redis is
left alone for :data:`BREAKER_SECONDS` (a circuit breaker: calls go to the provider, without
waiting on a dead server each time), then tried again. Each failure is a tracking fault
(``cache_open``, ``cache_read``, ``cache_write``), reported with the server's URL less its
password.

Like the folder, each process keeps recent entries in memory (``_entry.Memory``) and
forgets them when told: ``httptrack cache clear`` and an answer stored by ``refresh`` bump a
generation counter in Redis, which every process reads (with the salt) at most once a second.

redis-py is imported only when a Redis URL is used (the ``redis`` extra).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from typing import Any

from .._faults import FaultKind, report_fault
from .._redact import server_url
from ._entry import MEMORY_BYTES, MEMORY_ENTRY_BYTES, CacheEntry, Memory, encode_entry, remember

__all__ = [
    "BREAKER_SECONDS",
    "MAX_ENTRY_BYTES",
    "RedisStore",
    "clear_redis_cache",
    "redis_cache_stats",
    "shared_redis_store",
]

#: Every key httptrack writes starts with this (entries, the salt, the generation).
PREFIX = "httptrack:"
SALT_KEY = PREFIX + "salt"
GENERATION_KEY = PREFIX + "generation"
ENTRY_PREFIX = PREFIX + "entry:"
#: Single-flight leases: ``lease:<key>``, a random token, ``PX`` the wait (never an entry).
LEASE_PREFIX = PREFIX + "lease:"
#: Every live entry's key, scored by when it expires (ms): the full list for a new process's
#: membership filter (``changes_since(None)``); trimmed of expired keys on every write.
KEYS_KEY = PREFIX + "keys"
#: A stream with one record per stored batch (its keys): what was stored since a cursor.
ADDED_KEY = PREFIX + "added"
#: About how many batches the stream keeps; a cursor older than its start lists every key.
ADDED_MAXLEN = 100_000
#: Seconds to connect, and to wait for each answer: a Redis that does not answer in this
#: long is treated as down (the call goes to the provider). The URL's own
#: ``?socket_timeout=…&socket_connect_timeout=…`` win (redis-py's URL options).
CONNECT_TIMEOUT = 0.5
SOCKET_TIMEOUT = 0.5
#: After a failure, Redis is not tried again for this long (calls go uncached meanwhile).
BREAKER_SECONDS = 5.0
#: After Redis refused a write (out of memory under ``noeviction``, a read-only replica),
#: storing pauses this long; reads go on.
WRITE_PAUSE = 30.0
#: The largest entry stored (bytes, as encoded): a bigger one is not worth a server's memory.
MAX_ENTRY_BYTES = 16 * 1024 * 1024
#: How often (seconds) a process reads the salt and the generation counter.
GENERATION_CHECK_INTERVAL = 1.0
_SALT_BYTES = 32


_UNSET: Any = object()


def _redis() -> Any:
    import redis  # the `redis` extra; only with a Redis URL

    return redis


class RedisStore:
    """The response cache on one Redis server (database), as this process uses it. Use
    :func:`shared_redis_store`. Implements ``_storage.CacheStorage``."""

    def __init__(self, url: str) -> None:
        self.url = url
        #: The URL as messages show it (no password).
        self.shown_url = server_url(url)
        self.memory = Memory(MEMORY_BYTES, MEMORY_ENTRY_BYTES)
        self._lock = threading.Lock()
        self._client: Any = None
        self._salt: bytes | None = None
        #: Used while the server cannot be reached: keys are still computed (for the log),
        #: nothing is found under them.
        self._private_salt = os.urandom(_SALT_BYTES)
        #: Why the server cannot be used right now (``None``: it can, or it was not tried).
        self.broken: str | None = None
        self._skip_until = 0.0
        self._write_after = 0.0
        #: The generation counter as last read (``None``: none yet; :data:`_UNSET`: not read).
        self._generation: Any = _UNSET
        self._generation_due = 0.0
        #: The token of each lease this process holds (released only if still its own).
        self._leases: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"RedisStore({self.shown_url!r})"

    # -- the connection and the circuit breaker -------------------------------------------

    def _usable(self) -> Any:
        """The client, or ``None`` while the breaker is open (a recent failure)."""
        if self._skip_until and time.monotonic() < self._skip_until:
            return None
        client = self._client
        if client is None:
            with self._lock:
                client = self._client
                if client is None:
                    try:
                        client = self._client = _connect(self.url)
                    except Exception as exc:  # a URL redis-py refuses, a missing redis-py
                        self._failed("cache_open", exc)
                        return None
        return client

    def _failed(self, kind: FaultKind, exc: BaseException, *, writing: bool = False) -> None:
        """A command failed: open the breaker (the server is down or too slow), or, for a
        write Redis refused, pause storing."""
        outage = isinstance(exc, OSError) or type(exc).__name__ in ("ConnectionError", "TimeoutError")
        if not outage and type(exc).__module__.startswith("redis"):
            redis = _redis()
            outage = isinstance(exc, redis.ConnectionError | redis.TimeoutError)
        detail = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ImportError):
            detail = "redis-py is not installed: pip install 'httptrack[redis]'"
        if outage or not writing:
            self._skip_until = time.monotonic() + BREAKER_SECONDS
            if outage and self._client is not None:  # its pooled connections are dead too
                with contextlib.suppress(Exception):
                    self._client.connection_pool.disconnect()
            self.broken = detail
            what = "cannot be reached" if outage else "failed"
            message = (
                f"the Redis response cache at {self.shown_url} {what} ({detail}); calls go to the "
                f"provider uncached, and Redis is tried again in {BREAKER_SECONDS:.0f}s"
            )
        else:
            self._write_after = time.monotonic() + WRITE_PAUSE
            message = (
                f"the Redis response cache at {self.shown_url} refused to store a response "
                f"({detail}); storing pauses for {WRITE_PAUSE:.0f}s (calls are unaffected)"
            )
        # Redis's own errors (down, refused, out of memory) are the environment's: the message
        # says it all. A traceback is for anything else (a bug here).
        ours = (
            not outage and not type(exc).__module__.startswith("redis") and not isinstance(exc, ImportError)
        )
        report_fault(kind, message, exc if ours else None)

    def _succeeded(self) -> None:
        if self.broken is not None:
            self.broken = None
            self._skip_until = 0.0

    # -- the salt and the generation --------------------------------------------------------

    def salt(self) -> bytes:
        """The salt shared by every client of this Redis database (created atomically by
        the first one: ``SET NX``); a process-private one while Redis cannot be reached."""
        salt = self._salt
        if salt is not None:
            return salt
        client = self._usable()
        if client is None:
            return self._private_salt
        try:
            salt = self._load_salt(client)
        except Exception as exc:
            self._failed("cache_open", exc)
            return self._private_salt
        self._succeeded()
        return salt

    def _load_salt(self, client: Any, current: bytes | None = None) -> bytes:
        if current is None:
            client.set(SALT_KEY, os.urandom(_SALT_BYTES), nx=True)
            current = client.get(SALT_KEY)
        salt = _usable_salt(current)
        if salt != self._salt:
            if self._salt is not None:  # the database was flushed: the old entries are gone
                self.memory.clear()
            self._salt = salt
        return salt

    def _check_generation(self, client: Any) -> None:
        """Once a second: forget what memory holds if entries were cleared or replaced
        (the generation changed) or the database was flushed (the salt changed)."""
        now = time.monotonic()
        if now < self._generation_due:
            return
        self._generation_due = now + GENERATION_CHECK_INTERVAL
        salt, generation = client.mget(SALT_KEY, GENERATION_KEY)
        if salt is None:
            if self._salt is not None:
                self._load_salt(client)
        elif self._salt is not None and salt != self._salt:
            self._load_salt(client, salt)
        if generation != self._generation:
            self.memory.clear()
            self._generation = generation

    # -- reading (the app's thread) -------------------------------------------------------

    def get(self, key: str) -> CacheEntry | None:
        client = self._usable()
        if client is not None:
            try:
                self._check_generation(client)
            except Exception as exc:
                self._failed("cache_read", exc)
                client = None
        # What this process remembers is served also while Redis is down.
        entry = self.memory.get(key)
        if entry is not None or client is None:
            return entry
        try:
            blob = client.get(ENTRY_PREFIX + key)
        except Exception as exc:
            self._failed("cache_read", exc)
            return None
        self._succeeded()
        if blob is None:
            return None
        return remember(key, blob, self.memory, self.drop)

    def drop(self, key: str) -> None:
        self.memory.discard(key)
        client = self._usable()
        if client is None:
            return
        try:
            client.delete(ENTRY_PREFIX + key)
        except Exception as exc:
            self._failed("cache_write", exc, writing=True)

    # -- writing (the background writer) --------------------------------------------------

    def put_many(self, entries: list[tuple[str, CacheEntry]]) -> int:
        """Store ``entries``, each with its TTL as the key's expiry, in one round trip."""
        if not entries or time.monotonic() < self._write_after:
            return 0
        client = self._usable()
        if client is None:
            return 0
        kept = []
        expiries: dict[str, int] = {}
        now_ms = int(time.time() * 1000)
        pipe = client.pipeline(transaction=False)
        for key, entry in entries:
            blob = encode_entry(entry)
            if len(blob) > MAX_ENTRY_BYTES:
                continue
            ttl_ms = max(1, int(entry.ttl * 1000))
            pipe.set(ENTRY_PREFIX + key, blob, px=ttl_ms)
            expiries[key] = now_ms + ttl_ms
            kept.append((key, entry))
        if not kept:
            return 0
        # What changes_since reads: the live keys by expiry, and this batch on the stream.
        pipe.zadd(KEYS_KEY, expiries)
        pipe.zremrangebyscore(KEYS_KEY, "-inf", now_ms)
        pipe.xadd(ADDED_KEY, {"keys": " ".join(expiries)}, maxlen=ADDED_MAXLEN, approximate=True)
        try:
            pipe.execute()
        except Exception as exc:
            self._failed("cache_write", exc, writing=True)
            return 0
        self._succeeded()
        # Not kept in memory as well (as the folder's store): most answers are never asked
        # again; a hit reads one back once, then holds it. An older copy held here goes.
        for key, _ in kept:
            self.memory.discard(key)
        return len(kept)

    # -- single-flight leases (any thread) --------------------------------------------------

    def acquire(self, key: str, seconds: float) -> bool:
        """``SET lease:<key> <token> NX PX <ms>``: atomic across every client of the server;
        the lease expires by itself. ``True`` (nobody to wait for) while Redis is down."""
        client = self._usable()
        if client is None or time.monotonic() < self._write_after:  # down, or refusing writes
            return True
        token = os.urandom(16)
        try:
            taken = client.set(LEASE_PREFIX + key, token, nx=True, px=max(1, int(seconds * 1000)))
        except Exception as exc:  # a lease is a write: a full Redis pauses writes, not reads
            self._failed("cache_write", exc, writing=True)
            return True
        if taken:
            self._leases[key] = token
        return bool(taken)

    def held(self, key: str) -> bool:
        client = self._usable()
        if client is None:
            return False
        try:
            return bool(client.exists(LEASE_PREFIX + key))
        except Exception as exc:
            self._failed("cache_read", exc)
            return False

    def release(self, key: str) -> None:
        """Delete the lease if it is still this process's (compare-and-delete in one script:
        a lease that expired and was taken by another process is left to it)."""
        token = self._leases.pop(key, None)
        client = self._usable()
        if client is None or token is None:
            return
        try:
            client.eval(_RELEASE, 1, LEASE_PREFIX + key, token)
        except Exception as exc:
            self._failed("cache_write", exc, writing=True)

    # -- what is stored (the policy's membership filter) -------------------------------------

    def changes_since(self, cursor: object | None) -> tuple[list[str], object] | None:
        """``(keys, cursor)``: with no cursor every live key (the sorted set) and the
        stream's last id, read in one ``MULTI`` (nothing stored between them is lost); with
        one, the keys of the batches the stream holds after it, or every live key again if
        the stream was trimmed past it. ``None`` while Redis cannot be reached."""
        client = self._usable()
        if client is None:
            return None
        try:
            if cursor is not None:
                pipe = client.pipeline(transaction=False)
                pipe.xrange(ADDED_KEY, min="-", max="+", count=1)
                pipe.xrange(ADDED_KEY, min=f"({_text(cursor)}", max="+")
                first, added = pipe.execute()
                if not first or _stream_id(first[0][0]) <= _stream_id(cursor) or _text(cursor) == "0-0":
                    keys = [k for _, fields in added for k in _text(fields.get(b"keys", b"")).split()]
                    return keys, (_text(added[-1][0]) if added else cursor)
            pipe = client.pipeline(transaction=True)
            pipe.xrevrange(ADDED_KEY, max="+", min="-", count=1)
            pipe.zrangebyscore(KEYS_KEY, int(time.time() * 1000), "+inf")
            last, live = pipe.execute()
        except Exception as exc:
            self._failed("cache_read", exc)
            return None
        self._succeeded()
        return [_text(k) for k in live], (_text(last[0][0]) if last else "0-0")

    def announce_replaced(self) -> None:
        """Bump the generation: other processes forget their in-memory copies within a
        second. This one keeps its own (it holds the new answers), unless someone else
        bumped it meanwhile."""
        client = self._usable()
        if client is None:
            return
        try:
            before = self._generation
            after = client.incr(GENERATION_KEY)
        except Exception as exc:
            self._failed("cache_write", exc, writing=True)
            return
        if before is _UNSET or int(before or 0) != after - 1:
            self.memory.clear()
        self._generation = str(after).encode()

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


#: Delete a lease only if it holds this token (KEYS[1] the lease, ARGV[1] the token).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_id(value: object) -> tuple[int, int]:
    """A stream id (``"1700000000000-3"``) as a comparable pair."""
    ms, _, seq = _text(value).partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


def _usable_salt(value: Any) -> bytes:
    """The stored salt as a key for BLAKE2b (at most 64 bytes): as stored when it is one
    httptrack made, else its digest (the same in every process)."""
    if isinstance(value, bytes) and 16 <= len(value) <= 64:
        return value
    return hashlib.blake2b(value if isinstance(value, bytes) else b"", digest_size=_SALT_BYTES).digest()


def _connect(url: str, *, timeout: float = SOCKET_TIMEOUT) -> Any:
    """A redis-py client for ``url``: short timeouts, no retries (a failure opens the
    breaker instead), a connection pool shared by the process's threads (redis-py makes a
    new one in a forked child)."""
    redis = _redis()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
        client_name="httptrack",
    )


_stores: dict[str, RedisStore] = {}
_stores_lock = threading.Lock()


def shared_redis_store(url: str) -> RedisStore:
    """The process's one :class:`RedisStore` for ``url`` (no connection until first use)."""
    store = _stores.get(url)
    if store is None:
        with _stores_lock:
            store = _stores.get(url)
            if store is None:
                store = _stores[url] = RedisStore(url)
    return store


def close_redis_stores() -> None:
    """Close and forget every store of this process (tests; a new one connects on use)."""
    with _stores_lock:
        stores = list(_stores.values())
        _stores.clear()
    for store in stores:
        store.close()


def _forget_after_fork() -> None:
    global _stores_lock
    _stores_lock = threading.Lock()
    for store in _stores.values():
        store._lock = threading.Lock()
        store.memory._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


# -- administration (the CLI) ---------------------------------------------------------------


def redis_cache_stats(url: str) -> dict[str, Any]:
    """What the Redis cache holds: entries (a ``SCAN``; Redis drops expired ones itself),
    the server's memory used, its ``maxmemory`` and eviction policy."""
    client = _connect(url, timeout=10.0)
    try:
        entries = sum(1 for _ in client.scan_iter(match=ENTRY_PREFIX + "*", count=1000))
        memory = client.info("memory")
    finally:
        client.close()
    limit = int(memory.get("maxmemory") or 0)
    return {
        "url": server_url(url),
        "exists": True,
        "entries": entries,
        "expired": 0,
        "size_bytes": int(memory.get("used_memory") or 0),
        "size_limit": limit or None,
        "eviction_policy": memory.get("maxmemory_policy"),
        "oldest": None,
        "newest": None,
    }


def clear_redis_cache(url: str) -> int:
    """Remove every entry (the salt stays); every process forgets its in-memory copies
    within a second. Returns how many entries were removed."""
    client = _connect(url, timeout=10.0)
    removed = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=ENTRY_PREFIX + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += int(client.unlink(*batch))
                batch = []
        if batch:
            removed += int(client.unlink(*batch))
        client.unlink(KEYS_KEY, ADDED_KEY)
        client.incr(GENERATION_KEY)
    finally:
        client.close()
    store = _stores.get(url)
    if store is not None:
        store.memory.clear()
    return removed
