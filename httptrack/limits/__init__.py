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

__all__ = ["Limit", "LimitError", "coerce_limits", "load_limits_file", "parse_limit", "parse_limits"]
