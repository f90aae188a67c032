"""``Limit``: one spend or rate limit, validated once, when it is made.

A limit is a *metric* (``usd``, ``requests`` or ``tokens``) capped at an *amount* per
*window*, counted separately for each *scope* (the values of its ``by`` dimensions),
over the calls its ``match`` selects. Its text form is the ``HTTPTRACK_LIMITS`` grammar
(``str(limit)`` parses back to an equal limit), which also names it in the CLI, in alerts
and in the database.

Windows are fixed, not sliding, and computed from the UTC clock of the process that
checks the call:

- ``second``, ``minute``, ``hour`` and a number of seconds: epoch-aligned (a 30-second
  window starts at :00 and :30 of every minute);
- ``day``: midnight to midnight UTC; ``week``: Monday 00:00 UTC to the next Monday;
  ``month``: the 1st 00:00 UTC to the 1st of the next month.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from .._errors import SettingsError
from .._time import duration_seconds

__all__ = [
    "ACTIONS",
    "DIMENSIONS",
    "MATCH_FIELDS",
    "METRICS",
    "UNITS",
    "Limit",
    "LimitError",
    "format_number",
    "parse_period",
    "window_bounds",
]

METRICS = ("usd", "requests", "tokens")
#: What ``by`` may name, in the order scopes are written.
DIMENSIONS = ("user", "service", "session", "model", "provider", "key")
#: What ``match`` may filter on.
MATCH_FIELDS = ("user", "service", "session", "model", "provider", "operation", "host")
ACTIONS = ("reject", "wait", "alert")
UNPRICED = ("allow", "block")
#: Window units and their length in seconds (``None``: calendar months, of varying length).
UNITS: dict[str, int | None] = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
    "month": None,
}
_UNIT_ALIASES = {
    "sec": "second",
    "secs": "second",
    "min": "minute",
    "mins": "minute",
    "hr": "hour",
    "hrs": "hour",
    **{f"{unit}s": unit for unit in UNITS},
}
#: A plain second/minute/hour/day is the same window as that many seconds: one name for both.
_SECONDS_TO_UNIT = {1.0: "second", 60.0: "minute", 3600.0: "hour", 86400.0: "day"}
#: 1970-01-01 was a Thursday; weeks start on Monday, 4 days later.
_MONDAY = 4 * 86400
_DEFAULT_ALERT_AT = (0.8, 1.0)
#: Fractions above this are surely percentages written as whole numbers (80 for 80%).
_MAX_FRACTION = 10.0


class LimitError(SettingsError):
    """A limit (``Limit(...)``, ``HTTPTRACK_LIMITS`` or a limits file) that httptrack cannot
    use; the message says which part and what would be accepted."""


def format_number(value: float) -> str:
    """``5`` for 5.0, ``0.25``, ``1e-07``: the shortest text that reads back as ``value``."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def parse_period(value: object, name: str = "per") -> tuple[str | float, float | None]:
    """``(per, seconds)``: a unit name (``seconds`` ``None`` for months) or a positive
    number of seconds. Accepts unit names and plurals, numbers, and ``30s``/``5m``/``2h``/``1d``."""
    if isinstance(value, bool):
        raise LimitError(f"{name}: expected a unit or a number of seconds, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        text = _UNIT_ALIASES.get(text, text)
        if text in UNITS:
            length = UNITS[text]
            return text, None if length is None else float(length)
        # A length of time in httptrack's one vocabulary (30, 90s, 5m, 2h, 1d): epoch-aligned
        # windows of that many seconds.
        found = duration_seconds(text)
        if found is None:
            units = ", ".join(UNITS)
            raise LimitError(
                f"{name}: unknown period {value!r} (expected {units}, or seconds such as 30, 30s, 5m, 2h)"
            )
        seconds = found
    else:
        raise LimitError(f"{name}: expected a unit or a number of seconds, got {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise LimitError(f"{name}: a window must last more than 0 seconds, got {value!r}")
    unit = _SECONDS_TO_UNIT.get(seconds)
    return (unit, seconds) if unit else (seconds, seconds)


def window_bounds(per: str | float, seconds: float | None, now: float) -> tuple[float, float]:
    """The window (start, end) in Unix seconds that ``now`` falls in (see the module's doc)."""
    if seconds is None:  # calendar month, UTC
        day = datetime.fromtimestamp(now, UTC)
        first = calendar.timegm((day.year, day.month, 1, 0, 0, 0))
        year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
        return float(first), float(calendar.timegm((year, month, 1, 0, 0, 0)))
    if per == "week":
        start = math.floor((now - _MONDAY) / seconds) * seconds + _MONDAY
    else:
        start = math.floor(now / seconds) * seconds
    return start, start + seconds


def _amount(metric: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LimitError(f"Limit: {metric} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise LimitError(f"Limit: {metric} must be a number of at least 0, got {value!r}")
    if metric != "usd" and not number.is_integer():
        raise LimitError(f"Limit: {metric} must be a whole number, got {value!r}")
    return number


def _dimensions(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    parts: Iterable[Any] = value.split(",") if isinstance(value, str) else value  # type: ignore[assignment]
    try:
        names = [str(part).strip().lower() for part in parts]
    except TypeError:
        raise LimitError(
            f"Limit: by must be a name or names such as ('user', 'model'), got {value!r}"
        ) from None
    names = [n for n in names if n]
    unknown = [n for n in names if n not in DIMENSIONS]
    if unknown:
        raise LimitError(f"Limit: by: unknown {unknown[0]!r} (known: {', '.join(DIMENSIONS)})")
    return tuple(d for d in DIMENSIONS if d in names)  # one order, so equal limits count together


def _matchers(value: object) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise LimitError(f"Limit: match must be a mapping such as {{'provider': 'openai'}}, got {value!r}")
    pairs = []
    for field, wanted in value.items():
        key = str(field).strip().lower()
        if key not in MATCH_FIELDS:
            raise LimitError(f"Limit: match: unknown field {field!r} (known: {', '.join(MATCH_FIELDS)})")
        options = (wanted,) if isinstance(wanted, str) else wanted
        try:
            texts = tuple(sorted({str(option) for option in options}))
        except TypeError:
            raise LimitError(
                f"Limit: match[{key!r}]: expected text or a list of texts, got {wanted!r}"
            ) from None
        if not texts or any(not t for t in texts):
            raise LimitError(f"Limit: match[{key!r}]: empty value")
        pairs.append((key, texts))
    return tuple(sorted(pairs))


def _pattern(options: tuple[str, ...]) -> re.Pattern[str]:
    # Exact values and `*` wildcards only (no fnmatch ? or [..]: model names hold neither
    # meaning), case-sensitive as the values are recorded.
    alternatives = "|".join(".*".join(re.escape(part) for part in option.split("*")) for option in options)
    return re.compile(f"(?s:{alternatives})")


def _fractions(value: object) -> tuple[float, ...]:
    if value is None:
        return ()
    items = (value,) if isinstance(value, int | float) else value
    try:
        numbers = list(items)  # type: ignore[call-overload]
    except TypeError:
        raise LimitError(f"Limit: alert_at must be fractions such as (0.8, 1.0), got {value!r}") from None
    fractions = set()
    for item in numbers:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise LimitError(f"Limit: alert_at must be fractions such as (0.8, 1.0), got {value!r}")
        if not 0 < item <= _MAX_FRACTION:
            raise LimitError(
                f"Limit: alert_at: {item!r} is not a fraction of the limit (0.8 means 80%; "
                f"from just above 0 to {_MAX_FRACTION:g})"
            )
        fractions.add(float(item))
    return tuple(sorted(fractions))


class Limit:
    """A spend or rate limit on the calls a transport tracks.

    ```python
    Limit(usd=5.0, per="day", by="user")                            # a budget per user
    Limit(requests=60, per="minute", by="service", action="wait")   # a rate limit
    Limit(tokens=200_000, per="hour", by=("user", "model"), match={"provider": "openai"})
    Limit(usd=100, per="month", action="alert", alert_at=(0.5, 0.8, 1.0))
    ```

    - exactly one of ``usd``, ``requests``, ``tokens``: the amount allowed per window;
    - ``per``: ``"second"``, ``"minute"``, ``"hour"``, ``"day"``, ``"week"``, ``"month"``
      (calendar windows in UTC) or a number of seconds (epoch-aligned windows);
    - ``by``: ``None`` (one counter for all calls) or any of ``user``, ``service``,
      ``session``, ``model``, ``provider``, ``key`` (a salted hash of the API key, never
      the key): one counter per combination of values;
    - ``match``: which calls count, e.g. ``{"provider": "openai", "model": "gpt-4*"}``
      (exact values or ``*`` wildcards; a list means any of them; a call without the
      field does not match). Fields: those of ``by`` but ``key``, plus ``operation`` and
      ``host``;
    - ``action``: ``"reject"`` (the call is refused with a 429, nothing sent), ``"wait"``
      (the call waits until the window allows it) or ``"alert"`` (never blocks);
    - ``alert_at``: fractions of the amount at which an alert fires, once per window and
      scope across every process sharing the log (``()``: no alerts);
    - ``unpriced`` (``usd`` only): a call whose cost httptrack cannot estimate (a model
      without a known price) is ``"allow"``-ed and counted as 0, with a warning, or
      ``"block"``-ed;
    - ``max_wait`` (``action="wait"`` only): seconds a call may wait before it is refused
      instead (default: as long as it takes).
    """

    __slots__ = (
        "_patterns",
        "action",
        "alert_at",
        "amount",
        "by",
        "key",
        "match",
        "max_wait",
        "meter",
        "metric",
        "per",
        "seconds",
        "unpriced",
    )

    _patterns: tuple[tuple[str, re.Pattern[str]], ...]
    metric: str
    amount: float
    per: str | float
    seconds: float | None
    by: tuple[str, ...]
    match: tuple[tuple[str, tuple[str, ...]], ...]
    action: str
    alert_at: tuple[float, ...]
    unpriced: str
    max_wait: float | None
    #: The limit's text form (``usd=5/day by user``): its name everywhere.
    key: str
    #: What is counted, whatever the amount and action: limits with the same meter share
    #: their counters (``usd=80/month alert`` beside ``usd=100/month``).
    meter: str

    def __init__(
        self,
        *,
        usd: float | None = None,
        requests: int | None = None,
        tokens: int | None = None,
        per: str | float,
        by: str | Iterable[str] | None = None,
        match: Mapping[str, str | Iterable[str]] | None = None,
        action: str = "reject",
        alert_at: float | Iterable[float] | None = _DEFAULT_ALERT_AT,
        unpriced: str = "allow",
        max_wait: float | None = None,
    ) -> None:
        given = [
            (m, v) for m, v in (("usd", usd), ("requests", requests), ("tokens", tokens)) if v is not None
        ]
        if len(given) != 1:
            named = ", ".join(m for m, _ in given) or "none"
            raise LimitError(f"Limit: give exactly one of usd=, requests=, tokens= (got {named})")
        metric, value = given[0]
        set_ = object.__setattr__
        set_(self, "metric", metric)
        set_(self, "amount", _amount(metric, value))
        per_value, seconds = parse_period(per, "Limit: per")
        set_(self, "per", per_value)
        set_(self, "seconds", seconds)
        set_(self, "by", _dimensions(by))
        matchers = _matchers(match)
        set_(self, "match", matchers)
        set_(self, "_patterns", tuple((f, _pattern(options)) for f, options in matchers))
        if action not in ACTIONS:
            raise LimitError(f"Limit: action must be one of {', '.join(ACTIONS)}, got {action!r}")
        set_(self, "action", action)
        set_(self, "alert_at", _fractions(alert_at))
        if unpriced not in UNPRICED:
            raise LimitError(f"Limit: unpriced must be 'allow' or 'block', got {unpriced!r}")
        if unpriced != "allow" and metric != "usd":
            raise LimitError("Limit: unpriced applies to usd limits only")
        set_(self, "unpriced", unpriced)
        if max_wait is not None:
            if action != "wait":
                raise LimitError("Limit: max_wait applies to action='wait' only")
            if isinstance(max_wait, bool) or not isinstance(max_wait, int | float) or not max_wait >= 0:
                raise LimitError(f"Limit: max_wait must be a number of seconds, got {max_wait!r}")
            max_wait = float(max_wait)
        set_(self, "max_wait", max_wait)
        meter = f"{metric}/{self._per_text()}"
        if self.by:
            meter += " by " + ",".join(self.by)
        if matchers:
            meter += " match " + ",".join(f"{f}={'|'.join(options)}" for f, options in matchers)
        set_(self, "meter", meter)
        set_(self, "key", self._text())

    # -- what a user reads -----------------------------------------------------------------

    @property
    def usd(self) -> float | None:
        return self.amount if self.metric == "usd" else None

    @property
    def requests(self) -> int | None:
        return int(self.amount) if self.metric == "requests" else None

    @property
    def tokens(self) -> int | None:
        return int(self.amount) if self.metric == "tokens" else None

    @property
    def blocks(self) -> bool:
        """Whether a call can be held back by this limit (``reject`` or ``wait``)."""
        return self.action != "alert"

    def _per_text(self) -> str:
        return self.per if isinstance(self.per, str) else f"{format_number(self.per)}s"

    def _text(self) -> str:
        head, _, tail = self.meter.partition("/")
        text = f"{head}={format_number(self.amount)}/{tail}"
        if self.action != "reject":
            text += f" {self.action}"
        if self.alert_at != _DEFAULT_ALERT_AT:
            text += " alert_at=" + (",".join(map(format_number, self.alert_at)) or "none")
        if self.unpriced != "allow":
            text += f" unpriced={self.unpriced}"
        if self.max_wait is not None:
            text += f" max_wait={format_number(self.max_wait)}s"
        return text

    def __str__(self) -> str:
        return self.key

    def __repr__(self) -> str:
        shown = self.as_dict()
        if shown["action"] == "reject":
            del shown["action"]
        if tuple(shown["alert_at"]) == _DEFAULT_ALERT_AT:
            del shown["alert_at"]
        if shown.get("unpriced") == "allow":
            del shown["unpriced"]
        if len(shown.get("by", ())) == 1:
            shown["by"] = shown["by"][0]
        return f"Limit({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Limit):
            return NotImplemented
        return self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Limit is immutable")

    def as_dict(self) -> dict[str, Any]:
        """The keyword arguments that make this limit again (also a limits file's entry)."""
        shown: dict[str, Any] = {self.metric: self.usd if self.metric == "usd" else int(self.amount)}
        shown["per"] = self.per
        if self.by:
            shown["by"] = list(self.by)
        if self.match:
            shown["match"] = {
                f: options[0] if len(options) == 1 else list(options) for f, options in self.match
            }
        shown["action"] = self.action
        shown["alert_at"] = list(self.alert_at)
        if self.metric == "usd":
            shown["unpriced"] = self.unpriced
        if self.max_wait is not None:
            shown["max_wait"] = self.max_wait
        return shown

    def __reduce__(self) -> tuple[Any, ...]:
        return _from_dict, (self.as_dict(),)

    # -- what the engine asks --------------------------------------------------------------

    def window(self, now: float) -> tuple[float, float]:
        """The window ``now`` falls in: ``(start, end)`` in Unix seconds."""
        return window_bounds(self.per, self.seconds, now)

    def matches(self, fields: Mapping[str, str | None]) -> bool:
        """Whether a call with these field values counts against this limit."""
        for field, pattern in self._patterns:
            value = fields.get(field)
            if value is None or pattern.fullmatch(value) is None:
                return False
        return True


def _from_dict(kwargs: dict[str, Any]) -> Limit:
    return Limit(**kwargs)
