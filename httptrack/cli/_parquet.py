"""``httptrack export --format parquet``: calls as a typed Parquet file (pyarrow, an extra).

Types from the schema: ``started_at`` a UTC timestamp (milliseconds), INTEGER columns int64,
REAL float64, TEXT strings (``properties`` and the headers stay JSON text). Rows are
written in record batches of at most ``BATCH_ROWS`` rows or about ``BATCH_BYTES`` of text, so
memory stays bounded however many calls (and however large their bodies) there are.
"""

from __future__ import annotations

import operator
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
    large = [c for c in columns if c in _LARGE]
    # A row's values in column order (in C), then column by column into Arrow arrays:
    # cheaper than building a batch from the dicts.
    values = operator.itemgetter(*columns) if len(columns) > 1 else (lambda row: (row[columns[0]],))
    started = columns.index("started_at") if "started_at" in columns else -1
    written = 0
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        pending: list[tuple[Any, ...]] = []
        size = 0

        def flush() -> None:
            data = list(zip(*pending, strict=True)) if pending else [()] * len(columns)
            arrays = []
            for i, field in enumerate(schema):
                if i == started:  # ISO-8601 text: Arrow parses it (in C++)
                    arrays.append(pa.array(data[i], type=pa.string()).cast(field.type))
                else:
                    arrays.append(pa.array(data[i], type=field.type))
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
            pending.clear()

        for row in rows:
            pending.append(values(row))
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
