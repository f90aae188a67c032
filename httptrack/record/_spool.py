"""The spool: a call survives its process, from the moment the app has its answer.

The writer thread builds and writes rows a little after each call ends; a process that dies
meanwhile (``kill -9``, ``os._exit``, an unhandled ``SIGTERM``, a crash) would lose them.
So on the app's thread, when a call ends and *before* the app gets the end of its response
(the tee finishes the exchange before its last read returns), the raw exchange is appended
to this process's spool: a ``marshal``-ed tuple copied into a memory-mapped file, no system
call (one would release the GIL, and a busy writer thread would take it: tens of
microseconds of the app's time; see benchmarks/README.md). A ``MAP_SHARED`` map writes the
kernel's page cache, which outlives the process exactly as a ``write()`` does; nothing is
``fsync``-ed (a power cut can still lose the last seconds, and that is the promise).

Layout: a folder beside the database, ``<db>-spool/`` (0700), holding one file per process
and segment, ``<pid>-<random>-<n>.spool`` (0600). A segment is ``SEGMENT_BYTES`` allocated
on disk when it is made (``posix_fallocate``: writing into the map can never meet a full
disk, which would kill the app with ``SIGBUS``) and mapped. It begins with ``MAGIC``; then
records, 8-byte aligned, each a header (its length, and the length xor ``CHECK``) and its
bytes; a zero header ends them. An append writes the bytes, then a zero header after them,
then its own header: whenever the process dies, the file reads as the records appended
before, and the one being appended is left out (its header zero, or torn and failing the
check). A full segment is succeeded by a spare the writer made ready (else a new one); a
record bigger than a segment gets a segment of its own. On file systems that copy on write
(btrfs, ZFS, APFS: a write into an allocated block may need a new one) and off Linux, the
files are written with ``os.writev`` instead, in the format of earlier versions (each
record framed by its length alone, no ``MAGIC``); the reader takes both. The owning process holds
an exclusive ``flock`` on each of its files for as long as it lives: the kernel drops it
when the process ends however it ends, so "unlocked" means "its owner is gone" even after
the pid is reused. Files are created under a temporary name, locked, then renamed, so
nobody ever sees an owned file unlocked.

- The writer, once a record's row is committed (or counted as dropped), releases it; a
  segment whose records are all released is emptied (the current one: its first header
  zeroed, so its old records are never read again) or kept as the spare or deleted (an
  older one).
- Reading them back is ``_recover``'s: :func:`~._recover.recover` ingests the files of
  dead processes (the writer when it first opens a log, and now and then; ``open_log`` and
  the CLI when they open one), idempotently by call id; the writer process reads live
  feeds.
- Credentials in headers and the URL never reach the disk: their values are dropped from
  the spooled headers, query and error text (bodies are spooled as they are, in a 0600 file,
  until written). A recovered row is therefore scrubbed of header credentials by name,
  not by value, and one whose app had a ``redact`` hook keeps no bodies: the hook is not
  there to apply. A provider the app registered in code (``register_provider``) and the
  recovering process does not know is read as an OpenAI-compatible one.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import marshal
import mmap
import operator
import os
import secrets
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .._exchange import Exchange
from .._faults import report_fault
from .._redact import REDACTED, Credentials, is_secret_header, redact_query, scrub_text
from .._settings import Settings
from ..log._url import DatabaseURL, LogTarget

if TYPE_CHECKING:
    pass

__all__ = [
    "FEED_MAGIC",
    "NEEDS_THREAD",
    "ROTATE_BYTES",
    "SEGMENT_BYTES",
    "Feed",
    "Spool",
    "publish_written",
    "spool_folder",
]

#: Format of a record (the first item of its tuple).
VERSION = 1
#: A spool file's size: preallocated and mapped, so an append is a memory copy (no system
#: call: one would hand the GIL to the busy writer thread, tens of microseconds of the app's
#: time). A full segment is succeeded by another (the spare the writer made ready).
SEGMENT_BYTES = 4 * 1024 * 1024
#: A file written with ``os.writev`` (see ``_mappable``) that grows past this while rows
#: wait for the database is closed and another begun, so it can be deleted once written.
ROTATE_BYTES = 8 * 1024 * 1024
#: A mapped spool file begins with this (a file without it is in the older format: records
#: framed by their length alone, no padding). Then come the records, 8-byte aligned, each a
#: header (its length, and the length xor CHECK) and its marshal bytes, and a zero header.
MAGIC = b"HTSPOOL\x02"
_START = len(MAGIC)
_HEADER = struct.Struct("<II")
_HEADER_SIZE = _HEADER.size
_NO_RECORD = bytes(_HEADER_SIZE)
#: Every byte non-zero: a header cut short by a death while it is written (any of its bytes
#: still zero) fails the check unless the length it holds is the whole one.
CHECK = 0xA5A5A5A5
MAX_RECORD = 0xFFFFFFFF
#: After a spool file could not be made (a full disk), appends try again this often (s).
RETRY_SECONDS = 1.0
#: The writer keeps this many bytes ahead of the current segment's end (and the spare's
#: first) faulted in, writable (``MADV_POPULATE_WRITE``, Linux 5.14): the page faults of a
#: fresh or written-back page (page cache, block map, the file's times: 5-50 µs each) are
#: then the writer's, not an append's on the app's thread.
POPULATE_BYTES = 512 * 1024
_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)
_LENGTH = struct.Struct("<I")
_REDACTED = REDACTED.encode()
_name = operator.itemgetter(0)
#: A feed (``Feed``, ``HTTPTRACK_WRITER=process``): a mapped segment that a writer process
#: (``_daemon``) reads while its owner lives. After its magic, two 8-byte words: the
#: segment's generation (the app's: bumped each time the segment is emptied and reused),
#: and how far the writer process has written its records into the log,
#: ``generation << 32 | offset`` (the writer process's, stored after each commit; an aligned
#: 8-byte store). Then the records, framed as in a spool.
FEED_MAGIC = b"HTSPOOL\x03"
_GENERATION = _START
_CONSUMED = _START + 8
_FEED_START = _START + 16
_WORD = struct.Struct("<Q")
_OFFSET_MASK = 0xFFFFFFFF
#: A feed segment holding this many bytes, all written by the writer process, is emptied
#: and reused by the next append (its pages stay mapped and warm: no system call, no page
#: fault); a full one not yet written is succeeded by another (system calls: rare).
RECYCLE_BYTES = 256 * 1024
#: ``Feed.append``: the call must be written by this process's writer thread.
NEEDS_THREAD = -2


def spool_folder(db: str | os.PathLike[str] | DatabaseURL) -> Path:
    """Where the spools of the log at ``db`` live (a Postgres log's: a local folder)."""
    if isinstance(db, DatabaseURL):
        return db.spool_folder()
    return Path(f"{os.fspath(db)}-spool")


#: Header name → its value must not reach the disk (asked once per name).
_secret_names: dict[bytes, bool] = {}


def _headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers with credential values replaced (the list itself when there are none;
    else a copy, the pairs reused). In C but for the secret ones (a request has one or two)."""
    try:
        secret = list(map(_secret_names.__getitem__, map(_name, raw)))
    except KeyError:  # a name not seen before: decide once
        if len(_secret_names) > 4096:  # never in practice: a handful of names recur
            _secret_names.clear()
        for name, _ in raw:
            if name not in _secret_names:
                _secret_names[name] = is_secret_header(name.decode("latin-1"))
        secret = list(map(_secret_names.__getitem__, map(_name, raw)))
    if True not in secret:
        return raw
    safe = list(raw)
    for index in itertools.compress(itertools.count(), secret):
        safe[index] = (safe[index][0], _REDACTED)
    return safe


#: Query string → the same without credential values (queries repeat call after call).
_queries: dict[str, str] = {}


def _query(query: str) -> str:
    if "=" not in query:
        return query
    safe = _queries.get(query)
    if safe is None:
        safe = redact_query(query)
        if len(_queries) > 1024:
            _queries.clear()
        _queries[query] = safe
    return safe


#: Settings → what a recovered call needs of them (one Settings object serves many calls).
_settings_of: dict[int, tuple[Settings, tuple[Any, ...]]] = {}


def _settings_record(settings: Settings) -> tuple[Any, ...]:
    cached = _settings_of.get(id(settings))
    if cached is not None and cached[0] is settings:
        return cached[1]
    record = (
        settings.store_bodies,
        settings.max_body_bytes,
        settings.user,
        settings.service,
        {model: dict(price) for model, price in settings.prices.items()} or None,
        str(settings.prices_file) if settings.prices_file else None,
        settings.redact is not None,
    )
    if len(_settings_of) > 64:
        _settings_of.clear()
    _settings_of[id(settings)] = (settings, record)
    return record


def _record(ex: Exchange) -> bytes:
    """One exchange as spool bytes (its length first). Runs on the app's thread."""
    t0 = ex.t0
    attribution = ex.attribution
    tail = ex.tail
    data = marshal.dumps(
        (
            VERSION,
            ex.call_id,
            ex.started_at,
            ex.provider.name,
            ex.operation,
            ex.method,
            ex.scheme,
            ex.host,
            ex.port,
            ex.path,
            _query(ex.query),
            _headers(ex.request_headers),
            ex.request_body,
            (
                attribution.user,
                attribution.service,
                attribution.session,
                dict(attribution.properties) if attribution.properties else None,
            ),
            ex.status,
            _headers(ex.response_headers),
            # One piece: the decoders need the bytes, not how they arrived (a recovered
            # call is never cached), and one copy costs less than marshalling each chunk.
            _joined(ex.chunks),
            _joined(tail) if tail is not None else None,
            ex.received,
            (
                None if ex.t_headers is None else ex.t_headers - t0,
                None if ex.t_first is None else ex.t_first - t0,
                None if ex.t_end is None else ex.t_end - t0,
            ),
            ex.outcome,
            ex.error_type,
            scrub_text(ex.request_headers, ex.error_message) if ex.error_message else None,
            ex.cached,
            ex.cache_key,
            ex.replayed_row,
            ex.rewritten,
            _settings_record(ex.settings),
        ),
        # Version 2: no back-references. Version 4 writes short ASCII strings as they are,
        # 6% smaller, but looks every object up in a table of those written: 2.7 µs
        # against 1.6 for a chat call's record. (Any version reads back with marshal.loads.)
        2,
    )
    return data


def _joined(chunks: Iterable[bytes]) -> list[bytes]:
    data = b"".join(chunks)
    return [data] if data else []


class _Segment:
    """One spool file of this process: its descriptor, path and (when mapped) its map."""

    __slots__ = ("end", "fd", "generation", "map", "number", "outstanding", "path", "size")

    def __init__(self, fd: int, path: Path, mapped: mmap.mmap | None, size: int) -> None:
        self.fd = fd
        self.path = path
        #: The file's map (``None``: a file written with ``os.writev``, see ``Spool``).
        self.map = mapped
        #: Bytes the file holds (a mapped one: its preallocated size).
        self.size = size
        #: Where the next record goes (a mapped file: the zero header that ends it).
        self.end = _START if mapped is not None else 0
        self.number = 0
        #: Records appended and not yet released.
        self.outstanding = 0
        #: A feed's (``Feed``): how many times it was emptied and reused.
        self.generation = 0

    def close(self, *, delete: bool) -> None:
        if delete:
            self.path.unlink(missing_ok=True)
        if self.map is not None:
            with contextlib.suppress(BufferError, ValueError):
                self.map.close()
        os.close(self.fd)


class Spool:
    """This process's spool for one log. ``append`` runs on the app's threads, the rest in
    the writer thread (or at exit)."""

    #: What a mapped segment begins with, and where its records start.
    _magic = MAGIC
    _first = _START

    def __init__(self, db: LogTarget) -> None:
        self.db = db
        #: False once closed, discarded or forgotten: appends are refused (-1).
        self.live = True
        self.folder = spool_folder(db)
        self._lock = threading.Lock()
        self._stem = f"{os.getpid()}-{secrets.token_hex(4)}"
        #: segment number → segment, the current one among them (the highest).
        self._segments: dict[int, _Segment] = {}
        self._current: _Segment | None = None
        #: A mapped segment made ready (by the writer) for the current one to rotate into.
        self._spare: _Segment | None = None
        self._numbers = 0
        #: Numbers for file names: ``next()`` is atomic (the app's threads make files under
        #: the lock, the writer its spares outside it).
        self._files = itertools.count(1)
        #: After a segment could not be made (a full disk): appends wait until then to try again.
        self._retry_at = 0.0
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.mapped = _mappable(self.folder)
        #: The writer faults in what appends will write next (see ``POPULATE_BYTES``).
        self._populate = self.mapped and hasattr(mmap.mmap, "madvise")
        self._current = self._register(self._new_segment(SEGMENT_BYTES))

    def owns(self, name: str) -> bool:
        return name.startswith(self._stem + "-")

    def _new_segment(self, size: int) -> _Segment:
        """A new, locked, empty segment file: preallocated and mapped (``size`` bytes), or
        one for ``os.writev`` (on a file system where a map is not safe: see ``_mappable``).
        Made under a temporary name, locked, then renamed: nobody ever sees it unlocked."""
        path = self.folder / f"{self._stem}-{next(self._files)}.spool"
        temporary = path.with_suffix(".tmp")
        flags = os.O_RDWR if self.mapped else os.O_WRONLY | os.O_APPEND
        fd = os.open(temporary, flags | os.O_CREAT | os.O_CLOEXEC, 0o600)
        mapped = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if self.mapped:
                # Every block allocated now: writing into the map can then never meet a full
                # disk (which would kill the app with SIGBUS).
                _allocate(fd, size)
                mapped = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                mapped[: len(MAGIC)] = self._magic  # the rest is zero: no record yet
            os.rename(temporary, path)
        except BaseException:
            if mapped is not None:
                mapped.close()
            os.close(fd)
            temporary.unlink(missing_ok=True)
            raise
        segment = _Segment(fd, path, mapped, size if mapped is not None else 0)
        if mapped is not None:
            segment.end = self._first
        return segment

    def _register(self, segment: _Segment) -> _Segment:
        self._numbers += 1
        segment.number = self._numbers
        self._segments[segment.number] = segment
        return segment

    def append(self, exchange: Exchange) -> int:
        """Write ``exchange`` to the spool; its segment, or -1 if it could not be written
        (a full disk: the call is still recorded, just not crash-safe). Releases no GIL
        (a mapped segment: a memory copy), except to begin a segment (rarely)."""
        try:
            data = _record(exchange)
        except (ValueError, TypeError) as exc:  # a value marshal cannot write (never in practice)
            report_fault("spool", "a call could not be spooled; it is recorded all the same", exc)
            return -1
        length = len(data)
        with self._lock:
            segment = self._current
            try:
                if segment is None:
                    segment = self._restart()
                    if segment is None:
                        return -1
                if segment.map is None:
                    return self._write(segment, data)
                if length > MAX_RECORD:
                    raise ValueError(f"a record of {length} bytes")
                segment = _place(segment, data, self._rotate)
            except (OSError, ValueError) as exc:
                report_fault(
                    "spool",
                    f"a call could not be spooled in {self.folder} ({exc}); "
                    "it is recorded all the same, but would not survive a crash",
                    exc,
                )
                return -1
            segment.outstanding += 1
            return segment.number

    def _rotate(self, needed: int) -> _Segment:
        """The current segment is full: the spare becomes the current one (made ready by the
        writer), else a new one (lock held). A record bigger than a segment gets a segment
        of its own, which never becomes the current one (deleted once released)."""
        if needed + _START > SEGMENT_BYTES:
            size = (needed + _START + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
            return self._register(self._new_segment(size))
        spare, self._spare = self._spare, None
        if spare is None:
            spare = self._new_segment(SEGMENT_BYTES)
        self._current = self._register(spare)
        return spare

    def _restart(self) -> _Segment | None:
        """After a segment could not be made: try again, at most once a second (lock held)."""
        now = time.monotonic()
        if now < self._retry_at:
            return None
        self._retry_at = now + RETRY_SECONDS
        self._current = self._register(self._new_segment(SEGMENT_BYTES))
        return self._current

    def _write(self, segment: _Segment, data: bytes) -> int:
        """Append to a segment that is not mapped: one ``os.writev``, the length first."""
        size = len(data) + 4
        try:
            written = os.writev(segment.fd, (_LENGTH.pack(len(data)), data))
        except OSError as exc:
            written = -1
            error: OSError | None = exc
        else:
            error = None
        if written != size:
            # A partial record would make every later one unreadable: cut it off.
            try:
                os.ftruncate(segment.fd, segment.end)
            except OSError:
                self._current = None  # cannot repair: begin another segment
                self._retry_at = time.monotonic() + RETRY_SECONDS
            report_fault(
                "spool",
                f"a call could not be spooled in {self.folder} ({error or 'short write'}); "
                "it is recorded all the same, but would not survive a crash",
                error,
            )
            return -1
        segment.end += size
        segment.outstanding += 1
        return segment.number

    def release(self, segment: int, count: int = 1) -> None:
        """``count`` records of ``segment`` are in the log (or counted as dropped)."""
        if segment < 0:
            return
        with self._lock:
            found = self._segments.get(segment)
            if found is not None:
                found.outstanding = max(0, found.outstanding - count)

    def tidy(self) -> None:
        """Let go of older segments whose records are all released (one is kept, emptied,
        as the spare), empty the current one if all of its are, and make a spare ready once
        the current one is half full. A segment not mapped is rotated when it grows large
        while rows wait."""
        gone: list[_Segment] = []
        with self._lock:
            current = self._current
            for number, segment in list(self._segments.items()):
                if segment.outstanding or segment is current:
                    continue
                del self._segments[number]
                if self._spare is None and segment.map is not None and segment.size == SEGMENT_BYTES:
                    _empty(segment)
                    self._spare = segment
                else:
                    gone.append(segment)
            make_spare = False
            if current is not None and not current.outstanding and current.end > _start(current):
                try:
                    if current.map is not None:
                        _empty(current)
                    else:
                        os.ftruncate(current.fd, 0)
                        current.end = 0
                except OSError as exc:
                    report_fault("spool", f"could not empty the spool in {self.folder}", exc)
            elif current is not None and current.map is None and current.end > ROTATE_BYTES:
                try:
                    self._current = self._register(self._new_segment(0))
                except OSError as exc:
                    report_fault("spool", f"could not begin a spool file in {self.folder}", exc)
            elif current is not None and current.map is not None:
                make_spare = self._spare is None and current.end > current.size // 2
        for segment in gone:
            with contextlib.suppress(OSError):
                segment.close(delete=True)
        if self._populate:
            self._fault_in(current, self._spare)
        if make_spare:  # off the app's thread and outside the lock: the files' system calls
            try:
                spare: _Segment | None = self._new_segment(SEGMENT_BYTES)
            except OSError as exc:
                report_fault("spool", f"could not begin a spool file in {self.folder}", exc)
                return
            with self._lock:
                if self._spare is None and self._current is not None:
                    self._spare, spare = spare, None
            if spare is not None:
                spare.close(delete=True)

    def _fault_in(self, *segments: _Segment | None) -> None:
        """Fault in the next ``POPULATE_BYTES`` of each mapped segment (no data changes:
        appends may go on meanwhile). Holds the GIL (about 2 µs a page not yet in), never
        the lock."""
        for segment in segments:
            if segment is None or segment.map is None:
                continue
            start = segment.end & ~(mmap.PAGESIZE - 1)
            length = min(POPULATE_BYTES, segment.size - start)
            if length <= 0:
                continue
            try:
                segment.map.madvise(_POPULATE_WRITE, start, length)
            except (OSError, ValueError):  # an older kernel (or a segment closed meanwhile)
                self._populate = False
                return

    @property
    def pending(self) -> int:
        """Records appended and not yet released."""
        with self._lock:
            return sum(segment.outstanding for segment in self._segments.values())

    def _all(self) -> list[_Segment]:
        segments = list(self._segments.values())
        if self._spare is not None:
            segments.append(self._spare)
        self._segments.clear()
        self._current = self._spare = None
        self._retry_at = float("inf")  # closed: no more appends
        self.live = False
        return segments

    def close(self) -> bool:
        """At exit: delete the files if every record is released (else leave them for the
        next process: the lock goes with this process). ``True`` if deleted."""
        with self._lock:
            segments = self._all()
        done = not any(segment.outstanding for segment in segments)
        for segment in segments:
            with contextlib.suppress(OSError):
                segment.close(delete=not segment.outstanding)
        return done

    def discard(self) -> None:
        """Delete the files, whatever they hold (tests)."""
        with self._lock:
            segments = self._all()
        for segment in segments:
            with contextlib.suppress(OSError):
                segment.close(delete=True)

    def forget(self) -> None:
        """In a forked child: the files are the parent's. Unmap them and close the inherited
        descriptors (the parent's locks stay: a flock lives until every copy is closed)."""
        for segment in self._all():
            with contextlib.suppress(OSError):
                segment.close(delete=False)


class Feed(Spool):
    """This process's spool for one log in process mode (``HTTPTRACK_WRITER=process``): no
    writer thread releases its records; the writer process reads them while this process
    lives and publishes in each segment how far they are in the log (see ``FEED_MAGIC``).
    ``append`` empties and reuses a segment all written (``RECYCLE_BYTES``), else rotates
    to another. Mapped only (:meth:`open` gives ``None`` where spools are written with
    ``os.writev``: calls then take the writer thread)."""

    _magic = FEED_MAGIC
    _first = _FEED_START

    @classmethod
    def open(cls, db: LogTarget) -> Feed | None:
        folder = spool_folder(db)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _mappable(folder):
            return None
        return cls(db)

    def append(self, exchange: Exchange) -> int:
        """Write ``exchange`` for the writer process: its segment, ``-1`` if it could not
        be, ``NEEDS_THREAD`` if only this process can make its row (a credential of its
        request appears in what is spooled: the spool has no credential values, so the
        writer process could not take it out of the row). No system call but to rotate."""
        try:
            data = _record(exchange)
        except (ValueError, TypeError):  # a value marshal cannot write (never in practice)
            return -1
        length = len(data)
        if length > _OFFSET_MASK // 2 or _echoes_credential(exchange, data):
            return NEEDS_THREAD
        with self._lock:
            segment = self._current
            if segment is None or segment.map is None:
                return -1
            try:
                if segment.end >= RECYCLE_BYTES and _written(segment):
                    _reuse(segment)
                segment = _place(segment, data, self._next)
            except (OSError, ValueError) as exc:
                report_fault("spool", f"a call could not be spooled in {self.folder} ({exc})", exc)
                return -1
            return segment.number

    def _next(self, needed: int) -> _Segment:
        """The current segment is full and not all written (lock held): reuse an older one
        that is, else begin another; delete the other written ones. A record bigger than a
        segment gets one of its own (never the current one)."""
        current = self._current
        if needed + _FEED_START > SEGMENT_BYTES:
            size = (needed + _FEED_START + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
            return self._register(self._new_segment(size))
        reused = None
        for segment in list(self._segments.values()):
            if segment is current or not _written(segment):
                continue
            del self._segments[segment.number]
            if reused is None and segment.size == SEGMENT_BYTES:
                _reuse(segment)
                reused = segment
            else:
                with contextlib.suppress(OSError):
                    segment.close(delete=True)
        if reused is not None:
            self._current = self._register(reused)
        else:
            self._current = self._register(self._new_segment(SEGMENT_BYTES))
        return self._current

    def written(self) -> bool:
        """Whether the writer process has written every call appended so far."""
        with self._lock:
            return all(map(_written, self._segments.values()))

    def tidy(self) -> None:
        """(The writer thread's: a feed is the writer process's.)"""

    def close(self) -> bool:
        """At exit: delete the segments all written, leave the others (the writer process,
        or the next process to open the log, writes them: the lock goes with this
        process). ``True`` if all were."""
        with self._lock:
            segments = self._all()
        done = True
        for segment in segments:
            written = _written(segment)
            done = done and written
            with contextlib.suppress(OSError):
                segment.close(delete=written)
        return done


def _written(segment: _Segment) -> bool:
    """Whether the writer process has written every record of a feed segment."""
    if segment.end <= _FEED_START or segment.map is None:
        return True
    with contextlib.suppress(ValueError):  # (closed)
        return bool(_WORD.unpack_from(segment.map, _CONSUMED)[0] == (segment.generation << 32) | segment.end)
    return True


def _reuse(segment: _Segment) -> None:
    """Empty a feed segment all written and begin its next generation."""
    _empty(segment, _FEED_START)
    segment.generation = (segment.generation + 1) & 0x7FFFFFFF
    assert segment.map is not None
    _WORD.pack_into(segment.map, _GENERATION, segment.generation)


def _is_secret(name: bytes) -> bool:
    secret = _secret_names.get(name)
    if secret is None:
        secret = _secret_names[name] = is_secret_header(name.decode("latin-1"))
    return secret


#: (secret header values, query) → the credential values a call's record must not hold.
_tokens: dict[tuple[tuple[bytes, ...], str], tuple[bytes, ...]] = {}


def _echoes_credential(ex: Exchange, data: bytes) -> bool:
    """Whether a credential value of the call's request is in its record (a body, a header
    or an error quoting it), or could be (a response body compressed: not looked into
    here). The writer process could not take it out: it never sees credential values."""
    raw = ex.request_headers
    try:  # (the names are known: ``_record`` has just asked, see ``_headers``) in C
        mask = list(map(_secret_names.__getitem__, map(_name, raw)))
    except KeyError:
        mask = [_is_secret(name) for name, _ in raw]
    pairs = list(itertools.compress(raw, mask)) if True in mask else []
    key = (tuple(map(_value, pairs)), ex.query)
    tokens = _tokens.get(key)
    if tokens is None:
        found = Credentials()
        found.add_headers(pairs)
        found.add_query(ex.query)
        # As the row's redaction looks for them: raw, JSON-escaped and URL-encoded.
        forms = {
            form for value in found.values for form in (value, json.dumps(value)[1:-1], quote(value, safe=""))
        }
        tokens = tuple(form.encode() for form in sorted(forms))
        if len(_tokens) > 1024:
            _tokens.clear()
        _tokens[key] = tokens
    if not tokens:
        return False
    for token in tokens:
        if token in data:
            return True
    headers = ex.response_headers
    if _ENCODING in map(bytes.lower, map(_name, headers)):
        encodings = [value.strip().lower() for name, value in headers if name.lower() == _ENCODING]
        if encodings == [b"identity"]:
            return False
        if len(encodings) != 1 or encodings[0] not in _ZLIB_WBITS or ex.tail is not None:
            return True  # (brotli, zstd, several: not looked into here)
        try:  # a gzip or deflate body: looked into, as far as the row keeps it
            body = zlib.decompressobj(_ZLIB_WBITS[encodings[0]]).decompress(
                b"".join(ex.chunks), max(ex.settings.max_body_bytes, 1)
            )
        except zlib.error:
            return True
        return any(token in body for token in tokens)
    return False


#: Content-Encoding → zlib's wbits for it (gzip or zlib headers: either).
_ZLIB_WBITS = {b"gzip": 47, b"x-gzip": 47, b"deflate": 47}


_value = operator.itemgetter(1)
_ENCODING = b"content-encoding"


def publish_written(view: mmap.mmap, generation: int, end: int) -> bool:
    """Say in a feed segment that its records up to ``end`` are in the log (unless its
    owner emptied and reused it meanwhile: then its records are read again from its
    first, written again, and stored once)."""
    if _WORD.unpack_from(view, _GENERATION)[0] != generation:
        return False
    _WORD.pack_into(view, _CONSUMED, (generation << 32) | end)
    return True


def _place(segment: _Segment, data: bytes, rotate: Callable[[int], _Segment]) -> _Segment:
    """Append ``data`` to the mapped ``segment``, or, if it does not fit, to the segment
    ``rotate(bytes needed)`` gives; the segment it went to (lock held).

    Framing: 8-byte aligned records, each a header (its length, and the length xor CHECK)
    and its bytes; a zero header ends the file. The bytes first, then the zero header after
    them, then this record's header last: a death at any point leaves either the record
    whole or a zero or torn header (the check fails) where it was to be, so it is never
    misread, and records of a file emptied and reused are never reached."""
    length = len(data)
    start = segment.end
    stop = start + _HEADER_SIZE + length
    after = (stop + 7) & ~7
    if after + _HEADER_SIZE > segment.size:
        segment = rotate(after - start + _HEADER_SIZE)
        start = segment.end
        stop = start + _HEADER_SIZE + length
        after = (stop + 7) & ~7
    view = segment.map
    assert view is not None
    view[start + _HEADER_SIZE : stop] = data
    view[after : after + _HEADER_SIZE] = _NO_RECORD
    _HEADER.pack_into(view, start, length, length ^ CHECK)
    segment.end = after
    return segment


def _start(segment: _Segment) -> int:
    return _START if segment.map is not None else 0


def _empty(segment: _Segment, first: int = _START) -> None:
    """A mapped segment whose records are all released starts over, its used bytes zeroed
    from the first header on: its old records are never read again, and what they held
    (bodies with credentials the row's redaction took out) does not stay on disk, as a
    file truncated by ``os.ftruncate`` would not keep it either (lock held)."""
    view = segment.map
    assert view is not None
    for start in range(first, segment.end, len(_ZEROS)):
        stop = min(start + len(_ZEROS), segment.end)
        view[start:stop] = _ZEROS[: stop - start]  # (a memoryview: no copy)
    segment.end = first


_ZEROS = memoryview(bytes(64 * 1024))


def _allocate(fd: int, size: int) -> None:
    """Allocate ``size`` bytes of disk to ``fd`` (zeros)."""
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is not None:
        allocate(fd, 0, size)
        return
    zeros = bytes(min(size, 1 << 20))  # pragma: no cover - not Linux
    for offset in range(0, size, len(zeros)):  # pragma: no cover
        os.pwrite(fd, zeros[: size - offset], offset)


#: File systems on which a preallocated file is written in place: a write into its map never
#: needs a new block (copy-on-write ones, btrfs, ZFS, APFS, would, and a full disk would then
#: kill the app with SIGBUS). Overlay: Docker's upper layer is ext4 or xfs.
_IN_PLACE = frozenset({"ext2", "ext3", "ext4", "xfs", "tmpfs", "overlay"})


def _mappable(folder: Path) -> bool:
    """Whether spool files in ``folder`` are written through a map (Linux, on a file system
    in ``_IN_PLACE``), else with ``os.writev``."""
    if sys.platform != "linux" or not hasattr(os, "posix_fallocate"):
        return False
    try:
        target = os.path.realpath(folder)
        best, kind = "", ""
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as file:
            for line in file:
                fields = line.split(" - ", 1)
                if len(fields) != 2:
                    continue
                mount = fields[0].split()[4].replace("\\040", " ")
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, fields[1].split()[0]
    except (OSError, IndexError):
        return False
    return kind in _IN_PLACE
