"""``httptrack export --format parquet``: calls as a typed Parquet file (pyarrow, an extra).

Types from the schema: ``started_at`` a UTC timestamp (milliseconds), INTEGER columns int64,
REAL float64, TEXT strings (``properties`` and the headers stay JSON text). Rows are
written in record batches of at most ``BATCH_ROWS`` rows or about ``BATCH_BYTES`` of text, so
memory stays bounded however many calls (and however large their bodies) there are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..log._schema import COLUMNS

__all__ = ["BATCH_BYTES", "BATCH_ROWS", "write_parquet"]

BATCH_ROWS = 20_000
BATCH_BYTES = 64 * 1024 * 1024
_SQL_TYPES = {name: sqltype for name, sqltype, _ in COLUMNS}
#: The columns whose text can be large (their length counts toward BATCH_BYTES).
_LARGE = frozenset(
    ("request_headers", "request_body", "response_headers", "response_body", "response_text", "error_message")
)


def write_parquet(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> int:
    """Write ``rows`` (dicts with ``columns``) to ``path``; returns how many were written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def arrow_type(column: str) -> Any:
        if column == "started_at":
            return pa.timestamp("ms", tz="UTC")
        return {"INTEGER": pa.int64(), "REAL": pa.float64()}.get(_SQL_TYPES[column], pa.string())

    schema = pa.schema([pa.field(c, arrow_type(c)) for c in columns])
    # started_at is read as text and cast (Arrow parses ISO-8601 itself, in C++).
    read_schema = pa.schema(
        [pa.field(c, pa.string() if c == "started_at" else arrow_type(c)) for c in columns]
    )
    large = [c for c in columns if c in _LARGE]
    written = 0
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        pending: list[Mapping[str, Any]] = []
        size = 0

        def flush() -> None:
            batch = pa.RecordBatch.from_pylist(pending, schema=read_schema)
            if "started_at" in columns:
                i = read_schema.get_field_index("started_at")
                batch = batch.set_column(i, schema.field(i), batch.column(i).cast(schema.field(i).type))
            writer.write_batch(batch)
            pending.clear()

        for row in rows:
            pending.append(row)
            for column in large:
                value = row[column]
                if value:
                    size += len(value)
            if len(pending) >= BATCH_ROWS or size >= BATCH_BYTES:
                written += len(pending)
                flush()
                size = 0
        if pending or not written:
            written += len(pending)
            flush()
    return written
