"""A cached response and its format, shared by every cache storage (the folder in
``_store``, Redis in ``_redis``): :class:`CacheEntry`, httptrack's own checksummed byte
format (:func:`encode_entry` / :func:`decode_entry`; never pickled, so a store someone else
can write to cannot run code in the app), and the in-process memory of recent entries each
storage keeps in front of itself.

The cache folder stores an answer whose call's row holds its exact bytes *by reference*
(:attr:`CacheEntry.source`, see ``_rows``): the entry keeps what the row cannot give back,
and its body and figures are read from the row when it is read from the folder.
"""

from __future__ import annotations

import json
import math
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._errors import CorruptEntry
from .._faults import report_fault
from .._streams import ReplayChunks
from ..log._schema import TOKEN_COLUMNS
from ._rows import RowGone, RowUnreadable, read_row

__all__ = [
    "MEMORY_BYTES",
    "MEMORY_ENTRY_BYTES",
    "ORIGINAL_COLUMNS",
    "CacheEntry",
    "CorruptEntry",
    "Memory",
    "RowGone",
    "RowUnreadable",
    "decode_entry",
    "encode_entry",
    "remember",
]

#: The in-process memory of recent entries: total bytes, and the largest entry kept.
MEMORY_BYTES = 16 * 1024 * 1024
MEMORY_ENTRY_BYTES = 1024 * 1024

_MAGIC = b"HTC\x01"
#: The same format, its body (the chunks, joined) compressed as one zstd frame.
_MAGIC_ZSTD = b"HTC\x02"
#: The same metadata and no body: body and figures are read from the call's row (``_rows``).
_MAGIC_ROW = b"HTC\x03"
_HEAD = struct.Struct(">4sII")  # magic, CRC-32 of everything after the head, metadata length
#: Bodies at least this long are stored compressed (zstd): LLM answers are JSON or SSE, which
#: compress 3-10x; below this the saving is a few hundred bytes of a page diskcache's index
#: holds anyway.
COMPRESS_ABOVE = 1024
#: zstd's level: 3 is its default (hundreds of MB/s; higher levels cost more CPU than the
#: bytes they save are worth here).
COMPRESS_LEVEL = 3

#: The ``calls`` columns an entry keeps from the call that fetched it. A hit is recorded with
#: the same token figures and cost (not re-counted, not re-priced: the saving is exactly the
#: cost once recorded), and, when the app reads it to the end, with the same reading of the
#: response (model, finish reason, text ...) without parsing it again.
ORIGINAL_COLUMNS = (
    *TOKEN_COLUMNS,
    "cost_usd",
    "cost_note",
    "stream",
    "response_model",
    "response_id",
    "finish_reason",
    "response_text",
    "parse_notes",
    "response_bytes",
)


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One stored response: exactly what the inner transport gave (status, headers, body
    chunks, still content-encoded), the figures of the call that fetched it, and when."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    chunks: tuple[bytes, ...]
    #: Token figures and cost of the original call (``calls`` column names).
    figures: dict[str, Any]
    #: When it was stored (the cache's clock) and for how many seconds it may be served.
    created: float
    ttl: float
    #: What the request was, for messages and listings: method, url (no credentials),
    #: model, provider, operation, call_id of the original call, stream.
    info: dict[str, Any] = field(default_factory=dict)
    #: The headers as a ready ``Headers`` object, per response class (httpx's or httpx2's),
    #: so each hit copies a list instead of normalizing every header again.
    prepared: dict[type, Any] = field(default_factory=dict, compare=False, repr=False)
    #: Where the call log holds this answer's exact bytes and figures: the log's path and
    #: the call's id (set by the writer once the row is written; ``None``: the entry must
    #: carry them itself). Only the cache folder stores by reference (Redis: full entries).
    source: tuple[str, str] | None = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> int:
        """About the memory it holds (what bounds the in-process memory of entries): the
        bytes, and what Python objects cost around them (a bytes object ~33 bytes, a dict
        item ~100, the figures' texts such as the response text)."""
        size = sum(map(len, self.chunks)) + 40 * len(self.chunks) + 1024
        size += sum(len(k) + len(v) + 120 for k, v in self.headers)
        for value in self.figures.values():
            size += 100 + (len(value) if isinstance(value, str) else 0)
        return size + 100 * len(self.info)

    def stream(self, response_class: type) -> ReplayChunks:
        """The body for a hit: the recorded chunks, as an inner stream."""
        return ReplayChunks(self.chunks)

    def fresh(self, now: float, ttl: float) -> bool:
        """Younger than both the TTL it was stored with and ``ttl`` (the one that applies
        to the request now: a shorter TTL configured later takes effect at once)."""
        return now < self.created + min(self.ttl, ttl)


