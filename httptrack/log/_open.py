"""Which backend serves a log target: SQLite for a file path, Postgres for a
``postgresql://`` URL (``_url.DatabaseURL``; psycopg is imported only then)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ._backend import LogBackend
from ._sqlite import Store
from ._url import DatabaseURL

__all__ = ["open_backend"]


def open_backend(target: str | Path | DatabaseURL, pause: Callable[[], None] | None = None) -> LogBackend:
    """The backend for the log at ``target``. ``pause`` is called now and then during long
    stretches of Python work (the writer's GIL manners, see ``record/_writer``)."""
    if isinstance(target, DatabaseURL):
        from ._postgres import PostgresStore

        return PostgresStore(target, pause)
    return Store(Path(target), pause)
