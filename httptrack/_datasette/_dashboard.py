"""The figures and charts of the ``/-/httptrack`` dashboard, read with ``Log`` (the same
code as ``httptrack stats``) on datasette's read-only connection.

A period is the last N days *by date* (UTC): today and the N-1 days before it, i.e.
``httptrack stats --since <first day>``, which the page names so that any figure can be
checked there. Nothing is left out: groups beyond the first few are summed into one
"other" row, and a group with errors is always shown on its own."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from markupsafe import Markup

from .._format import count, duration, limit_amount, money, percent, short_time
from ..log._reader import Log
from ._charts import ERROR_COLOR, PALETTE, column_chart, stacked_bar_chart

__all__ = ["BREAKDOWNS", "MAX_DAYS", "PERIODS", "TOP", "dashboard_context", "parse_days"]

#: Groups shown by name in a chart or table; the rest are summed into one "other" line.
TOP = 10
#: The periods offered (days; 0: everything).
PERIODS = ((1, "today"), (7, "7 days"), (30, "30 days"), (90, "90 days"), (0, "all"))
#: A longer period than this is everything (a log older than 100 years is not a thing).
MAX_DAYS = 36_500
#: ``?by=`` of the breakdown table: ``stats(by=...)`` groups, with their labels.
BREAKDOWNS = {
    "requested_model": "model asked for",
    "model": "model that answered",
    "provider": "provider",
    "user": "user",
    "service": "service",
    "operation": "operation",
}
#: Recent failures listed in the errors panel.
RECENT_ERRORS = 10


def parse_days(value: str | None) -> int:
    """``?days=``: a whole number of days, 0 for everything, beyond ``MAX_DAYS`` the same
    as everything. Raises ``ValueError`` with a message for anything else."""
    if value is None or value == "":
        return 30
    try:
        days = int(value)
    except ValueError:
        raise ValueError(f"days must be a whole number of days (0 for everything), not {value!r}") from None
    if days < 0:
        raise ValueError(f"days cannot be negative: {days}")
    return 0 if days > MAX_DAYS else days


def _first_day(days: int, today: date) -> date | None:
    return today - timedelta(days=days - 1) if days else None


def _day_series(per_day: list[dict[str, Any]], first: date | None, today: date) -> list[dict[str, Any]]:
    """Every day from ``first`` (else the first day with calls) to today, oldest first; a
    day without calls is a day of zeros, drawn as such."""
    by_day = {g["day"]: g for g in per_day if g["day"]}
    if not by_day and first is None:
        return []
    start = first or date.fromisoformat(min(by_day))
    end = max(today, date.fromisoformat(max(by_day))) if by_day else today
    series = []
    day = start
    while day <= end:
        key = day.isoformat()
        series.append(
            by_day.get(key) or {"day": key, "calls": 0, "errors": 0, "cache_hits": 0, "cost_usd": 0.0}
        )
        day += timedelta(days=1)
    return series


def _with_other(groups: list[dict[str, Any]], key: str, *, failing: bool = False) -> list[dict[str, Any]]:
    """The first ``TOP`` groups, and with ``failing`` the ``TOP`` others with the most
    errors, then one "other" group summing the rest (errors included), so that the lines
    add up to the total (a single group left over is shown as itself). Order is kept."""
    picked = {id(g) for g in groups[:TOP]}
    if failing:
        erring = sorted((g for g in groups[TOP:] if g["errors"]), key=lambda g: -g["errors"])
        picked |= {id(g) for g in erring[:TOP]}
    shown = [g for g in groups if id(g) in picked]
    rest = [g for g in groups if id(g) not in picked]
    if len(rest) == 1:
        shown.append(rest[0])
    elif rest:
        other: dict[str, Any] = {key: None, "other": len(rest)}
        for field in (
            "calls",
            "errors",
            "cache_hits",
            "input_tokens",
            "output_tokens",
            "total_tokens",
            "unpriced",
        ):
            other[field] = sum(g.get(field) or 0 for g in rest)
        for field in ("cost_usd", "cost_saved_usd"):
            values = [g[field] for g in rest if g.get(field) is not None]
            other[field] = sum(values) if values else None
        other["error_rate"] = round(other["errors"] / other["calls"], 4) if other["calls"] else None
        other.update(p50_latency_ms=None, p95_latency_ms=None)
        shown.append(other)
    return shown


def _label(group: dict[str, Any], key: str, none: str = "(none)") -> str:
    if group.get("other"):
        return f"{group['other']} others"
    return none if group.get(key) is None else str(group[key])


def _breakdown_rows(groups: list[dict[str, Any]], by: str, total_cost: float) -> list[dict[str, str]]:
    rows = []
    for g in _with_other(groups, by, failing=True):
        cost = g["cost_usd"]
        rows.append(
            {
                "label": _label(g, by),
                "value": "" if g.get("other") or g.get(by) is None else str(g[by]),
                "calls": count(g["calls"]),
                "errors": count(g["errors"]),
                "error_rate": percent(g["error_rate"]),
                "has_errors": "1" if g["errors"] else "",
                "cache_hits": count(g["cache_hits"]),
                "input_tokens": count(g["input_tokens"]),
                "output_tokens": count(g["output_tokens"]),
                "cost": money(cost),
                "share": percent((cost or 0) / total_cost) if total_cost else "-",
                "p50": duration(g["p50_latency_ms"]),
                "p95": duration(g["p95_latency_ms"]),
            }
        )
    return rows


def _recent_errors(conn: sqlite3.Connection, since: str | None) -> list[dict[str, str]]:
    """The newest failed calls of the period (``idx_calls_status`` finds them)."""
    cursor = conn.execute(
        "SELECT id, started_at, provider, model, http_status, outcome, error_code, error_message, "
        "user, service FROM calls WHERE status = 'error' AND started_at >= ? "
        "ORDER BY started_at DESC LIMIT ?",
        [since or "", RECENT_ERRORS],
    )
    names = [d[0] for d in cursor.description]
    out = []
    for values in cursor.fetchall():
        r = dict(zip(names, values, strict=True))
        what = f"HTTP {r['http_status']}" if r["http_status"] and r["outcome"] in (None, "complete") else ""
        what = what or (r["outcome"] or "error").replace("_", " ")
        out.append(
            {
                "id": r["id"],
                "time": short_time(r["started_at"]),
                "provider": r["provider"] or "-",
                "model": r["model"] or "-",
                "what": what,
                "code": r["error_code"] or "",
                "message": " ".join((r["error_message"] or "").split())[:160],
                "who": " / ".join(x for x in (r["user"], r["service"]) if x),
            }
        )
    return out


def dashboard_context(
    conn: sqlite3.Connection, path: str, days: int, by: str = "requested_model", *, today: date | None = None
) -> dict[str, Any]:
    today = today or datetime.now(UTC).date()
    log = Log(path, connection=conn)
    first = _first_day(days, today)
    since = first.isoformat() if first else None
    filters: dict[str, Any] = {"since": since} if since else {}
    totals = log.totals(**filters)
    per_day = _day_series(log.stats(by="day", percentiles=False, **filters), first, today)
    per_model = log.stats(by="requested_model", percentiles=False, **filters)
    per_user = log.stats(by="user", percentiles=False, **filters)
    groups = log.stats(by=by, **filters)
    total_cost = totals["cost_usd"] or 0
    tokens = _with_other(
        sorted(per_model, key=lambda g: -((g["input_tokens"] or 0) + (g["output_tokens"] or 0))),
        "requested_model",
    )
    command = "httptrack stats" + (f" --since {since}" if since else "")
    return {
        "since": since,
        "command": command,
        "by": by,
        "by_label": BREAKDOWNS[by],
        "breakdowns": BREAKDOWNS,
        "periods": PERIODS,
        "figures": [
            ("Calls", count(totals["calls"]), "calls"),
            ("Cost", money(totals["cost_usd"] or 0), "cost"),
            ("Saved by the cache", money(totals["cost_saved_usd"] or 0), "saved"),
            ("Tokens", count(totals["total_tokens"]), "tokens"),
            ("Errors", f"{count(totals['errors'])} ({percent(totals['error_rate'])})", "errors"),
            (
                "Latency p50 / p95",
                f"{duration(totals['p50_latency_ms'])} / {duration(totals['p95_latency_ms'])}",
                "latency",
            ),
        ],
        "has_errors": bool(totals["errors"]),
        "cost_per_day": Markup(
            column_chart(
                [(g["day"], g["cost_usd"] or 0.0) for g in per_day],
                fmt=money,
                axis=_dollars,
                title="Cost per day (USD)",
                width=1200,
                height=170,
            )
        ),
        "calls_per_day": Markup(
            stacked_bar_chart(
                [
                    (g["day"], [g["calls"] - g["errors"] - g["cache_hits"], g["cache_hits"], g["errors"]])
                    for g in reversed(per_day[-14:])
                ],
                series=["answered", "from cache", "errors"],
                colors=[PALETTE[0], PALETTE[5], ERROR_COLOR],
                fmt=lambda v: count(v),
                title="Calls per day",
                width=600,
            )
        ),
        "tokens_per_model": Markup(
            stacked_bar_chart(
                [
                    (
                        _label(g, "requested_model", "(unknown)"),
                        [g["input_tokens"] or 0, g["output_tokens"] or 0],
                    )
                    for g in tokens
                ],
                series=["input tokens", "output tokens"],
                fmt=lambda v: count(v),
                title="Tokens per model",
                width=1200,
            )
        ),
        "cost_per_user": Markup(
            stacked_bar_chart(
                [(_label(g, "user"), [g["cost_usd"] or 0.0]) for g in _with_other(per_user, "user")],
                series=["cost"],
                fmt=money,
                title="Cost per user",
                width=600,
            )
        ),
        "breakdown": _breakdown_rows(groups, by, total_cost),
        "total": _breakdown_rows([{**totals, by: "total"}], by, total_cost)[0] if len(groups) > 1 else None,
        "errors": _recent_errors(conn, since),
        "limits": _limits(conn),
    }


def _limits(conn: sqlite3.Connection) -> list[dict[str, str]]:
    """Each limit's counters in their current window (as ``httptrack limits`` shows them)."""
    from ..limits._counters import iso
    from ..limits._sqlite import read_usage

    return [
        {
            "limit": state.limit,
            "scope": state.scope_text,
            "used": limit_amount(state.metric, state.used),
            "reserved": limit_amount(state.metric, state.reserved),
            "cap": limit_amount(state.metric, state.amount),
            "share": f"{state.share * 100:.0f}%",
            "resets": iso(state.window_end).replace("T", " ").rstrip("Z"),
        }
        for state in read_usage(conn, time.time())
    ]


def _dollars(value: float) -> str:
    """An axis value: ``$0.5``, ``$1.25``, ``$2,000``."""
    return "$" + f"{value:,.4f}".rstrip("0").rstrip(".")
