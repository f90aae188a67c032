"""Spend and rate limits: budgets reserved before a call is sent, settled after it.

- ``_limit``: :class:`Limit` (validation, windows, its text form);
- ``_grammar``: ``HTTPTRACK_LIMITS`` text and limits files;
- ``_estimate``: a call's worst case (tokens counted locally, the stated max output, prices);
- ``_counters``: the counters seam (a ``Protocol``) and what passes through it;
- ``_sqlite``: the counters in the call log's SQLite database;
- ``_engine``: checking, waiting, refusing and settling calls for a transport;
- ``_alerts``: the logger, the ``on_alert`` callback and the webhook.

See docs/limits.md for what is guaranteed and what is not.
"""

from __future__ import annotations

from ._grammar import coerce_limits, load_limits_file, parse_limit, parse_limits
from ._limit import Limit, LimitError

__all__ = [
    "Limit",
    "LimitError",
    "coerce_limits",
    "flush_alerts",
    "load_limits_file",
    "parse_limit",
    "parse_limits",
]


def flush_alerts(timeout: float | None = 30.0) -> bool:
    """Wait until this process's queued alerts have gone to ``on_alert`` and the webhook
    (they are delivered in a background thread); ``False`` if ``timeout`` ran out."""
    from ._alerts import flush_alerts as flush

    return flush(timeout)
