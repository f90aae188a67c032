"""The call log as the cache folder's store of response bytes (one copy of an answer).

An entry of the cache folder whose answer the call's row holds exactly (bodies stored, not
cut by the size cap, not changed by redaction or a ``redact`` hook, not content-encoded, in
a SQLite log) keeps only what the row cannot give back: status, headers, chunk boundaries,
when it expires, and which row (the log's path and the call's id) with a checksum of the
bytes. Its body and figures are read back from the row here when the entry is read from the
folder (once per process: then it is held in memory), on the thread that reads it.

A row that is gone (pruned by retention or ``httptrack prune``, its body pruned, the log
deleted or moved) makes the entry a miss: :class:`RowGone`, and the entry is dropped. A row
whose bytes differ from the checksum is never served (:class:`RowGone` too). A log that
cannot be read right now (locked, an I/O error) is :class:`RowUnreadable`: a miss, the
entry kept.

Imported only when such an entry is read (sqlite3 and zstandard stay out of
``import httptrack``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import zlib
from typing import Any
from urllib.parse import quote

from .._errors import CorruptEntry

__all__ = ["READ_TIMEOUT", "RowGone", "RowUnreadable", "read_row"]

#: Seconds a read waits for a log locked by another process (the cache folder's own).
READ_TIMEOUT = 0.1
#: SQLite's page cache per read connection (KiB): reads are one row by primary key.
CACHE_KIB = 512


class RowGone(CorruptEntry):
    """The call's row an entry reads its answer from is gone (pruned, its body pruned, the
    log deleted), or no longer holds that answer: a miss, and the entry is dropped."""


class RowUnreadable(Exception):
    """The call log an entry reads its answer from cannot be read right now (locked, an
    I/O error): a miss, the entry kept."""


_local = threading.local()
#: Connections a forked child inherited: kept, unused (closing them could disturb the
#: parent's use of the same file).
_inherited: list[Any] = []


def _connection(path: str) -> sqlite3.Connection:
    """This thread's read-only connection to the log at ``path`` (kept open: a hit read
    from the folder costs one query, not an open)."""
    conns: dict[str, tuple[sqlite3.Connection, int]] | None = getattr(_local, "conns", None)
    pid = os.getpid()
    if conns is None or getattr(_local, "pid", pid) != pid:
        if conns:  # a forked child opens its own; its parent's are left alone, never closed here
            _inherited.append(conns)
        conns = _local.conns = {}
        _local.pid = pid
    try:
        inode = os.stat(path).st_ino
    except OSError:
        _forget(path)
        raise RowGone("the call log it reads from is gone") from None
    found = conns.get(path)
    if found is not None and found[1] == inode:
        return found[0]
    if found is not None:  # the log was replaced by another file
        _forget(path)
    try:
        conn = sqlite3.connect(
            f"file:{quote(path)}?mode=ro", uri=True, timeout=READ_TIMEOUT, isolation_level=None
        )
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    except sqlite3.Error as exc:
        raise RowUnreadable(f"cannot open the call log: {exc}") from None
    conns[path] = (conn, inode)
    return conn


def read_row(
    path: str, call_id: str, columns: tuple[str, ...], size: int, crc: int
) -> tuple[bytes, dict[str, Any]]:
    """The response bytes of call ``call_id`` in the log at ``path`` and its ``columns``;
    :class:`RowGone` when the row, or its body, is not there or its bytes are not the
    ``size`` bytes of CRC-32 ``crc`` the entry was stored with."""
    sql = f"SELECT response_body, {', '.join(columns)} FROM calls WHERE id = ?"
    try:
        conn = _connection(path)
        # Run to its end (fetchall): a statement left open would hold a read snapshot of the
        # log, and keep its WAL from being restarted.
        rows = conn.execute(sql, (call_id,)).fetchall()
    except RowGone:
        raise
    except sqlite3.Error as exc:
        if "no such table" in str(exc) or "no such column" in str(exc):
            raise RowGone(f"the call log has no such row ({exc})") from None
        _forget(path)
        raise RowUnreadable(str(exc)) from None
    if not rows:
        raise RowGone("its call's row was pruned")
    found = rows[0]
    body = found[0]
    if body is None:
        raise RowGone("its call's body was pruned")
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else _decompress(bytes(body), size)
    if len(data) != size or zlib.crc32(data) != crc:
        raise RowGone("its call's row no longer holds the answer it was stored with")
    return data, dict(zip(columns, found[1:], strict=True))


def _decompress(data: bytes, size: int) -> bytes:
    decompressor = getattr(_local, "decompressor", None)
    if decompressor is None:
        import zstandard

        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    try:
        return decompressor.decompress(data, max_output_size=size + 1)
    except Exception:
        return b""  # not a body of ours: the checksum says it is not the answer


def _forget(path: str) -> None:
    conns = getattr(_local, "conns", None)
    if conns is not None:
        found = conns.pop(path, None)
        if found is not None:
            with contextlib.suppress(sqlite3.Error):
                found[0].close()
