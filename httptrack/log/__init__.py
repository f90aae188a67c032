"""The call log: the database every call is recorded in, and reading it back.

It owns the schema, its migrations, the derived tables (search index, daily rollups), the
inserts the writer makes (through one seam, ``LogBackend``), and every query the front-ends
(CLI, datasette, ``open_log``) run. SQLite by default; Postgres for a shared log.

- ``_schema``: the ``calls`` columns, their SQL types and descriptions (the one list).
- ``_backend``: ``LogBackend``, what the writer needs from an engine (a ``Protocol``).
- ``_url``: ``DatabaseURL`` (a ``postgresql://`` log, printed without its password).
- ``_open``: which backend serves a log (SQLite for a file, Postgres for a URL).
- ``_postgres``: ``PostgresStore`` (the Postgres ``LogBackend``), its schema and migrations.
- ``_pgreader``: reading a Postgres log with the same ``Log``; ``_pgmaintenance``: its prune.
- ``_sqlite``: connections, migrations, ``Store`` (the SQLite ``LogBackend``: batched,
  idempotent inserts, a refused row reported alone).
- ``_views``: reporting views, indexes and the full-text search index.
- ``_rollup``: daily rollups behind ``stats`` and the datasette facets.
- ``_reader``: ``Log`` / ``open_log()``, reading and searching the log from Python.
- ``_records``: ``CallRecord``, one row as a typed object.
- ``_maintenance``: ``prune`` and ``reindex``.
"""

__all__: list[str] = []
