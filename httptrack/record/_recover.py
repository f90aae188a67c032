"""Reading a spool back: the records of a spool file or a live feed, the exchange a record
was made from, and recovery, which writes the rows of the calls that processes gone left
in their spools (see ``_spool``'s docstring for the format and the promise).

- :func:`recover` ingests the files of dead processes: the writer does it when it first
  opens a log (and now and then), ``open_log`` and the CLI when they open one. Rows are
  written idempotently (by call id), so two processes recovering at once, or a death
  between the commit and the delete, store each call once.
- The writer process (``_daemon``) reads live feeds with :func:`read_feed` and builds their
  rows with :func:`spooled_rows`, the same way.
"""

from __future__ import annotations

import fcntl
import marshal
import mmap
import operator
import os
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
from .._settings import Settings
from ..log._open import open_backend
from ..log._schema import COLUMN_NAMES
from ..log._url import LogTarget
from ..providers import provider_by_name
from ._row import build_row
from ._spool import (
    _CONSUMED,
    _FEED_START,
    _GENERATION,
    _HEADER,
    _HEADER_SIZE,
    _LENGTH,
    _OFFSET_MASK,
    _START,
    _WORD,
    CHECK,
    FEED_MAGIC,
    MAGIC,
    VERSION,
    Spool,
    spool_folder,
)

if TYPE_CHECKING:
    from ..log._backend import LogBackend


__all__ = [
    "RECOVER_BATCH",
    "frames",
    "read_feed",
    "read_records",
    "recover",
    "recover_log",
    "restore",
    "spooled_rows",
]

#: Rows per transaction when ingesting a spool.
RECOVER_BATCH = 500
#: Held by the process recovering the folder's spools; another one waits this long for it.
RECOVER_LOCK = "recovering.lock"
RECOVER_WAIT_SECONDS = 30.0
_row_values = operator.itemgetter(*COLUMN_NAMES)


def read_records(data: bytes) -> Iterator[tuple[Any, ...] | None]:
    """The records in a spool file's bytes, in order (``None`` for one that cannot be
    read), up to a zero length; a record cut short at the end (its process died writing
    it) is left out. Reads both formats: mapped files (``MAGIC``) and older ones."""
    view = memoryview(data)
    end = len(data)
    magic = data[:_START]
    if magic in (MAGIC, FEED_MAGIC):
        # A feed's records before its consumed offset are in the log already.
        pos = feed_position(view) if magic == FEED_MAGIC else _START
        for _, payload in frames(view, pos, end):
            yield _loads(payload)
        return
    pos = 0
    while pos + 4 <= end:
        (length,) = _LENGTH.unpack_from(view, pos)
        if not length or pos + 4 + length > end:
            return
        yield _loads(view[pos + 4 : pos + 4 + length])
        pos += 4 + length


def frames(view: memoryview | mmap.mmap, pos: int, end: int) -> Iterator[tuple[int, memoryview]]:
    """The records of a mapped segment from ``pos``: (where the next one begins, its bytes),
    up to a zero header (or one its process died committing: the check fails)."""
    data = view if isinstance(view, memoryview) else memoryview(view)
    while pos + _HEADER_SIZE <= end:
        length, check = _HEADER.unpack_from(data, pos)
        stop = pos + _HEADER_SIZE + length
        if not length or check != length ^ CHECK or stop > end:
            return  # the end, or a record its process died committing
        pos = (stop + 7) & ~7
        yield pos, data[stop - length : stop]


def feed_position(view: memoryview | mmap.mmap) -> int:
    """Where a feed's records not yet in the log begin: its consumed offset, if the writer
    process published it for the feed's present generation, else its first record."""
    generation = _WORD.unpack_from(view, _GENERATION)[0]
    consumed = _WORD.unpack_from(view, _CONSUMED)[0]
    offset = consumed & _OFFSET_MASK
    return offset if consumed >> 32 == generation and offset > _FEED_START else _FEED_START


def _loads(data: memoryview) -> tuple[Any, ...] | None:
    try:
        record = marshal.loads(data)
    except (ValueError, EOFError, TypeError):
        return None
    return record if isinstance(record, tuple) and record and record[0] == VERSION else None


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
            # A feed's calls were handed to the writer process as they should be: no note.
            fed = data.startswith(FEED_MAGIC)
            done, failed = _ingest(db, backend, data, name.split("-")[0], note=not fed)
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


def _ingest(
    db: LogTarget, backend: LogBackend, data: bytes, pid: str, *, note: bool = True
) -> tuple[int, int]:
    rows, lost = spooled_rows(db, read_records(data), pid, note=note)
    written = 0
    for start in range(0, len(rows), RECOVER_BATCH):
        result = backend.write(rows[start : start + RECOVER_BATCH])
        written += result.written
        lost += len(result.refused)
    return written, lost


def spooled_rows(
    db: LogTarget, records: Iterable[tuple[Any, ...] | None], pid: str, *, note: bool
) -> tuple[list[tuple[Any, ...]], int]:
    """The rows (values in column order) of spooled records of process ``pid``, and how many
    could not be read or built. ``note``: say in each row that it was recovered."""
    text = f"recovered from the spool of process {pid}, which ended before writing it"
    rows: list[tuple[Any, ...]] = []
    lost = 0
    owner = int(pid) if pid.isdigit() else None
    for record in records:
        if record is None:
            lost += 1
            continue
        try:
            row = build_row(restore(record, db)).row
        except Exception as exc:
            report_fault("record", "a spooled call could not be turned into a row", exc)
            lost += 1
            continue
        if note:
            row["parse_notes"] = f"{row['parse_notes']}; {text}" if row.get("parse_notes") else text
        if owner is not None:
            row["pid"] = owner  # the app's, not the process that builds the row
        rows.append(_row_values(row))
    return rows, lost


def read_feed(view: mmap.mmap, *, skip: bool = False) -> tuple[int, int, list[tuple[Any, ...] | None]]:
    """The records of a live feed segment not yet in the log: (its generation, where they
    end, the records). Stops before a record that does not read back whole (being written
    by its live owner, as another CPU may see it): the next look takes it; ``skip``: one
    that never did is passed over (``None``)."""
    generation = _WORD.unpack_from(view, _GENERATION)[0]
    end = pos = feed_position(view)
    records: list[tuple[Any, ...] | None] = []
    for after, payload in frames(view, pos, len(view)):
        record = _loads(payload)
        if record is None and not skip:
            break
        records.append(record)
        end = after
    return generation, end, records
