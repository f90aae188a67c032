"""One vocabulary for lengths of time and moments: ``90s``, ``30m``, ``1.5h``, ``7d``, ``1w``.

Settings read TTLs with it (``HTTPTRACK_CACHE_TTL=chat=2h``, where a bare number is seconds),
and the log reads "since"/"until" with it (``--since 2h``: two hours ago, where a unit is
required, since a bare number could be a year).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["UNIT_SECONDS", "duration_seconds", "parse_when"]

#: Seconds in each unit (case does not matter: ``2H`` is ``2h``).
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

# Compiled on first use (re caches it), not when `import httptrack` loads this module.
_DURATION = r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]?)\s*"


def duration_seconds(text: str, *, unit_required: bool = False) -> float | None:
    """The seconds ``text`` says (``90s``, ``30m``, ``1.5h``, ``7d``, ``1w``; a bare number is
    seconds unless ``unit_required``), or ``None`` when it is not a duration."""
    match = re.fullmatch(_DURATION, text)
    if match is None:
        return None
    number, unit = match.groups()
    if not unit and unit_required:
        return None
    per_unit = UNIT_SECONDS.get(unit.lower() or "s")
    return None if per_unit is None else float(number) * per_unit


def parse_when(value: str | datetime, *, now: datetime | None = None) -> str:
    """``2h``/``7d`` (that long ago), an ISO date or datetime, or a ``datetime`` → the
    ``started_at`` text form, for comparisons in SQL."""
    from datetime import UTC, datetime, timedelta  # not with `import httptrack`: settings need none

    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        seconds = duration_seconds(value, unit_required=True)
        if seconds is not None:
            moment = (now or datetime.now(UTC)) - timedelta(seconds=seconds)
        else:
            try:
                moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(
                    f"not a time: {value!r} (use e.g. 2h, 7d, 2026-01-31 or 2026-01-31T12:00)"
                ) from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
