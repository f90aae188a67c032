"""Where cached responses live: a diskcache folder shared by processes, and a small
in-process memory of recent entries in front of it.

- Entries are stored as bytes in httptrack's own format (:func:`encode_entry`), never
  pickled: a cache folder someone else can write to cannot run code in the app. A
  checksum covers every byte, so a damaged entry is noticed, treated as a miss and dropped.
- One :class:`EntryStore` per folder per process (:func:`shared_store`), opened on first
  use (a transport that never calls an LLM API never touches the disk).
- Reads happen on the app's thread: diskcache's SQLite waits at most :data:`READ_TIMEOUT`
  for a lock held by another process, then the read is a miss. Writes happen in the
  background writer and retry a little longer.
- A folder that cannot be used (unwritable, disk full) is a tracking fault, reported once:
  calls go to the provider as if there were no cache, and the store tries again later.
- ``httptrack cache clear`` / ``prune``, and storing an answer fetched to replace another
  (mode ``refresh``, ``X-Httptrack-Cache: no-cache``), bump a generation file; every process
  checks it at most once a second and then forgets what it remembered in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: leases are folders
    fcntl = None  # type: ignore[assignment]

from .._faults import FaultKind, report_fault
from ._entry import MEMORY_BYTES, MEMORY_ENTRY_BYTES, CacheEntry, Memory, encode_entry, remember
from ._lease import LeaseFile, lease_file

__all__ = [
    "GENERATION_FILE",
    "EntryStore",
    "bump_generation",
    "cache_stats",
    "clear_cache",
    "make_private",
    "prune_cache",
    "shared_store",
]

#: Seconds a read on the app's thread waits for a lock held by another process.
READ_TIMEOUT = 0.1
#: A write (in the background writer) retries this many times, ``READ_TIMEOUT`` each.
WRITE_ATTEMPTS = 20
#: Entries stored per transaction (bounds how long other processes' writes wait for it).
PUT_BATCH = 100
#: After the folder fails to open or a write fails, wait this long before trying again.
RETRY_AFTER = 30.0
#: The folder is brought back under its size limit at most this often (seconds), unless
#: what was stored since then is more than its limit divided by CULL_SHARE: it passes its
#: limit by one second's entries at most, and by a twentieth of it for large answers.
CULL_INTERVAL = 1.0
CULL_SHARE = 20
GENERATION_FILE = "httptrack.generation"
GENERATION_CHECK_INTERVAL = 1.0
#: SQLite page cache per connection to the index (pages of 4 KiB: 1 MiB).
SQLITE_CACHE_PAGES = 256
#: Single-flight leases: a lock on one byte of this file per key being fetched (POSIX), or
#: one folder per key where there are no such locks (see :meth:`EntryStore.acquire`).
LEASES_FILE = "leases.{}.lock"
#: How many such files: the kernel walks a file's locks on every lock taken, and a writer
#: behind by thousands of answers holds thousands of leases (~5 ns each per walk).
LEASE_FILES = 16
LEASES_FOLDER = "leases"
#: ``changes_since`` lists the keys of this many rows before its cursor again (rows deleted
#: at the end of the index let their ``rowid`` be given to new rows).
CHANGES_ROWS = 64

_UNSET: Any = object()


class EntryStore:
    """One cache folder, as this process uses it. Use :func:`shared_store`."""

    def __init__(self, directory: Path, size_limit: int | None) -> None:
        self.directory = directory
        #: The limit this process asks for (the most recently made transport that named
        #: one); ``None``: the folder's own (diskcache's default, 1 GiB, for a new folder).
        self.size_limit = size_limit
        self.memory = Memory(MEMORY_BYTES, MEMORY_ENTRY_BYTES)
        self._lock = threading.Lock()
        self._disk: Any = None
        self._salt: bytes | None = None
        #: Why the folder cannot be used right now (``None``: it can, or it was not tried).
        self.broken: str | None = None
        self._open_after = 0.0
        self._write_after = 0.0
        self._cull_due = 0.0
        self._unculled = 0
        self._generation: Any = _UNSET
        self._generation_due = 0.0
        #: How long a lease lives (the policy's wait; set by every ``acquire``).
        self._lease_seconds = 60.0
        #: The leases this process holds (key -> when each expires, monotonic clock).
        self._held: dict[str, float] = {}
        self._lease_lock = threading.Lock()
        #: The lease files, opened on first use (``_lease.lease_file``: one per process).
        self._lease_files: list[LeaseFile | None] = [None] * LEASE_FILES

    # -- opening ------------------------------------------------------------------------------

    def _open(self) -> Any:
        """The diskcache ``Cache``, opened on first use; ``None`` while the folder is unusable."""
        disk = self._disk
        if disk is not None or time.monotonic() < self._open_after:
            return disk
        with self._lock:
            if self._disk is not None or time.monotonic() < self._open_after:
                return self._disk
            try:
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                make_private(self.directory)
                salt = _load_salt(self.directory)
                self._disk = _diskcache().Cache(
                    str(self.directory),
                    disk=_private_disk(),
                    timeout=READ_TIMEOUT,
                    # No size_limit here: diskcache would write it into the folder's settings
                    # on every open, whoever set it last; _apply_size_limit writes it only
                    # when this process names one and it differs.
                    eviction_policy="least-recently-stored",  # reads stay reads (no access-time writes)
                    statistics=False,
                    tag_index=False,
                    # No eviction inside every set (about four more statements each, every one
                    # a GIL release): put_many culls once per batch instead (see _cull).
                    cull_limit=0,
                    # SQLite's page cache and memory map are per connection (diskcache opens one
                    # per thread: the app's and the writer's): at diskcache's defaults (32 MiB
                    # and 64 MiB) they grew the process by tens of MiB as the index grew. Reads
                    # here are one row by key: a small cache serves them as well.
                    sqlite_cache_size=SQLITE_CACHE_PAGES,
                    sqlite_mmap_size=0,
                )
                self._salt = salt
                self.broken = None
                self._apply_size_limit(self._disk)
            except Exception as exc:
                self._open_after = time.monotonic() + RETRY_AFTER
                self.broken = f"{type(exc).__name__}: {exc}"
                report_fault(
                    "cache_open",
                    f"the response cache at {self.directory} cannot be used ({self.broken}); calls go to "
                    "the provider uncached until it can",
                    exc,
                )
            return self._disk

    def salt(self) -> bytes:
        """The folder's key salt (a process-private one while the folder is unusable: keys
        are then still computed, for the log, but nothing is found or stored under them)."""
        if self._salt is None:
            self._open()
            if self._salt is None:
                with self._lock:
                    if self._salt is None:
                        self._salt = os.urandom(32)
        return self._salt

    # -- reading (the app's thread) -------------------------------------------------------

    def get(self, key: str) -> CacheEntry | None:
        self._check_generation()
        entry = self.memory.get(key)
        # One past its TTL may have been replaced by another process meanwhile: read again.
        if entry is not None and time.time() < entry.created + entry.ttl:
            return entry
        disk = self._open()
        if disk is None:
            return None
        try:
            blob = disk.get(key, default=None, retry=False)
        except Exception as exc:  # locked by another process past the timeout, I/O error
            _report_busy_or(
                exc, "cache_read", f"the response cache at {self.directory} could not be read; a miss"
            )
            return None
        if blob is None:
            return None
        return remember(key, blob, self.memory, self.drop)

    def drop(self, key: str) -> None:
        self.memory.discard(key)
        disk = self._open()
        if disk is None:
            return
        try:
            disk.delete(key, retry=False)
        except Exception as exc:
            report_fault("cache_write", f"could not delete an entry from {self.directory}", exc)

    def _check_generation(self) -> None:
        now = time.monotonic()
        if now < self._generation_due:
            return
        self._generation_due = now + GENERATION_CHECK_INTERVAL
        token = _generation_token(self.directory)
        if token != self._generation:
            if self._generation is not _UNSET:
                self.memory.clear()
            self._generation = token

    # -- single-flight leases (any thread) --------------------------------------------------
    #
    # Where record locks exist, a lease is a lock on one byte of ``leases.<n>.lock`` (the
    # file and the offset drawn from the key, the same in every process): taking one and
    # giving it up cost one system call each, made without releasing the GIL where that is
    # safe (``_lease``: a miss on the app's thread then never hands the GIL to the writer
    # here), involve neither diskcache's index nor its lock, and the kernel gives a lease up
    # when its holder dies (``kill -9`` included), so it blocks nobody after that. The locks
    # belong to this process (its one open file per lease file): this process's own leases
    # are kept in ``_held``, and expire ``seconds`` after they were taken (another thread of
    # this process may then take it). Another process's lease lasts until it is given up or
    # its holder dies; a request that finds one waits at most its ``cache_wait`` anyway,
    # then sends its own.
    #
    # Elsewhere (Windows) a lease is an empty folder ``leases/<key>``: ``mkdir`` is atomic
    # (it fails if the folder exists). It expires ``seconds`` after it was made (its
    # mtime): a holder that died blocks nobody for longer. Two processes that find the same
    # expired lease at once may both take it: at worst one more call is sent.

    def _lease_file(self, key: str) -> tuple[LeaseFile | None, int]:
        """The open file that holds ``key``'s lease and its offset there."""
        try:  # a key is a keyed hash in hex: its first 64 bits are as good as any
            h = int(key[:16], 16)
        except ValueError:
            h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
        index = h % LEASE_FILES
        files = self._lease_files
        file = files[index]
        if file is None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                file = files[index] = lease_file(os.path.join(self.directory, LEASES_FILE.format(index)))
            except OSError:
                return None, 0
        return file, h >> 6

    def acquire(self, key: str, seconds: float) -> bool:
        self._lease_seconds = seconds
        if fcntl is None:
            return self._acquire_folder(key, seconds)
        file, offset = self._lease_file(key)
        if file is None:  # unwritable: nobody can hold it either; no waiting
            return True
        with self._lease_lock:
            now = time.monotonic()
            until = self._held.get(key)
            if until is not None:  # this process holds it (another thread's request)
                if now < until:
                    return False
                self._held[key] = now + seconds  # expired: taken over
                return True
            taken = file.try_lock(offset)
            if taken is False:  # another process holds it
                return False
            if taken:  # (None: no locks on this file system, so nobody to wait for)
                self._held[key] = now + seconds
            return True

    def held(self, key: str) -> bool:
        if fcntl is None:
            return self._held_folder(key)
        file, offset = self._lease_file(key)
        if file is None:
            return False
        with self._lease_lock:
            until = self._held.get(key)
            if until is not None:
                return time.monotonic() < until
            taken = file.try_lock(offset)  # free if this process can take it (given back at once)
            if taken:
                file.unlock(offset)
            return taken is False

    def release(self, key: str) -> None:
        if fcntl is None:
            self._release_folder(key)
            return
        with self._lease_lock:
            if self._held.pop(key, None) is None:
                return  # not this process's lease: left to its holder
            file, offset = self._lease_file(key)
            if file is not None:
                file.unlock(offset)

    def _lease_path(self, key: str) -> str:
        return os.path.join(self.directory, LEASES_FOLDER, key)

    def _acquire_folder(self, key: str, seconds: float) -> bool:
        path = self._lease_path(key)
        for _ in range(2):
            try:
                os.mkdir(path, 0o700)
                return True
            except FileExistsError:
                if not self._expired(path, seconds):
                    return False
                with contextlib.suppress(OSError):
                    os.rmdir(path)
            except FileNotFoundError:  # the leases folder does not exist yet
                try:
                    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                except OSError:
                    return True
            except OSError:  # unwritable: nobody can hold it either; no waiting
                return True
        return False

    def _held_folder(self, key: str) -> bool:
        try:
            made = os.stat(self._lease_path(key)).st_mtime
        except OSError:
            return False
        return time.time() < made + self._lease_seconds

    def _release_folder(self, key: str) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(self._lease_path(key))

    def _expired(self, path: str, seconds: float) -> bool:
        try:
            return time.time() >= os.stat(path).st_mtime + seconds
        except OSError:
            return True  # released meanwhile: try again

    # -- what is stored (a membership filter's feed) -----------------------------------------

    def changes_since(self, cursor: object | None) -> tuple[list[str], object] | None:
        """The keys stored since ``cursor`` (the highest ``rowid`` listed so far), read from
        diskcache's index (its documented ``Cache`` table) over the thread's own connection
        to it: only the rows added since, and the last :data:`CHANGES_ROWS` before them again.

        A ``rowid`` cursor misses nothing committed late: writers of an SQLite database take
        turns, and a new row's ``rowid`` is one more than the largest at its insert, so rows
        appear in ``rowid`` order (a key stored again keeps its row, and was listed when it
        was first stored). Rows deleted at the end of the table let their ``rowid`` be given
        again: the last few are listed again each time, and an index whose largest
        ``rowid`` is below the cursor (cleared, then stored into again) is listed whole."""
        disk = self._open()
        if disk is None:
            return None
        since = 0 if cursor is None else int(cursor)  # type: ignore[call-overload]
        try:
            sql: Any = getattr(disk, "_sql", None)
            with contextlib.ExitStack() as stack:
                if sql is None:  # pragma: no cover - a diskcache without its documented _sql
                    sql = stack.enter_context(_read_index(self.directory, READ_TIMEOUT)).execute
                rows = sql(
                    "SELECT rowid, key FROM Cache WHERE rowid > ? ORDER BY rowid",
                    (max(0, since - CHANGES_ROWS),),
                ).fetchall()
                newest = rows[-1][0] if rows else 0
                if since and newest < since:
                    (top,) = sql("SELECT MAX(rowid) FROM Cache").fetchone()
                    if (top or 0) < since - CHANGES_ROWS:  # emptied since: list it whole
                        rows = sql("SELECT rowid, key FROM Cache ORDER BY rowid").fetchall()
                        newest = rows[-1][0] if rows else 0
                        since = 0
        except Exception as exc:
            _report_busy_or(exc, "cache_read", f"the response cache at {self.directory} could not be listed")
            return None
        return [key for _, key in rows if isinstance(key, str)], max(newest, since)

    # -- writing (the background writer) --------------------------------------------------

    def put(self, key: str, entry: CacheEntry) -> bool:
        """Store ``entry`` (on disk and in memory); ``False`` when it could not be."""
        return self.put_many([(key, entry)]) == 1

    def put_many(self, entries: list[tuple[str, CacheEntry]]) -> int:
        """Store ``entries`` (on disk), how many were stored. The background
        writer stores a batch's responses at once: one transaction per :data:`PUT_BATCH`
        entries instead of one each (a commit costs more than the write itself). An entry
        whose call's row holds its answer (``CacheEntry.source``) is stored by reference:
        without its body and figures (one copy of the bytes, in the log; see ``_rows``)."""
        if not entries or time.monotonic() < self._write_after:
            return 0
        disk = self._open()
        if disk is None:
            return 0
        blobs = []
        limit = disk.size_limit
        for key, entry in entries:
            blob = encode_entry(entry, by_reference=True)
            if len(blob) <= limit:
                blobs.append((key, entry, blob))
        stored = 0
        memory = self.memory
        for start in range(0, len(blobs), PUT_BATCH):
            group = blobs[start : start + PUT_BATCH]
            if not self._write_group(disk, group):
                break
            # Not kept in memory: most answers are never asked again, and the process's
            # memory would fill with them (a hit reads it from the folder once, then holds
            # it). An older copy held here is forgotten: this one replaces it.
            if len(memory):
                for key, _, _ in group:
                    memory.discard(key)
            stored += len(group)
            self._unculled += sum(len(blob) for _, _, blob in group)
        # Eviction at most once a second, or once what was stored since the last is a
        # twentieth of the limit (a small folder, large answers).
        if stored and (time.monotonic() >= self._cull_due or self._unculled * CULL_SHARE > limit):
            self._cull(disk)
        return stored

    def _cull(self, disk: Any) -> None:
        """Drop the oldest stored entries while the folder is over its size limit (what
        diskcache does within each ``set`` unless ``cull_limit=0``). Entries past their TTL
        are kept (replay mode still serves them) until evicted so, or pruned."""
        self._cull_due = time.monotonic() + CULL_INTERVAL
        self._unculled = 0
        try:
            disk.cull(retry=False)
        except Exception as exc:  # locked by another process: the next batch culls
            self._cull_due = 0.0
            _report_busy_or(exc, "cache_write", f"could not evict old entries from {self.directory}")

    def _write_group(self, disk: Any, group: list[tuple[str, CacheEntry, bytes]]) -> bool:
        timeout = _diskcache().Timeout
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with disk.transact(retry=False):
                    replaced = _insert(disk, group)
                for name in replaced:  # the files of values replaced, once committed (as ``set``)
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(disk.directory, name))
                return True
            except timeout as exc:
                if attempt == WRITE_ATTEMPTS - 1:
                    lost = "a response was" if len(group) == 1 else f"{len(group)} responses were"
                    # Lost, so counted as a write fault; busy, not broken: no traceback.
                    report_fault(
                        "cache_write",
                        f"the response cache at {self.directory} stayed locked ({exc}); {lost} not stored",
                    )
                    return False
            except Exception as exc:  # disk full, read-only, removed folder
                self._write_after = time.monotonic() + RETRY_AFTER
                report_fault(
                    "cache_write",
                    f"could not store a response in {self.directory}: {exc}; storing pauses for "
                    f"{RETRY_AFTER:.0f}s (calls are unaffected)",
                    exc,
                )
                return False
        return False  # pragma: no cover - the loop returns

    def announce_replaced(self) -> None:
        """Tell the other processes using the folder that entries they may hold in memory
        were replaced (a ``refresh`` or ``no-cache`` call stored a new answer): they forget
        what they remember. This process keeps its own memory (it holds the new answers)."""
        try:
            # Another process may have cleared or replaced entries since this one last
            # looked: forget what it says to forget before writing the new token over it.
            if self._generation is not _UNSET and _generation_token(self.directory) != self._generation:
                self.memory.clear()
            self._generation = _write_generation(self.directory)
        except OSError as exc:
            report_fault(
                "cache_write",
                f"could not tell other processes using {self.directory} that answers were replaced",
                exc,
            )

    def reset_size_limit(self, size_limit: int | None) -> None:
        """A transport was made with ``size_limit``: the folder's limit becomes it, unless it
        is ``None`` (not configured: whatever limit the folder has stays) or already so."""
        if size_limit is None or size_limit == self.size_limit:
            return
        self.size_limit = size_limit
        disk = self._disk
        if disk is not None:
            try:
                disk.reset("size_limit")  # what the folder has now (another process may have set it)
            except Exception as exc:
                report_fault("cache_read", "could not read the cache size limit", exc)
            self._apply_size_limit(disk)

    def _apply_size_limit(self, disk: Any) -> None:
        """Write this process's limit into the folder's settings, only if it names one and
        the folder has another (diskcache culls to the limit its ``Cache`` object holds)."""
        if self.size_limit is None or disk.size_limit == self.size_limit:
            return
        try:
            disk.reset("size_limit", self.size_limit)
        except Exception as exc:
            report_fault("cache_write", "could not change the cache size limit", exc)

    def close(self) -> None:
        with self._lock:
            if self._disk is not None:
                self._disk.close()
                self._disk = None


