"""Enforcing a transport's limits on its calls: check and reserve before, settle after.

Per call (on the app's thread for sync clients; in a worker thread for async ones, so the
event loop never waits on SQLite or a token count):

1. the limits that match the call, and its scope for each (cheap: the attribution, the
   provider, the model read from the body only when a limit needs it);
2. each one's charge: 1 request, or the call's worst case in tokens or USD (``_estimate``);
3. one :meth:`Counters.reserve` step: admitted (a :class:`Ticket` to settle later),
   or refused: ``reject`` → a 429 for the app, ``wait`` → sleep and ask again.

When the call's row is built (in the writer thread), its ticket is settled with the real
cost and tokens, a batch of calls in one step. A counters fault (the database locked past
its busy timeout, unwritable) never breaks a call: the call goes ahead unlimited and the
fault is reported (fail open).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._faults import get_logger, report_fault
from .._format import time_left
from ..log._url import DatabaseURL
from ._alerts import AlertCallback, Notifier
from ._counters import Charge, Counters, Hold, Refusal, Settlement, describe_amount, describe_usage, iso
from ._estimate import DEFAULT_MAX_OUTPUT_TOKENS, CallEstimate, read_call
from ._limit import Limit

__all__ = ["POLL_SECONDS", "Enforcer", "Refused", "Ticket", "counters_for"]

#: How soon a waiting call asks again when only calls in flight stand in its way (their
#: reservations settle, usually lower, as they end).
POLL_SECONDS = 0.25
#: A waiting call wakes this long after its window's end, so the clock it reads then is
#: surely in the next window.
_WAKE_MARGIN = 0.005


@dataclass(slots=True)
class Ticket:
    """An admitted call's reservations, settled when its row is built."""

    call_id: str
    holds: tuple[Hold, ...]
    enforcer: Enforcer

    def settle(self, cost_usd: float | None, total_tokens: int | None) -> None:
        self.enforcer.settle(self, cost_usd, total_tokens)


@dataclass(frozen=True, slots=True)
class Refused:
    """A call a ``reject`` limit refused (or a ``wait`` limit that cannot be met in time)."""

    limit: Limit
    scope: Mapping[str, str | None]
    #: ``budget_exceeded`` (usd) or ``rate_limited`` (requests, tokens).
    error_code: str
    message: str
    #: Seconds until the call could be admitted (the window's end, or a moment when only
    #: calls in flight stand in the way).
    retry_after: float
    resets_at: float


@dataclass(frozen=True, slots=True)
class _Wait:
    seconds: float


class _Fields(Mapping[str, str | None]):
    """A call's values for ``by`` and ``match``, each read on first need (the body is
    decoded only for a limit that asks for the model, or one that reserves)."""

    __slots__ = ("_enforcer", "_estimate", "_exchange", "_values")

    def __init__(self, enforcer: Enforcer, exchange: Any) -> None:
        self._enforcer = enforcer
        self._exchange = exchange
        self._estimate: CallEstimate | None = None
        attribution = exchange.attribution
        self._values: dict[str, str | None] = {
            "service": attribution.service or exchange.settings.service,
            "session": attribution.session,
            "provider": exchange.provider.name,
            "operation": exchange.operation,
            "host": exchange.host,
        }
        if attribution.user is not None:
            self._values["user"] = attribution.user

    @property
    def estimate(self) -> CallEstimate:
        estimate = self._estimate
        if estimate is None:
            ex = self._exchange
            estimate = self._estimate = read_call(
                ex.provider, ex.operation, ex.method, ex.path, ex.query, ex.host, ex.request_body
            )
        return estimate

    def __getitem__(self, name: str) -> str | None:
        values = self._values
        if name in values:
            return values[name]
        if name == "model":
            value = self.estimate.model
        elif name == "user":
            # As the row's user column: attributed, else the body's `user`, else the default.
            value = self.estimate.body_user or self._exchange.settings.user
        elif name == "key":
            value = self._enforcer.key_of(self._exchange)
        else:
            raise KeyError(name)
        values[name] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(("user", "service", "session", "model", "provider", "operation", "host", "key"))

    def __len__(self) -> int:
        return 8


_counters: dict[Path | DatabaseURL, Counters] = {}
_counters_lock = threading.Lock()
_enforcers: weakref.WeakSet[Enforcer] = weakref.WeakSet()


def counters_for(db: str | os.PathLike[str] | DatabaseURL) -> Counters:
    """This process's counters for the log at ``db`` (one per database, shared): in the
    SQLite file, or in the Postgres database of a ``postgresql://`` log."""
    target = db if isinstance(db, DatabaseURL) else Path(db).expanduser().absolute()
    found = _counters.get(target)
    if found is None:
        with _counters_lock:
            found = _counters.get(target)
            if found is None:
                if isinstance(target, DatabaseURL):
                    from ._postgres import PostgresCounters

                    found = _counters[target] = PostgresCounters(target)
                else:
                    from ._sqlite import SqliteCounters

                    found = _counters[target] = SqliteCounters(target)
    return found


