"""Bodies stored compressed: ``request_body`` and ``response_body`` longer than
:data:`COMPRESS_MIN_BYTES` are written as a zstd frame (a ``BLOB``), shorter ones as text.

Which a value is, SQLite says itself: ``typeof(response_body)`` is ``'blob'`` for a
compressed body, ``'text'`` for one stored as it is. A log written before compression, or
by an older httptrack, holds text only; both kinds live side by side in one table, and
every reader here sees text:

- in Python, :func:`body_text` (``open_log()``, ``CallRecord``, ``httptrack show``,
  ``export``, the datasette pages);
- in SQL, the function ``httptrack_body(column)`` (:func:`register_functions`), registered
  on every connection httptrack opens and by the datasette plugin, so
  ``SELECT httptrack_body(response_body) FROM calls`` reads the text in datasette, and the
  full-text index reads the prompts through it.

The writer thread compresses (``_sqlite.Store.write``), never the app's thread. zstd at
level 3: a 2 KB chat body in about 20 µs, read back in 5.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

import zstandard

from ._schema import COLUMN_NAMES

__all__ = [
    "BODY_FUNCTION",
    "COMPRESSED_COLUMNS",
    "COMPRESS_MIN_BYTES",
    "ZSTD_MAGIC",
    "Compressor",
    "body_text",
    "register_functions",
]

#: The columns stored compressed when long. (``response_text``, the generated text, stays
#: text: it is short beside the bodies, and datasette filters and shows it as it is.)
COMPRESSED_COLUMNS = ("request_body", "response_body")
#: Bodies of at least this many bytes (UTF-8) are compressed; shorter ones gain too little
#: for the cost of reading them back.
COMPRESS_MIN_BYTES = 512
#: The SQL function that gives a body's text, compressed or not.
BODY_FUNCTION = "httptrack_body"
#: How every zstd frame begins (a compressed body's first four bytes).
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_LEVEL = 3
_AT = tuple(COLUMN_NAMES.index(name) for name in COMPRESSED_COLUMNS)
# A decompressor per thread: zstandard's objects are not to be shared between threads, and
# datasette runs queries on several.
_local = threading.local()


def body_text(value: Any) -> Any:
    """A stored body as text: a compressed one (bytes) decompressed, anything else as it is."""
    if not isinstance(value, bytes):
        return value
    decompressor = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    try:
        return decompressor.decompress(value).decode("utf-8", "replace")
    except zstandard.ZstdError:
        # Not one of ours (a blob someone stored by hand): shown as best it can be.
        return value.decode("utf-8", "replace")


def register_functions(conn: sqlite3.Connection) -> None:
    """``httptrack_body(x)`` on ``conn``: ``x``'s text, decompressed if it was stored compressed."""
    conn.create_function(BODY_FUNCTION, 1, body_text, deterministic=True)


class Compressor:
    """Compresses the long bodies of rows about to be written (one per writer: not
    shared between threads)."""

    def __init__(self, min_bytes: int | None = None) -> None:
        #: ``None``: ``COMPRESS_MIN_BYTES`` at each write.
        self.min_bytes = min_bytes
        self._zstd = zstandard.ZstdCompressor(level=_LEVEL)

    def rows(self, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """``rows`` with each long body as a zstd frame (bytes); the rest unchanged."""
        out = []
        compress = self._zstd.compress
        least = COMPRESS_MIN_BYTES if self.min_bytes is None else self.min_bytes
        for row in rows:
            changed: list[Any] | None = None
            for i in _AT:
                value = row[i]
                # Characters <= bytes: a string shorter than the threshold is never long enough.
                if isinstance(value, str) and len(value) >= least // 4:
                    try:
                        data = value.encode()
                    except UnicodeEncodeError:  # SQLite would refuse it anyway: as it is
                        continue
                    if len(data) >= least:
                        packed = compress(data)
                        if len(packed) < len(data):
                            if changed is None:
                                changed = list(row)
                            changed[i] = packed
            out.append(row if changed is None else tuple(changed))
        return out
