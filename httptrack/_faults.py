"""Tracking faults: logged once, counted always, never raised into the app.

A fault is anything that goes wrong in httptrack's own work (database locked or
unwritable, cache unreadable, a payload no parser understands). The app's call proceeds
untouched; the first fault of each kind is logged as a warning (later ones at debug level,
so a persistent problem does not flood the log or burn CPU), and every one is counted.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    import logging

__all__ = [
    "FAULT_KINDS",
    "ROWS_DROPPED",
    "FaultKind",
    "fault_counts",
    "get_logger",
    "report_fault",
    "reset_faults",
]

#: Every kind of fault: the keys of :func:`fault_counts` (docs/architecture.md says what each
#: means). A new kind is added here and to that list; mypy rejects any other string.
FaultKind = Literal[
    "after_record",  # a post-record hook (storing a response in the cache) raised
    "autoload",  # install() / HTTPTRACK=1 could not track a client
    "begin",  # a request could not be tracked; it is sent untracked
    "cache_busy",  # the cache folder's index was locked by another process; retried later
    "cache_corrupt",  # a damaged cache entry was dropped
    "cache_loop",  # the loop guard sent a request the cache answered too often (cache_max_hits)
    "cache_open",  # the cache folder cannot be used; calls go uncached
    "cache_read",  # the cache could not be read; a miss
    "cache_replay",  # a cached response could not be replayed; the request is sent
    "cache_write",  # the cache could not be written; storing pauses
    "control_headers",  # an X-Httptrack-* header could not be read or removed
    "database",  # the call log could not be opened or written; rows wait and are retried
    "estimate",  # tokens could not be counted locally
    "flush_timeout",  # flush() gave up waiting for the writer
    "limit_alert",  # a limit alert could not reach on_alert or the webhook (it was logged)
    "limits",  # limits could not be checked or settled; the call went ahead unlimited
    "otel",  # spans or metrics could not be sent to OpenTelemetry (the calls are recorded)
    "pending_full",  # the log stayed unwritable too long; newer rows were dropped
    "pricing",  # price data could not be loaded
    "queue_full",  # the writer was too far behind; a call was not recorded
    "record",  # a call could not be queued or turned into a row
    "redact",  # Settings(redact=...) raised; that call's bodies were not stored
    "refused",  # the log refused a row (a constraint a newer schema added); the rest are written
    "request_body",  # a streamed request body could not be followed; it is not recorded
    "respond",  # a response could not be tracked
    "rewrite",  # a request could not be adjusted (include_usage); it was sent as it was
    "rollup",  # the daily rollups could not be updated (the calls are recorded)
    "rows_dropped",  # calls lost to the log, whatever the cause (counted beside the cause's kind)
    "search_index",  # the search index could not be updated (the calls are recorded)
    "spool",  # the crash-safe spool could not be made, written or recovered
    "writer",  # the writer thread (or process) hit an unexpected error, or none could start
]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

_logger: logging.Logger | None = None


def get_logger() -> logging.Logger:
    """The ``httptrack`` logger (``logging`` is imported on the first fault, not with
    httptrack: most programs never have one)."""
    global _logger
    if _logger is None:
        import logging

        _logger = logging.getLogger("httptrack")
    return _logger


def __getattr__(name: str) -> Any:  # `_faults.logger`, as before
    if name == "logger":
        return get_logger()
    raise AttributeError(name)


_lock = threading.Lock()
_counts: Counter[str] = Counter()


#: The fault kind that counts every call lost to the log, whatever the cause (the cause's
#: own kind is counted beside it).
ROWS_DROPPED: FaultKind = "rows_dropped"


def report_fault(
    kind: FaultKind, message: str, exc: BaseException | None = None, *, count: int = 1, dropped: int = 0
) -> None:
    """Count a fault of ``kind`` and log it (a warning the first time, debug after).
    ``count``: how many to count at once; ``dropped``: calls this fault cost the log (also
    counted under ``rows_dropped``)."""
    try:
        with _lock:
            first = not _counts[kind]
            _counts[kind] += count
            if dropped:
                _counts[ROWS_DROPPED] += dropped
        logger = get_logger()
        if first:
            # The machine's fault (a disk, a permission, a locked or damaged database): the
            # message says it all, and a traceback on the app's stderr would only alarm. A
            # traceback is for httptrack's own bugs; the machine's is at debug level.
            environmental = isinstance(exc, OSError) or type(exc).__module__ == "sqlite3"
            logger.warning(
                "httptrack: %s (%s); the app's calls are unaffected. Further faults of this "
                "kind are logged at debug level and counted in httptrack.fault_counts().",
                message,
                kind,
                exc_info=None if environmental else exc,
            )
            if environmental:
                logger.debug("httptrack: the fault above, in detail", exc_info=exc)
        else:
            logger.debug("httptrack: %s (%s)", message, kind, exc_info=exc)
    except Exception:  # pragma: no cover - logging itself broken: nothing more to do
        pass


def fault_counts() -> dict[str, int]:
    """How many tracking faults of each kind happened in this process."""
    with _lock:
        return dict(_counts)


def reset_faults() -> None:
    with _lock:
        _counts.clear()


def _after_fork_in_child() -> None:
    # A fork while another thread (the writer) held the lock would leave it held forever.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