#: json.dumps(..., separators=(",", ":")), made once (json.dumps builds an encoder per call).
_encode_json = json.JSONEncoder(separators=(",", ":")).encode
_msgspec_encode: Callable[[Any], bytes] | None = None


def _encode_meta(meta: dict[str, Any]) -> bytes:
    """``meta`` as JSON bytes: by msgspec (a tenth of json's time; imported on first use),
    or json for what JSON has no number for (an infinite TTL: msgspec would write null)."""
    global _msgspec_encode
    if not math.isfinite(meta["ttl"]):
        return _encode_json(meta).encode("utf-8")
    encode = _msgspec_encode
    if encode is None:
        import msgspec

        encode = _msgspec_encode = msgspec.json.Encoder().encode
    try:
        return encode(meta)
    except Exception:  # a value msgspec will not take (a lone surrogate): json says what it can
        return _encode_json(meta).encode("utf-8")


_codecs = threading.local()


def _compress(body: bytes) -> bytes:
    compressor = getattr(_codecs, "compressor", None)
    if compressor is None:
        import zstandard

        compressor = _codecs.compressor = zstandard.ZstdCompressor(level=COMPRESS_LEVEL)
    return compressor.compress(body)


def _decompress(data: bytes, size: int) -> bytes:
    decompressor = getattr(_codecs, "decompressor", None)
    if decompressor is None:
        import zstandard

        decompressor = _codecs.decompressor = zstandard.ZstdDecompressor()
    # The frame says its size; at most what the metadata says the chunks add up to.
    return decompressor.decompress(data, max_output_size=size)


def encode_entry(
    entry: CacheEntry, *, compress_above: int | None = COMPRESS_ABOVE, by_reference: bool = False
) -> bytes:
    """The bytes stored for ``entry``: a head, the metadata (JSON), the body; the body as
    one zstd frame when at least ``compress_above`` bytes long (``None``: never) and
    smaller so. With ``by_reference``, an entry whose call's row holds its answer
    (:attr:`CacheEntry.source`) is stored as a head and metadata only: which row, and the
    size and CRC-32 of the bytes it must give back."""
    source = entry.source
    if by_reference and source is not None:
        crc = 0
        for chunk in entry.chunks:
            crc = zlib.crc32(chunk, crc)
        sizes = [len(c) for c in entry.chunks]
        meta = _encode_meta(
            {
                "status": entry.status,
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in entry.headers],
                "chunks": sizes,
                "created": entry.created,
                "ttl": entry.ttl,
                "info": entry.info,
                "row": [source[0], source[1], sum(sizes), crc],
            }
        )
        return b"".join((_HEAD.pack(_MAGIC_ROW, zlib.crc32(meta), len(meta)), meta))
    meta = _encode_meta(
        {
            "status": entry.status,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in entry.headers],
            "chunks": [len(c) for c in entry.chunks],
            "figures": entry.figures,
            "created": entry.created,
            "ttl": entry.ttl,
            "info": entry.info,
        }
    )
    body = b"".join(entry.chunks)
    magic = _MAGIC
    if compress_above is not None and len(body) >= compress_above:
        packed = _compress(body)
        if len(packed) < len(body):
            body, magic = packed, _MAGIC_ZSTD
    crc = zlib.crc32(body, zlib.crc32(meta))
    return b"".join((_HEAD.pack(magic, crc, len(meta)), meta, body))


