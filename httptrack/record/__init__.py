"""The background writer: everything that happens to a call after the app has its answer.

It owns the queue the app's thread hands finished exchanges to, the one writer thread per
process, batching, the process lifecycle (exit, fork) and turning an exchange into a row. It
knows no SQL: rows are written through the call log (``log/``).

- ``_writer``: the queue, the writer thread, ``flush()``, exit and fork handling, rows that
  wait while the database is unwritable.
- ``_row``: one exchange -> one ``calls`` row (decode, parse, estimate, price, redact).
- ``_decoders``: incremental SSE / NDJSON / JSON-array stream decoders.
- ``_tokens``: offline token counting (tiktoken with the encodings shipped in the package).
"""

__all__: list[str] = []