class Enforcer:
    """One transport's limits: decides each call, settles it, sends its alerts."""

    def __init__(
        self,
        limits: Sequence[Limit],
        *,
        db: str | os.PathLike[str] | DatabaseURL,
        prices: Mapping[str, Mapping[str, float]] | None = None,
        on_alert: AlertCallback | None = None,
        webhook: str | None = None,
        counters: Counters | None = None,
        default_max_output: int = DEFAULT_MAX_OUTPUT_TOKENS,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limits = tuple(limits)
        self.counters = counters if counters is not None else counters_for(db)
        self.prices = prices or None
        self.notifier = Notifier(on_alert, webhook)
        self.default_max_output = default_max_output
        self.clock = clock
        self.sleep = sleep
        self._registered = False
        self._pending: list[Settlement] = []
        self._pending_lock = threading.Lock()
        self._unpriced_warned: set[tuple[str, str | None]] = set()
        _enforcers.add(self)
        if any(limit.metric != "requests" for limit in self.limits):
            _warm_up_in_background()

    # -- before the call --------------------------------------------------------------------

    def check(self, exchange: Any) -> Ticket | Refused | None:
        """Decide a call (sync): a ticket to settle, a refusal, or ``None`` (no limit
        applies, or the counters failed: the call goes ahead unlimited). Waits in place
        while a ``wait`` limit holds the call."""
        waited = 0.0
        fields = _Fields(self, exchange)
        while True:
            decision = self.decide(exchange, fields, waited)
            if not isinstance(decision, _Wait):
                return decision
            self.sleep(decision.seconds)
            waited += decision.seconds

    async def acheck(self, exchange: Any) -> Ticket | Refused | None:
        """:meth:`check` for async clients: each step runs in a worker thread and waits
        are ``anyio.sleep``, so the event loop is never blocked."""
        import anyio
        import anyio.to_thread

        waited = 0.0
        fields = _Fields(self, exchange)
        while True:
            decision = await anyio.to_thread.run_sync(self.decide, exchange, fields, waited)
            if not isinstance(decision, _Wait):
                return decision
            await anyio.sleep(decision.seconds)
            waited += decision.seconds

    def decide(self, exchange: Any, fields: _Fields, waited: float = 0.0) -> Ticket | Refused | _Wait | None:
        """One attempt: admit (and reserve), refuse, or say how long to wait."""
        try:
            return self._decide(exchange, fields, waited)
        except Exception as exc:
            report_fault("limits", "limits could not be checked; the call goes ahead unlimited", exc)
            return None

    def _decide(self, exchange: Any, fields: _Fields, waited: float) -> Ticket | Refused | _Wait | None:
        applicable = [limit for limit in self.limits if limit.matches(fields)]
        if not applicable:
            return None
        now = self.clock()
        if not self._registered:
            self.counters.register(self.limits, now)
            self._registered = True
        charges: list[Charge] = []
        for limit in applicable:
            amount = self._amount(limit, fields)
            scope = json.dumps({d: fields[d] for d in limit.by}, separators=(",", ":"), ensure_ascii=False)
            start, end = limit.window(now)
            if amount is None:  # unpriced, and this limit blocks what it cannot price
                charge = Charge(limit, scope, start, end, math.inf)
                return self._refuse(exchange, Refusal(charge, math.nan, math.nan), now, fields.estimate.model)
            charges.append(Charge(limit, scope, start, end, amount))
        verdict = self.counters.reserve(exchange.call_id, charges, now)
        if verdict.alerts:
            self.notifier.send(verdict.alerts)
        if verdict.admitted:
            return Ticket(exchange.call_id, verdict.holds, self) if verdict.holds else None
        refusals = verdict.refusals
        for refusal in refusals:
            limit = refusal.charge.limit
            if limit.action == "reject" or refusal.can_never_fit:
                return self._refuse(exchange, refusal, now)
        pause = max(self._pause(refusal, now) for refusal in refusals)
        for refusal in refusals:
            most = refusal.charge.limit.max_wait
            if most is not None and waited + pause > most:
                return self._refuse(exchange, refusal, now)
        return _Wait(pause)

    def _amount(self, limit: Limit, fields: _Fields) -> float | None:
        if limit.metric == "requests":
            return 1.0
        estimate = fields.estimate
        if limit.metric == "tokens":
            return float(estimate.worst_tokens(self.default_max_output))
        cost = estimate.worst_usd(self.default_max_output, self.prices)
        if cost is not None:
            return cost
        if limit.unpriced == "block":
            return None
        key = (fields["provider"] or "", estimate.model)
        if key not in self._unpriced_warned:
            self._unpriced_warned.add(key)
            get_logger().warning(
                "httptrack: no price is known for model %r (%s): usd limits count its calls as $0 "
                "(add a price with Settings(prices=...) or HTTPTRACK_PRICES, or refuse such calls "
                "with unpriced='block')",
                estimate.model,
                key[0],
            )
        return 0.0

    @staticmethod
    def _pause(refusal: Refusal, now: float) -> float:
        until_reset = max(refusal.charge.end - now, 0.0) + _WAKE_MARGIN
        if refusal.settled_fits:
            return min(POLL_SECONDS, until_reset)
        return until_reset

    def _refuse(self, exchange: Any, refusal: Refusal, now: float, model: str | None = None) -> Refused:
        charge = refusal.charge
        limit = charge.limit
        scope = json.loads(charge.scope)
        scope_text = (
            ", ".join(f"{k}={v if v is not None else '(none)'}" for k, v in scope.items()) or "all calls"
        )
        wait = max(charge.end - now, 0.0)
        retry_after = min(POLL_SECONDS * 4, wait) if refusal.settled_fits else wait
        if math.isnan(refusal.used):
            message = (
                f"httptrack refused this call: the limit {limit.key} blocks calls it cannot price, "
                f"and no price is known for model {model!r}"
            )
        else:
            usage = describe_usage(limit.metric, refusal.used, refusal.reserved, limit.amount)
            needs = (
                f"; this call needs up to {describe_amount(limit.metric, charge.amount)}"
                if limit.metric != "requests"
                else ""
            )
            message = (
                f"httptrack limit {limit.key} reached for {scope_text} ({usage}{needs}). "
                f"It resets at {iso(charge.end)} (in {time_left(wait)})."
            )
        try:
            self.notifier.send(self.counters.refused(exchange.call_id, refusal, now, message))
        except Exception as exc:
            report_fault("limits", "a refused call could not be recorded in the limit events", exc)
        return Refused(
            limit,
            scope,
            "budget_exceeded" if limit.metric == "usd" else "rate_limited",
            message,
            retry_after,
            charge.end,
        )

    # -- after the call ---------------------------------------------------------------------

    def settle(self, ticket: Ticket, cost_usd: float | None, total_tokens: int | None) -> None:
        """Queue a call's real figures (the writer calls :meth:`flush` after its batch)."""
        settlement = Settlement(ticket.call_id, ticket.holds, {"usd": cost_usd, "tokens": total_tokens})
        with self._pending_lock:
            self._pending.append(settlement)

    def flush(self) -> None:
        """Settle every queued call in one step."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            alerts = self.counters.reconcile(pending, self.clock())
        except Exception as exc:
            report_fault("limits", "limit reservations could not be settled (they expire on their own)", exc)
            return
        self.notifier.send(alerts)

    # -- scopes -------------------------------------------------------------------------------

    def key_of(self, exchange: Any) -> str | None:
        """``by="key"``: a salted hash of the call's credential, never the credential."""
        material = _credential(exchange)
        if material is None:
            return None
        salt = self.counters.key_salt()
        digest = hashlib.blake2b(material, digest_size=8, key=salt, person=b"httptrack-lim")
        return f"key-{digest.hexdigest()}"


def _credential(exchange: Any) -> bytes | None:
    """The request's credential headers and query parameters, as one byte string."""
    from urllib.parse import parse_qsl

    from .._redact import SECRET_PARAMS, is_secret_header

    parts = sorted(
        name.lower() + b":" + value
        for name, value in exchange.request_headers
        if name.lower() not in (b"cookie", b"cookie2")
        and is_secret_header(name.decode("latin-1"))
        and not name.lower().startswith(b"x-httptrack-")
    )
    if exchange.query:
        parts += sorted(
            f"{k}={v}".encode()
            for k, v in parse_qsl(exchange.query, keep_blank_values=True)
            if k.lower() in SECRET_PARAMS
        )
    return b"\n".join(parts) if parts else None


_warmed = threading.Event()


def _warm_up_in_background() -> None:
    """Price data and the token encoding load once per process, off the app's thread."""
    if _warmed.is_set():
        return
    _warmed.set()

    def run() -> None:
        from ._estimate import warm_up

        try:
            warm_up()
        except Exception as exc:
            report_fault("limits", "price data or token encodings could not be loaded", exc)

    threading.Thread(target=run, name="httptrack-limits-warm-up", daemon=True).start()


def _after_fork_in_child() -> None:
    # Locks another thread held at fork() stay held in the child; the parent's pending
    # settlements are the parent's to make.
    global _counters_lock
    _counters_lock = threading.Lock()
    for enforcer in list(_enforcers):
        enforcer._pending_lock = threading.Lock()
        enforcer._pending = []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
