"""The counters seam: where the limits keep what was spent, reserved and alerted.

:class:`Counters` is the whole interface the engine uses; SQLite (in the call log's
database, ``_sqlite``) implements it today, and a shared engine (Postgres, Redis) is
another implementation of the same five methods, run against the same tests. Every method
is one atomic step across every thread and process that shares the store.

Vocabulary:

- a *meter* is what a limit counts (``usd/day by user``), whatever its amount and action:
  limits with one meter share its counters;
- a *scope* is the values of the meter's ``by`` dimensions for one call, as compact JSON
  (``{"user":"alice"}``; ``{}`` for a limit without ``by``);
- a *counter* is one meter, scope and window: ``used`` (settled: real costs, admitted
  requests) and ``reserved`` (the worst cases of calls admitted and not yet settled);
- a *charge* is one limit's share of one call: the amount it asks of one counter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ._limit import Limit, format_number

__all__ = [
    "Alert",
    "Charge",
    "CounterState",
    "Counters",
    "Event",
    "Hold",
    "Refusal",
    "Settlement",
    "Verdict",
    "describe_amount",
    "describe_usage",
    "iso",
]


def iso(seconds: float) -> str:
    """Unix seconds as ISO-8601 UTC (``2026-01-31T00:00:00Z``)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scope_text(scope: Mapping[str, str | None]) -> str:
    """A counter's scope for people: ``user=alice, model=gpt-4o``; ``all calls`` for a limit
    with no ``by``."""
    return ", ".join(f"{k}={v if v is not None else '(none)'}" for k, v in scope.items()) or "all calls"


def describe_amount(metric: str, value: float) -> str:
    """``$4.20``, ``60 requests``, ``200,000 tokens``."""
    if metric == "usd":
        return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.6f}".rstrip("0")
    count = round(value)
    return f"{count:,} {metric}" if count != 1 else f"1 {metric.removesuffix('s')}"


def describe_usage(metric: str, used: float, reserved: float, cap: float) -> str:
    """``$4.00 + $0.25 in flight of $5.00``, ``60 of 60 requests``."""
    if metric == "usd":
        shown = [describe_amount("usd", value) for value in (used, reserved, cap)]
    else:
        shown = [f"{round(used):,}", f"{round(reserved):,}", f"{round(cap):,} {metric}"]
    flight = f" + {shown[1]} in flight" if reserved else ""
    return f"{shown[0]}{flight} of {shown[2]}"


@dataclass(frozen=True, slots=True)
class Charge:
    """What one call asks of one limit's counter."""

    limit: Limit
    scope: str
    start: float
    end: float
    #: The call's worst case: USD or tokens reserved, or 1 request.
    amount: float


@dataclass(frozen=True, slots=True)
class Hold:
    """An admitted call's reservation on one counter, settled when the call's row is built."""

    meter: str
    metric: str
    scope: str
    start: float
    end: float
    amount: float
    #: The limits counting on this counter (whose alerts settling may fire).
    limits: tuple[Limit, ...]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A charge its counter cannot take: ``used + reserved + amount > limit``."""

    charge: Charge
    used: float
    reserved: float

    @property
    def can_never_fit(self) -> bool:
        """The call alone asks more than the limit allows: waiting cannot help."""
        return self.charge.amount > self.charge.limit.amount

    @property
    def settled_fits(self) -> bool:
        """It would fit were it not for calls still in flight (their reservations settle
        soon, usually lower): worth asking again shortly rather than at the window's end."""
        return self.used + self.charge.amount <= self.charge.limit.amount


