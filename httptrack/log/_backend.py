"""The call log's one seam: what the background writer needs from a database engine.

The writer (``record/_writer``) knows no SQL: it hands rows to a :class:`LogBackend` and
hears back what happened. SQLite (``_sqlite.Store``) is the implementation today; a shared
Postgres log plugs in by implementing the same few methods, and ``_open.open_backend``
choosing it for a ``postgresql://`` target.

The contract, whatever the engine:

- ``write(rows)`` is one transaction: every row is in the log afterwards, or (on
  :class:`~httptrack._errors.LogUnavailable`) none of them is, and the same rows may be
  written again later. A row whose ``id`` is already there is a *duplicate*, not an error
  (the spool may be read twice: rows are written idempotently). A row the log refuses for
  itself (a constraint a newer schema added, a value too big) is *refused*: reported in the
  result with the reason, while the other rows of the batch are written.
- Anything that stops the whole write (locked, disk full, unreachable, unwritable) raises
  ``LogUnavailable``; the writer keeps the rows and tries again later.
- ``checkpoint()`` folds the engine's journal into the log itself when no other writer is
  active (SQLite: the WAL into the ``.db`` file), so a copy of the log is the whole log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["LogBackend", "WriteResult"]


class WriteResult(NamedTuple):
    """What one ``LogBackend.write`` did with its rows."""

    #: Rows added to the log.
    written: int
    #: Rows whose id the log already had (written before: nothing to do).
    duplicates: int
    #: Rows the log refused, as (index in the rows given, why); every other row was written.
    refused: list[tuple[int, str]]


class LogBackend(Protocol):
    """One call log, as the writer thread sees it (one object per log per process)."""

    #: Where the log is, for messages (a path, a URL without credentials).
    location: str
    #: Rows written since the derived data (search index, rollups) was last brought up to
    #: date; ``catch_up`` brings it to 0.
    behind: int
    #: Indexes a migration left to be built while the writer is idle (SQLite, on a log big
    #: enough that building them at once would hold its write lock for long; see
    #: ``log/_indexes``). Always ``False`` where an engine builds none later.
    indexes_pending: bool

    def open(self) -> None:
        """Connect and bring the schema up to date (idempotent; ``write`` calls it too).
        Raises ``LogUnavailable``."""

    def write(self, rows: Sequence[tuple[Any, ...]]) -> WriteResult:
        """Insert ``rows`` (values in ``_schema.COLUMN_NAMES`` order) in one transaction.
        Raises ``LogUnavailable`` when nothing could be written."""

    def due(self) -> bool:
        """The derived data is due to be brought up to date (see ``catch_up``)."""

    def catch_up(self) -> None:
        """Bring the derived data up to date now. Raises ``LogUnavailable``."""

    def build_indexes(self, stop: Callable[[], bool]) -> bool:
        """Build what ``indexes_pending`` says is left, giving way (the build interrupted
        and rolled back) as soon as ``stop()`` says so. ``True`` when none is left. Raises
        ``LogUnavailable``."""

    def checkpoint(self) -> None:
        """Fold the journal into the log if no other writer is active (never waits)."""

    def close(self) -> None:
        """Close the connection (reopened by the next ``write``)."""

    def forget(self) -> None:
        """Drop the connection without closing it (in a forked child: it is the parent's)."""