#: diskcache's ``Cache`` columns, as its ``set`` fills them for a value stored in the index.
_COLUMNS = "key, raw, store_time, expire_time, access_time, access_count, tag, size, mode, filename, value"
#: Rows per INSERT statement (11 values each: within SQLite's oldest limit of 999).
_ROWS_PER_INSERT = 64
#: The row counts an INSERT is made of (largest first; a batch of 100 is 64 + 16 + 16 + 4).
_INSERT_SIZES = (_ROWS_PER_INSERT, 16, 4, 1)
_upserts: dict[int, str] = {}


def _upsert_sql(count: int) -> str:
    sql = _upserts.get(count)
    if sql is None:
        values = ", ".join(["(?, 1, ?, NULL, ?, 0, ?, 0, 1, NULL, ?)"] * count)
        sql = _upserts[count] = (
            f"INSERT INTO Cache({_COLUMNS}) VALUES {values} ON CONFLICT(key, raw) DO UPDATE SET"
            " store_time = excluded.store_time, expire_time = NULL,"
            " access_time = excluded.access_time, access_count = 0, tag = excluded.tag, size = 0,"
            " mode = 1, filename = NULL, value = excluded.value"
        )
    return sql


def _insert(disk: Any, group: list[tuple[str, CacheEntry, bytes]]) -> list[str]:
    """Store ``group`` in diskcache's index, inside the caller's transaction: what its
    ``set`` does for a key that is a ``str`` and a value that is ``bytes``, with no expiry
    (it would delete the entry once its TTL is over, and replay mode serves a recording
    whatever its age: freshness is checked on every read, ``CacheEntry.fresh``) and when
    the entry expires kept in the ``tag`` column, for ``httptrack cache prune`` and
    ``stats`` (:data:`_EXPIRES_AT`). Values under diskcache's file size go in as one
    statement per :data:`_ROWS_PER_INSERT` (``set`` runs two statements per entry, each
    a GIL release); larger ones go through ``set``, which writes their files. Returns the
    files of values replaced, for the caller to remove once committed (as ``set`` does)."""
    sql: Any = getattr(disk, "_sql", None)
    small = disk.disk.min_file_size
    inline = []
    for key, entry, blob in group:
        if sql is None or len(blob) >= small:
            disk.set(key, blob, expire=None, tag=entry.created + entry.ttl, retry=False)
        else:
            inline.append((key, entry, blob))
    if not inline:
        return []
    keys = [key for key, _, _ in inline]
    marks = ", ".join("?" * len(keys))
    old_files = [
        name
        for (name,) in sql(
            f"SELECT filename FROM Cache WHERE raw = 1 AND filename IS NOT NULL AND key IN ({marks})", keys
        ).fetchall()
    ]
    now = time.time()
    start = 0
    while start < len(inline):
        # A few statement sizes only (each connection keeps its prepared statements: one
        # for every size from 1 to 64 rows held ~2.4 MiB of SQLite's memory).
        count = next(size for size in _INSERT_SIZES if size <= len(inline) - start)
        part = inline[start : start + count]
        start += count
        values: list[Any] = []
        for key, entry, blob in part:
            values += (key, now, now, entry.created + entry.ttl, blob)
        sql(_upsert_sql(count), values)
    return old_files