@dataclass(frozen=True, slots=True)
class Alert:
    """A limit's fraction reached (``kind="threshold"``) or its first refused call in a
    window (``kind="exhausted"``), for one scope. Fired once, by one process."""

    kind: str
    limit: Limit
    scope: Mapping[str, str | None]
    used: float
    reserved: float
    fraction: float | None
    window_start: float
    window_end: float
    at: float
    call_id: str | None = None

    @property
    def text(self) -> str:
        """One line a person reads (the logger's message and a chat webhook's ``text``)."""
        limit = self.limit
        scope = (
            ", ".join(f"{k}={v if v is not None else '(none)'}" for k, v in self.scope.items()) or "all calls"
        )
        resets = iso(self.window_end)
        if self.kind == "exhausted":
            usage = describe_usage(limit.metric, self.used, self.reserved, limit.amount)
            return (
                f"httptrack limit {limit.key} reached for {scope} ({usage}): "
                f"calls are being refused until {resets}"
            )
        usage = describe_usage(limit.metric, self.used, 0.0, limit.amount)
        percent = format_number(round((self.fraction or 0) * 100, 2))
        return f"httptrack limit {limit.key}: {percent}% reached for {scope} ({usage}; resets {resets})"

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body."""
        limit = self.limit
        return {
            "text": self.text,
            "kind": self.kind,
            "limit": limit.key,
            "metric": limit.metric,
            "action": limit.action,
            "scope": dict(self.scope),
            "used": self.used,
            "reserved": self.reserved,
            "limit_value": limit.amount,
            "fraction": self.fraction,
            "window": {"per": limit.per, "start": iso(self.window_start), "end": iso(self.window_end)},
            "at": iso(self.at),
            "call_id": self.call_id,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to :meth:`Counters.reserve`."""

    admitted: bool
    #: When not admitted: every charge that did not fit (nothing was reserved).
    refusals: tuple[Refusal, ...] = ()
    #: When admitted: what to settle once the call's cost is known.
    holds: tuple[Hold, ...] = ()
    #: Alerts this step fired (requests limits count at admission).
    alerts: tuple[Alert, ...] = ()


@dataclass(frozen=True, slots=True)
class Settlement:
    """One call's real figures, for its holds: ``{"usd": 0.0123, "tokens": 812}``. A
    metric missing (or ``None``) settles at 0."""

    call_id: str
    holds: tuple[Hold, ...]
    actual: Mapping[str, float | None]


@dataclass(frozen=True, slots=True)
class CounterState:
    """One limit's counter for one scope, in the current window (``httptrack limits``)."""

    limit: str
    meter: str
    metric: str
    amount: float
    action: str
    scope: Mapping[str, str | None]
    window_start: float
    window_end: float
    used: float
    reserved: float
    calls: int
    last_seen: str | None = None

    @property
    def remaining(self) -> float:
        """What is left to spend or reserve in this window."""
        return max(self.amount - self.used - self.reserved, 0.0)

    @property
    def share(self) -> float:
        """How much of the limit is used or reserved (1.0: all of it)."""
        return (self.used + self.reserved) / self.amount if self.amount else 1.0

    @property
    def scope_text(self) -> str:
        return scope_text(self.scope)

    def as_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "metric": self.metric,
            "action": self.action,
            "scope": dict(self.scope),
            "used": self.used,
            "reserved": self.reserved,
            "limit_value": self.amount,
            "remaining": self.remaining,
            "calls": self.calls,
            "window_start": iso(self.window_start),
            "resets_at": iso(self.window_end),
        }


@dataclass(frozen=True, slots=True)
class Event:
    """A row of the events table: a refused call (``blocked``) or an alert fired."""

    id: int
    at: str
    kind: str
    limit: str
    scope: Mapping[str, str | None]
    used: float | None
    reserved: float | None
    amount: float | None
    fraction: float | None
    requested: float | None
    call_id: str | None
    message: str | None
    window_end: str | None = None


class Counters(Protocol):
    """Where limits count. Each method is atomic across threads and processes."""

    def register(self, limits: Sequence[Limit], now: float) -> None:
        """Record the limits in force (so the CLI and UI can list them with their counters)."""

    def key_salt(self) -> bytes:
        """The store's secret salt for ``by="key"`` scopes (hashes of API keys)."""
        ...

    def reserve(self, call_id: str, charges: Sequence[Charge], now: float) -> Verdict:
        """Admit the call if every blocking charge fits (``used + reserved + amount <=
        limit``; ``alert`` limits always fit), then, in the same step, reserve its usd and
        tokens charges (expiring, so a killed process's reservations do not hold forever)
        and count its requests. Nothing is reserved for a refused call."""
        ...

    def refused(self, call_id: str, refusal: Refusal, now: float, message: str) -> tuple[Alert, ...]:
        """Record a refused call in the events table; the first refusal of a window and
        scope fires the limit's ``exhausted`` alert (returned when this process fired it)."""
        ...

    def reconcile(self, settlements: Sequence[Settlement], now: float) -> tuple[Alert, ...]:
        """Replace calls' reservations by their real figures, in one step; return the
        threshold alerts this fired."""
        ...

    def usage(self, now: float) -> list[CounterState]:
        """Every registered limit's counters in their current windows."""
        ...

    def events(self, limit: int = 100, kind: str | None = None) -> list[Event]:
        """The latest refusals and alerts, newest first."""
        ...

    def close(self) -> None: ...
