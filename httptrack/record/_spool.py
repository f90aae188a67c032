"""The spool: a call survives its process, from the moment the app has its answer.

The writer thread builds and writes rows a little after each call ends; a process that dies
meanwhile (``kill -9``, ``os._exit``, an unhandled ``SIGTERM``, a crash) would lose them.
So on the app's thread, when a call ends and *before* the app gets the end of its response
(the tee finishes the exchange before its last read returns), the raw exchange is appended
to this process's spool file: one ``os.writev`` of a ``marshal``-ed tuple (format 4) (microseconds:
see benchmarks/README.md), no ``fsync`` (the page cache outlives the process, not the machine: a power
cut can still lose the last seconds, and that is the promise).

Layout: a folder beside the database, ``<db>-spool/`` (0700), holding one file per process
and segment, ``<pid>-<random>-<n>.spool`` (0600), each a run of records framed by their
length (a record cut short by a death mid-write is ignored). The owning process holds an
exclusive ``flock`` on each of its files for as long as it lives: the kernel drops it when
the process ends however it ends, so "unlocked" means "its owner is gone" even after the
pid is reused. Files are created under a temporary name, locked, then renamed, so nobody
ever sees an owned file unlocked.

- The writer, once a record's row is committed (or counted as dropped), releases it; a
  segment whose records are all released is emptied (the current one) or deleted (an
  older one: a segment is rotated when it grows past ``ROTATE_BYTES`` while rows wait).
- :func:`recover` ingests the files of dead processes: the writer does it when it first
  opens a log (and now and then), ``open_log`` and the CLI when they open one. Rows are
  written idempotently (by call id), so two processes recovering at once, or a death
  between the commit and the delete, store each call once.
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
import marshal
import operator
import os
import secrets
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .._context import Attribution
from .._errors import LogUnavailable
from .._exchange import TAIL_BYTES, Exchange
from .._faults import get_logger, report_fault
from .._redact import REDACTED, is_secret_header, redact_query, scrub_text
from .._settings import Settings
from ..log._open import open_backend
from ..log._schema import COLUMN_NAMES
from ..log._url import DatabaseURL, LogTarget
from ..providers import provider_by_name
from ._row import build_row

if TYPE_CHECKING:
    from ..log._backend import LogBackend

__all__ = ["ROTATE_BYTES", "Spool", "read_records", "recover", "recover_log", "spool_folder"]

#: Format of a record (the first item of its tuple).
VERSION = 1
#: A segment that grows past this while rows wait for the database is closed and a new
#: one begun, so the old one can be deleted once its rows are written.
ROTATE_BYTES = 8 * 1024 * 1024
_LENGTH = struct.Struct("<I")
_REDACTED = REDACTED.encode()
_row_values = operator.itemgetter(*COLUMN_NAMES)
#: Rows per transaction when ingesting a spool.
RECOVER_BATCH = 500
#: Held by the process recovering the folder's spools; another one waits this long for it.
RECOVER_LOCK = "recovering.lock"
RECOVER_WAIT_SECONDS = 30.0


def spool_folder(db: str | os.PathLike[str] | DatabaseURL) -> Path:
    """Where the spools of the log at ``db`` live (a Postgres log's: a local folder)."""
    if isinstance(db, DatabaseURL):
        return db.spool_folder()
    return Path(f"{os.fspath(db)}-spool")


#: Header name → its value must not reach the disk (asked once per name).
_secret_names: dict[bytes, bool] = {}


def _headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers with credential values replaced (the pairs themselves reused)."""
    secret = _secret_names
    try:
        return [(pair[0], _REDACTED) if secret[pair[0]] else pair for pair in raw]
    except KeyError:  # a name not seen before: decide once
        if len(secret) > 4096:  # never in practice: a handful of names recur
            secret.clear()
        for name, _ in raw:
            if name not in secret:
                secret[name] = is_secret_header(name.decode("latin-1"))
        return [(pair[0], _REDACTED) if secret[pair[0]] else pair for pair in raw]


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
        # Version 4 (not 2): its short ASCII strings (header names, ids, the URL parts)
        # are written as they are instead of encoded to UTF-8: half the cost, 6% smaller.
        # (Any version reads back with marshal.loads.)
        4,
    )
    return data


def _joined(chunks: Iterable[bytes]) -> list[bytes]:
    data = b"".join(chunks)
    return [data] if data else []


class Spool:
    """This process's spool for one log. ``append`` runs on the app's threads, the rest in
    the writer thread (or at exit)."""

    def __init__(self, db: LogTarget) -> None:
        self.folder = spool_folder(db)
        self._lock = threading.Lock()
        self._stem = f"{os.getpid()}-{secrets.token_hex(4)}"
        #: segment → (its fd, its path); the current one is the highest.
        self._files: dict[int, tuple[int, Path]] = {}
        #: segment → records appended and not yet released.
        self._outstanding: dict[int, int] = {}
        self._segment = 0
        self._fd = -1
        self._size = 0
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._begin_segment()

    def owns(self, name: str) -> bool:
        return name.startswith(self._stem + "-")

    def _begin_segment(self) -> None:
        """A new, locked, empty segment file becomes the current one (lock held, or init)."""
        segment = self._segment + 1
        path = self.folder / f"{self._stem}-{segment}.spool"
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(temporary, path)
        except BaseException:
            os.close(fd)
            temporary.unlink(missing_ok=True)
            raise
        self._files[segment] = (fd, path)
        self._outstanding[segment] = 0
        self._segment, self._fd, self._size = segment, fd, 0

    def append(self, exchange: Exchange) -> int:
        """Write ``exchange`` to the spool; its segment, or -1 if it could not be written
        (a full disk: the call is still recorded, just not crash-safe)."""
        try:
            data = _record(exchange)
        except (ValueError, TypeError) as exc:  # a value marshal cannot write (never in practice)
            report_fault("spool", "a call could not be spooled; it is recorded all the same", exc)
            return -1
        with self._lock:
            fd = self._fd
            if fd < 0:
                return -1
            size = len(data) + 4
            try:
                written = os.writev(fd, (_LENGTH.pack(len(data)), data))
            except OSError as exc:
                written = -1
                error: OSError | None = exc
            else:
                error = None
            if written != size:
                # A partial record would make every later one unreadable: cut it off.
                try:
                    os.ftruncate(fd, self._size)
                except OSError:
                    self._fd = -1  # cannot repair: spool no more (this process)
                report_fault(
                    "spool",
                    f"a call could not be spooled in {self.folder} ({error or 'short write'}); "
                    "it is recorded all the same, but would not survive a crash",
                    error,
                )
                return -1
            self._size += size
            segment = self._segment
            self._outstanding[segment] += 1
        return segment

    def release(self, segment: int, count: int = 1) -> None:
        """``count`` records of ``segment`` are in the log (or counted as dropped)."""
        if segment < 0:
            return
        with self._lock:
            left = self._outstanding.get(segment)
            if left is not None:
                self._outstanding[segment] = max(0, left - count)

    def tidy(self) -> None:
        """Delete older segments whose records are all released, empty the current one if
        all of its are, and begin a new one if it has grown large while rows wait."""
        with self._lock:
            for segment in [s for s, left in self._outstanding.items() if not left and s != self._segment]:
                fd, path = self._files.pop(segment)
                del self._outstanding[segment]
                path.unlink(missing_ok=True)
                os.close(fd)
            if self._fd < 0:
                return
            if self._size and not self._outstanding[self._segment]:
                try:
                    os.ftruncate(self._fd, 0)
                    self._size = 0
                except OSError as exc:
                    report_fault("spool", f"could not empty the spool in {self.folder}", exc)
            elif self._size > ROTATE_BYTES:
                try:
                    self._begin_segment()
                except OSError as exc:
                    report_fault("spool", f"could not begin a spool file in {self.folder}", exc)

    @property
    def pending(self) -> int:
        """Records appended and not yet released."""
        with self._lock:
            return sum(self._outstanding.values())

    def close(self) -> bool:
        """At exit: delete the files if every record is released (else leave them for the
        next process: the lock goes with this process). ``True`` if deleted."""
        with self._lock:
            done = not any(self._outstanding.values())
            for fd, path in self._files.values():
                if done:
                    path.unlink(missing_ok=True)
                os.close(fd)
            self._files.clear()
            self._outstanding.clear()
            self._fd = -1
        return done

    def discard(self) -> None:
        """Delete the files, whatever they hold (tests)."""
        with self._lock:
            for fd, path in self._files.values():
                path.unlink(missing_ok=True)
                os.close(fd)
            self._files.clear()
            self._outstanding.clear()
            self._fd = -1

    def forget(self) -> None:
        """In a forked child: the files are the parent's. Close the inherited descriptors
        (the parent's locks stay: a flock lives until every copy is closed)."""
        for fd, _ in self._files.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._files.clear()
        self._outstanding.clear()
        self._fd = -1


# -- reading and recovering -----------------------------------------------------------------


def read_records(data: bytes) -> Iterator[tuple[Any, ...] | None]:
    """The records in a spool file's bytes, in order (``None`` for one that cannot be
    read); a record cut short at the end (its process died writing it) is left out."""
    view = memoryview(data)
    pos, end = 0, len(data)
    while pos + 4 <= end:
        (length,) = _LENGTH.unpack_from(view, pos)
        if pos + 4 + length > end:
            return
        try:
            record = marshal.loads(view[pos + 4 : pos + 4 + length])
        except (ValueError, EOFError, TypeError):
            record = None
        yield record if isinstance(record, tuple) and record and record[0] == VERSION else None
        pos += 4 + length


#: (db, settings record) → Settings, for recovered calls.
_recovered_settings: dict[tuple[str, Any], Settings] = {}


def _settings(db: LogTarget, record: tuple[Any, ...]) -> Settings:
    store_bodies, max_body_bytes, user, service, prices, prices_file, redact = record
    key = (str(db), marshal.dumps(record))
    settings = _recovered_settings.get(key)
    if settings is None:
        options = {
            "db": db,
            # The app's redact hook is not here to apply: keep no bodies rather than raw ones.
            "store_bodies": bool(store_bodies) and not redact,
            "max_body_bytes": max_body_bytes,
            "user": user,
            "service": service,
        }
        try:
            settings = Settings(**options, prices=prices, prices_file=prices_file)
        except Exception as exc:  # the price file is gone (or changed): priced without it
            report_fault("spool", f"recovered calls are priced without their price overrides ({exc})", exc)
            settings = Settings(**options)
        if len(_recovered_settings) > 64:
            _recovered_settings.clear()
        _recovered_settings[key] = settings
    return settings


def restore(record: tuple[Any, ...], db: LogTarget) -> Exchange:
    """The exchange a record was made from, as far as building its row needs."""
    (
        _,
        call_id,
        started_at,
        provider,
        operation,
        method,
        scheme,
        host,
        port,
        path,
        query,
        request_headers,
        request_body,
        (user, service, session, properties),
        status,
        response_headers,
        chunks,
        tail,
        received,
        (t_headers, t_first, t_end),
        outcome,
        error_type,
        error_message,
        cached,
        cache_key,
        replayed_row,
        rewritten,
        settings_record,
    ) = record
    ex = Exchange.__new__(Exchange)
    settings = _settings(db, settings_record)
    ex.settings = settings
    ex.sink = None
    ex.spooled = -1
    ex.finished = True
    ex.call_id, ex.started_at = call_id, started_at
    ex.provider, ex.operation = provider_by_name(provider), operation
    ex.method, ex.scheme, ex.host, ex.port, ex.path, ex.query = method, scheme, host, port, path, query
    ex.request_headers, ex.request_body = request_headers, request_body
    ex.attribution = Attribution(user, service, session, MappingProxyType(properties or {}))
    ex.control = None
    ex.status, ex.response_headers, ex.chunks = status, response_headers, chunks
    ex.tail = deque(tail) if tail is not None else None
    ex.tail_bytes = sum(map(len, tail)) if tail is not None else 0
    ex.received = received
    ex.limit = max(settings.max_body_bytes, TAIL_BYTES)
    ex.t0, ex.t_headers, ex.t_first, ex.t_end = 0.0, t_headers, t_first, t_end
    ex.outcome, ex.error_type, ex.error_message = outcome, error_type, error_message
    ex.cached, ex.cache_key, ex.cache_status, ex.cache_ttl = cached, cache_key, None, None
    ex.replayed_row, ex.rewritten, ex.chunk_filter = replayed_row, rewritten, None
    # Not spooled: the cache's loop-guard note, a streamed body's parts (already joined into
    # request_body when the call was spooled), the limits' reservation (it expires), the
    # app's span (a recovered call is not sent as a live span).
    ex.cache_note, ex.request_parts, ex.request_sent, ex.limit_ticket = None, None, 0, None
    ex.otel_parent = None
    ex.cache_flight = None
    return ex


def recover(db: LogTarget, backend: LogBackend, own: Spool | None = None) -> tuple[int, int]:
    """Write the calls in the spools of processes that are gone into ``backend`` (the log
    at ``db``), then delete those spools. Returns (rows written, rows lost: unreadable,
    or refused by the log). Raises ``LogUnavailable`` if the log cannot be written (the
    spools stay for later)."""
    folder = spool_folder(db)
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return 0, 0
    if not any(name.endswith((".spool", ".tmp")) and not (own and own.owns(name)) for name in names):
        return 0, 0
    # One recoverer at a time: a process that finds a spool locked must be able to tell
    # "its owner is alive" from "another process is writing it into the log right now"
    # (then it waits, so that it reads the log with those calls in it).
    try:
        guard = os.open(folder / RECOVER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return 0, 0
    try:
        deadline = time.monotonic() + RECOVER_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    return 0, 0
                time.sleep(0.01)
        return _recover(db, folder, sorted(os.listdir(folder)), backend, own)
    finally:
        os.close(guard)


def _recover(
    db: LogTarget, folder: Path, names: list[str], backend: LogBackend, own: Spool | None
) -> tuple[int, int]:
    written = lost = 0
    for name in names:
        if own is not None and own.owns(name):
            continue
        if not name.endswith((".spool", ".tmp")):
            continue
        path = folder / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # gone meanwhile (another process recovered it)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its process is alive
            if name.endswith(".tmp"):  # a process that died creating a segment: empty
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(os.dup(fd), "rb") as file:
                data = file.read()
            done, failed = _ingest(db, backend, data, name.split("-")[0])
            written += done
            lost += failed
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    if written or lost:
        message = f"recovered {written} calls from the spool of processes that ended before writing them"
        if lost:
            message += f"; {lost} could not be"
        get_logger().info("httptrack: %s (%s)", message, db)
    if lost:
        report_fault("spool", f"{lost} spooled calls could not be recovered into {db}", dropped=lost)
    return written, lost


def _any_orphan(folder: Path, names: list[str]) -> bool:
    """Whether a spool in ``folder`` belongs to a process that is gone (its lock is free),
    or another process is writing such spools into the log right now (then the caller
    waits for it in :func:`recover`, and reads the log with those calls in it)."""
    if RECOVER_LOCK in names and _locked(folder / RECOVER_LOCK):
        return True
    for name in names:
        if not name.endswith((".spool", ".tmp")):
            continue
        try:
            fd = os.open(folder / name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True  # nobody holds it (the lock goes with the descriptor, closed below)
        except OSError:
            continue  # its owner is alive
        finally:
            os.close(fd)
    return False


def _locked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def recover_log(db: LogTarget) -> None:
    """Write the spooled calls of processes that ended into the log at ``db`` (what
    ``open_log`` and the CLI do before reading). Cheap when there is nothing to do (one
    directory listing); a log that cannot be written now is read as it is."""
    try:
        names = os.listdir(spool_folder(db))
    except OSError:
        return
    if not _any_orphan(spool_folder(db), names):
        return  # only live processes' spools (this one's among them): nothing to write, and
        # the log is not opened for writing (a read must not migrate it, say)
    backend = open_backend(db)
    try:
        backend.open()
        if recover(db, backend)[0]:
            backend.catch_up()
        backend.checkpoint()
    except LogUnavailable as exc:
        report_fault("spool", f"spooled calls could not be written into {db} now: {exc}", exc.__cause__)
    finally:
        backend.close()


def _ingest(db: LogTarget, backend: LogBackend, data: bytes, pid: str) -> tuple[int, int]:
    note = f"recovered from the spool of process {pid}, which ended before writing it"
    rows: list[tuple[Any, ...]] = []
    lost = 0
    for record in read_records(data):
        if record is None:
            lost += 1
            continue
        try:
            row = build_row(restore(record, db)).row
        except Exception as exc:
            report_fault("record", "a spooled call could not be turned into a row", exc)
            lost += 1
            continue
        row["parse_notes"] = f"{row['parse_notes']}; {note}" if row.get("parse_notes") else note
        if pid.isdigit():
            row["pid"] = int(pid)
        rows.append(_row_values(row))
    written = 0
    for start in range(0, len(rows), RECOVER_BATCH):
        result = backend.write(rows[start : start + RECOVER_BATCH])
        written += result.written
        lost += len(result.refused)
    return written, lost
