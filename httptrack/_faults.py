"""Tracking faults: logged once, counted always, never raised into the app.

A fault is anything that goes wrong in httptrack's own work (database locked or
unwritable, cache unreadable, a payload no parser understands). The app's call proceeds
untouched; the first fault of each kind is logged as a warning (later ones at debug level,
so a persistent problem does not flood the log or burn CPU), and every one is counted.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

__all__ = ["fault_counts", "logger", "report_fault", "reset_faults"]

logger = logging.getLogger("httptrack")

_lock = threading.Lock()
_counts: Counter[str] = Counter()


def report_fault(kind: str, message: str, exc: BaseException | None = None) -> None:
    """Count a fault of ``kind`` and log it (a warning the first time, debug after)."""
    try:
        with _lock:
            _counts[kind] += 1
            first = _counts[kind] == 1
        if first:
            logger.warning(
                "httptrack: %s (%s); the app's calls are unaffected. Further faults of this "
                "kind are logged at debug level and counted in httptrack.fault_counts().",
                message,
                kind,
                exc_info=exc,
            )
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