def decode_entry(blob: object) -> CacheEntry:
    """The entry in ``blob``; :class:`CorruptEntry` for anything but an intact one."""
    if not isinstance(blob, bytes) or len(blob) < _HEAD.size:
        raise CorruptEntry("not an httptrack cache entry")
    magic, crc, meta_len = _HEAD.unpack_from(blob)
    if magic not in (_MAGIC, _MAGIC_ZSTD, _MAGIC_ROW):
        raise CorruptEntry("not an httptrack cache entry (or written by another version)")
    view = memoryview(blob)[_HEAD.size :]
    if zlib.crc32(view) != crc:
        raise CorruptEntry("checksum mismatch")
    try:
        meta = json.loads(bytes(view[:meta_len]))
        sizes = meta["chunks"]
        start = _HEAD.size + meta_len
        if any(not isinstance(n, int) or n < 0 for n in sizes):
            raise CorruptEntry("chunk sizes do not add up")
        if magic == _MAGIC_ROW:
            return _from_row(meta, sizes)
        if magic == _MAGIC_ZSTD:
            blob = _decompress(blob[start:], sum(sizes))
            start = 0
        if sum(sizes) != len(blob) - start:
            raise CorruptEntry("chunk sizes do not add up")
        chunks = []
        for size in sizes:
            chunks.append(blob[start : start + size])
            start += size
        headers = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in meta["headers"])
        return CacheEntry(
            status=int(meta["status"]),
            headers=headers,
            chunks=tuple(chunks),
            figures=dict(meta["figures"]),
            created=float(meta["created"]),
            ttl=float(meta["ttl"]),
            info=dict(meta.get("info") or {}),
        )
    except (CorruptEntry, RowUnreadable):
        raise
    except Exception as exc:  # a checksum-valid blob of the wrong shape: treat alike
        raise CorruptEntry(f"unreadable entry: {exc!r}") from None


def _from_row(meta: dict[str, Any], sizes: list[int]) -> CacheEntry:
    """An entry stored by reference, with its body and figures read from its call's row
    (``_rows.RowGone`` if that row no longer gives back the exact bytes)."""
    path, call_id, size, crc = meta["row"]
    if sum(sizes) != size:
        raise CorruptEntry("chunk sizes do not add up")
    body, figures = read_row(str(path), str(call_id), ORIGINAL_COLUMNS, int(size), int(crc))
    chunks = []
    start = 0
    for n in sizes:
        chunks.append(body[start : start + n])
        start += n
    if len(chunks) == 1:
        chunks[0] = body
    return CacheEntry(
        status=int(meta["status"]),
        headers=tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in meta["headers"]),
        chunks=tuple(chunks),
        figures=figures,
        created=float(meta["created"]),
        ttl=float(meta["ttl"]),
        info=dict(meta.get("info") or {}),
    )


class Memory:
    """Recent entries by key, least recently used dropped first, bounded by bytes."""

    def __init__(self, max_bytes: int, max_entry_bytes: int) -> None:
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._bytes = 0
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self._lock = threading.Lock()

    def get(self, key: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: str, entry: CacheEntry) -> None:
        size = entry.size
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            if size > self.max_entry_bytes:
                return
            self._entries[key] = entry
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.size

    def discard(self, key: str) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)


def remember(key: str, blob: object, memory: Memory, drop: Callable[[str], None]) -> CacheEntry | None:
    """A storage's read of ``key`` (``blob``, as stored): the entry, now also in ``memory``;
    a damaged one is reported, dropped from the storage (``drop``) and a miss. One stored
    by reference whose row is gone (pruned) is dropped too, a miss, not a fault; one whose
    log cannot be read right now is a miss, kept."""
    try:
        entry = decode_entry(blob)
    except RowGone:
        drop(key)
        return None
    except RowUnreadable as exc:
        locked = "locked" in str(exc) or "busy" in str(exc)
        report_fault(
            "cache_busy" if locked else "cache_read",
            f"a cached answer's call log could not be read ({exc}); a miss",
        )
        return None
    except CorruptEntry as exc:
        report_fault("cache_corrupt", f"a damaged response cache entry was dropped ({exc})")
        drop(key)
        return None
    memory.put(key, entry)
    return entry