def _diskcache() -> Any:
    # Imported on first use: it is not needed until a cached call, and it imports Django
    # when Django is installed (a tenth of a second).
    import diskcache  # type: ignore[import-untyped]

    return diskcache


# -- private files ------------------------------------------------------------------------
#
# Entries are prompts and answers: the folder is its owner's only (0700, its files 0600),
# whatever the umask, and also when it already existed (made by hand, or by a version that
# left diskcache's 0644 files in a 0755 folder).


def make_private(directory: Path) -> None:
    """``directory`` 0700 and its files 0600: the folder itself, the files at its top
    (diskcache's ``cache.db`` is created here first, 0600, so that SQLite makes its
    ``-wal`` and ``-shm`` the same), and every folder below that another user could enter,
    with all it holds. Best effort: a folder that is not ours stays as it is."""
    with contextlib.suppress(OSError):
        fd = os.open(directory / _DB_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
    _tighten(directory, 0o700)
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                if _tighten(entry.path, 0o700):
                    _make_tree_private(entry.path)
            elif entry.is_file(follow_symlinks=False):
                _tighten(entry.path, 0o600)
        except OSError:
            continue


def _make_tree_private(folder: str) -> None:
    for root, folders, files in os.walk(folder):
        for name in folders:
            _tighten(os.path.join(root, name), 0o700)
        for name in files:
            _tighten(os.path.join(root, name), 0o600)


def _tighten(path: str | Path, mode: int) -> bool:
    """``chmod path mode`` if another user may use it now; whether it had to."""
    try:
        if os.lstat(path).st_mode & 0o077:
            os.chmod(path, mode)
            return True
    except OSError:
        pass
    return False


_private_disk_class: Any = None


def _private_disk() -> Any:
    """diskcache's ``Disk``, writing each large value's file 0600 in folders 0700 (its own
    ``_write`` leaves both to the umask)."""
    global _private_disk_class
    if _private_disk_class is None:
        base = _diskcache().Disk

        class PrivateDisk(base):  # type: ignore[misc, valid-type]
            def _write(self, full_path: str, iterator: Any, mode: str, encoding: str | None = None) -> int:
                folder = os.path.dirname(full_path)
                for attempt in range(10):  # another process may remove a folder meanwhile (as diskcache)
                    _make_folders(self._directory, folder)
                    try:
                        fd = os.open(full_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    except FileNotFoundError:
                        if attempt == 9:
                            raise
                        continue
                    with open(fd, mode.replace("x", "w"), encoding=encoding) as writer:
                        size = 0
                        for chunk in iterator:
                            size += len(chunk)
                            writer.write(chunk)
                        return size
                raise AssertionError("unreachable")  # pragma: no cover

        _private_disk_class = PrivateDisk
    return _private_disk_class


def _make_folders(top: str, folder: str) -> None:
    """``folder`` and the folders between ``top`` and it, each created 0700."""
    if os.path.isdir(folder):
        return
    parent = os.path.dirname(folder)
    if parent != folder and os.path.abspath(parent) != os.path.abspath(top):
        _make_folders(top, parent)
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        return
    except OSError:
        return  # the open that follows says what is wrong
    os.chmod(folder, 0o700)  # whatever the umask


def _load_salt(directory: Path) -> bytes:
    from ._key import load_salt

    return load_salt(directory)


def _generation_token(directory: Path) -> Any:
    try:
        return _token(os.stat(directory / GENERATION_FILE))
    except OSError:
        return None


def _token(st: os.stat_result) -> Any:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _write_generation(directory: Path) -> Any:
    """A new generation file (written aside and renamed into place: a new inode each
    time); its token, as :func:`_generation_token` will read it."""
    path = directory / GENERATION_FILE
    temp = directory / f".{GENERATION_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(secrets.token_bytes(16))
    token = _token(os.stat(temp))
    os.replace(temp, path)
    return token


def bump_generation(directory: Path) -> None:
    """Tell every process using ``directory`` to forget the entries it holds in memory."""
    _write_generation(directory)
    store = _stores.get(_key(directory))
    if store is not None:
        store.memory.clear()


_stores: dict[str, EntryStore] = {}
_stores_lock = threading.Lock()


def _key(directory: Path) -> str:
    return os.path.abspath(os.path.expanduser(directory))


def shared_store(directory: Path, size_limit: int | None = None) -> EntryStore:
    """The process's one :class:`EntryStore` for ``directory``. ``size_limit`` (the new
    transport's, ``None`` when it named none) replaces the folder's limit when it differs:
    the most recently made transport that names one wins, others leave it as it is."""
    key = _key(directory)
    store = _stores.get(key)
    if store is None:
        with _stores_lock:
            store = _stores.get(key)
            if store is None:
                store = _stores[key] = EntryStore(Path(key), size_limit)
    store.reset_size_limit(size_limit)
    return store


def _forget_after_fork() -> None:
    # Locks may have been held by another thread at fork time; diskcache reopens its own
    # connections after a fork (it checks the pid), the stores only need fresh locks.
    global _stores_lock
    _stores_lock = threading.Lock()
    for store in _stores.values():
        store._lock = threading.Lock()
        store.memory._lock = threading.Lock()
        # A child holds none of its parent's leases: it opens its own lease files.
        store._lease_lock = threading.Lock()
        store._held.clear()
        store._lease_files = [None] * LEASE_FILES


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


# -- administration (the CLI) ---------------------------------------------------------------

_DB_FILE = "cache.db"  # diskcache's index
#: When an entry expires, in diskcache's index (its documented `Cache` table): httptrack
#: stores the time in `tag` and no diskcache expiry (see ``EntryStore._write_group``);
#: entries written by earlier versions have `expire_time` instead.
_EXPIRES_AT = "COALESCE(expire_time, tag)"


def _open_admin(directory: Path) -> Any:
    """diskcache's ``Cache`` on an existing folder (its stored settings, such as the size
    limit, are kept), or ``None`` when there is no cache there yet."""
    if not (directory / _DB_FILE).exists():
        return None
    make_private(directory)
    return _diskcache().Cache(str(directory), timeout=5.0, disk=_private_disk())


def cache_stats(directory: Path, *, now: float | None = None) -> dict[str, Any]:
    """What is in the cache folder: entries (and how many have expired), bytes on disk,
    the size limit, and when the oldest and newest entries were stored."""
    stats: dict[str, Any] = {
        "directory": str(directory),
        "exists": False,
        "entries": 0,
        "expired": 0,
        "size_bytes": 0,
        "size_limit": None,
        "oldest": None,
        "newest": None,
    }
    disk = _open_admin(directory)
    if disk is None:
        return stats
    try:
        stats.update(exists=True, size_bytes=disk.volume(), size_limit=disk.size_limit)
        # Counts straight from diskcache's index (its documented `Cache` table): no entry read.
        with _read_index(directory) as conn:
            count, expired, oldest, newest = conn.execute(
                f"SELECT COUNT(*), COALESCE(SUM({_EXPIRES_AT} <= ?), 0),"
                " MIN(store_time), MAX(store_time) FROM Cache",
                (time.time() if now is None else now,),
            ).fetchone()
        stats.update(entries=count, expired=expired, oldest=oldest, newest=newest)
    finally:
        disk.close()
    return stats


def clear_cache(directory: Path) -> int:
    """Remove every entry; every process using the folder forgets its in-memory copies
    (within a second). Returns how many entries were removed."""
    disk = _open_admin(directory)
    if disk is None:
        return 0
    try:
        removed = int(disk.clear(retry=True))
    finally:
        disk.close()
    bump_generation(directory)
    return removed


def prune_cache(
    directory: Path, *, older_than: float | None = None, now: float | None = None
) -> dict[str, int]:
    """Remove entries past their TTL, and with ``older_than`` (seconds) also every entry
    stored longer ago than that. Returns ``{"expired": n, "old": m}``."""
    disk = _open_admin(directory)
    if disk is None:
        return {"expired": 0, "old": 0}
    now = time.time() if now is None else now
    old = 0
    try:
        expired = int(disk.expire(now=now, retry=True))  # entries of earlier versions
        for key in _keys_where(directory, "tag <= ? AND expire_time IS NULL", now):
            expired += bool(disk.delete(key, retry=True))
        if older_than is not None:
            for key in _keys_where(directory, "store_time < ?", now - older_than):
                old += bool(disk.delete(key, retry=True))
    finally:
        disk.close()
    if expired or old:
        bump_generation(directory)
    return {"expired": expired, "old": old}


def _keys_where(directory: Path, condition: str, value: float) -> list[Any]:
    with _read_index(directory) as conn:
        return [key for (key,) in conn.execute(f"SELECT key FROM Cache WHERE {condition}", (value,))]


def _read_index(directory: Path, timeout: float = 5.0) -> contextlib.closing[sqlite3.Connection]:
    """diskcache's index (its documented ``Cache`` table), opened read-only."""
    return contextlib.closing(
        sqlite3.connect(f"file:{directory / _DB_FILE}?mode=ro", uri=True, timeout=timeout)
    )


def _busy(exc: BaseException) -> bool:
    """Whether ``exc`` says the index was locked by another process (diskcache's
    ``Timeout``, SQLite's "database is locked"): an ordinary moment under load, not damage."""
    if type(exc).__name__ == "Timeout":
        return True
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def _report_busy_or(exc: BaseException, kind: FaultKind, message: str) -> None:
    """A busy index is counted as ``cache_busy`` (no traceback: it is retried later); any
    other failure as ``kind``, with its traceback."""
    if _busy(exc):
        report_fault("cache_busy", f"{message}: the index was busy (another process); tried again later")
    else:
        report_fault(kind, message, exc)
