"""The call log: the database every call is recorded in, and reading it back.

It owns the schema, its migrations, the derived tables (search index, daily rollups), the
inserts the writer makes, and every query the front-ends (CLI, datasette, ``open_log``) run.
SQLite today.

- ``_schema``: the ``calls`` columns, their SQL types and descriptions (the one list).
- ``_sqlite``: connections, migrations, ``Store`` (batched inserts for ``record/_writer``).
- ``_views``: reporting views, indexes and the full-text search index.
- ``_rollup``: daily rollups behind ``stats`` and the datasette facets.
- ``_reader``: ``Log`` / ``open_log()``, reading and searching the log from Python.
- ``_records``: ``CallRecord``, one row as a typed object.
- ``_maintenance``: ``prune`` and ``reindex``.
"""

__all__: list[str] = []
