"""The figures and charts of the ``/-/httptrack`` dashboard, read with ``Log`` (the same
code as ``httptrack stats``) on datasette's read-only connection."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from markupsafe import Markup

from .._format import count, duration, money, percent
from ..log._reader import Log
from ._charts import column_chart, stacked_bar_chart

__all__ = ["dashboard_context"]

TOP = 12


def dashboard_context(conn: sqlite3.Connection, path: str, days: int) -> dict[str, Any]:
    log = Log(path, connection=conn)
    since = (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%d") if days else None
    filters: dict[str, Any] = {"since": since} if since else {}
    totals = log.totals(**filters)
    per_day = sorted(log.stats(by="day", percentiles=False, **filters), key=lambda g: g["day"] or "")
    per_model = log.stats(by="model", **filters)
    per_user = log.stats(by="user", percentiles=False, **filters)
    by_tokens = sorted(per_model, key=lambda g: -((g["input_tokens"] or 0) + (g["output_tokens"] or 0)))[:TOP]
    return {
        "since": since,
        "figures": [
            ("Calls", count(totals["calls"])),
            ("Cost", money(totals["cost_usd"] or 0)),
            ("Saved by the cache", money(totals["cost_saved_usd"] or 0)),
            ("Tokens", count(totals["total_tokens"])),
            ("Error rate", percent(totals["error_rate"])),
            (
                "Latency p50 / p95",
                f"{duration(totals['p50_latency_ms'])} / {duration(totals['p95_latency_ms'])}",
            ),
        ],
        "cost_per_day": Markup(
            column_chart(
                [(g["day"], g["cost_usd"] or 0.0) for g in per_day],
                fmt=money,
                axis=_dollars,
                title="Cost per day (USD)",
            )
        ),
        "calls_per_day": Markup(
            stacked_bar_chart(
                [
                    (g["day"], [g["calls"] - g["errors"] - g["cache_hits"], g["cache_hits"], g["errors"]])
                    for g in reversed(per_day[-14:])
                ],
                series=["answered", "from cache", "errors"],
                fmt=lambda v: count(v),
                title="Calls per day",
            )
        ),
        "tokens_per_model": Markup(
            stacked_bar_chart(
                [
                    (g["model"] or "(unknown)", [g["input_tokens"] or 0, g["output_tokens"] or 0])
                    for g in by_tokens
                ],
                series=["input tokens", "output tokens"],
                fmt=lambda v: count(v),
                title="Tokens per model",
            )
        ),
        "cost_per_user": Markup(
            stacked_bar_chart(
                [(g["user"] or "(none)", [g["cost_usd"] or 0.0]) for g in per_user[:TOP]],
                series=["cost"],
                fmt=money,
                title="Cost per user",
            )
        ),
        "models": [
            {
                "model": g["model"] or "(unknown)",
                "calls": count(g["calls"]),
                "cost": money(g["cost_usd"]),
                "errors": percent(g["error_rate"]),
                "p50": duration(g["p50_latency_ms"]),
                "p95": duration(g["p95_latency_ms"]),
            }
            for g in per_model[:TOP]
        ],
        "limits": _limits(conn),
    }


def _limits(conn: sqlite3.Connection) -> list[dict[str, str]]:
    """Each limit's counters in their current window (as ``httptrack limits`` shows them)."""
    from ..limits._counters import iso
    from ..limits._sqlite import read_usage

    def amount(metric: str, value: float) -> str:
        return money(value) if metric == "usd" else count(round(value))

    shown = []
    for state in read_usage(conn, time.time()):
        share = (state.used + state.reserved) / state.amount if state.amount else 1.0
        shown.append(
            {
                "limit": state.limit,
                "scope": ", ".join(f"{k}={v if v is not None else '(none)'}" for k, v in state.scope.items())
                or "all calls",
                "used": amount(state.metric, state.used),
                "reserved": amount(state.metric, state.reserved),
                "cap": amount(state.metric, state.amount),
                "share": f"{share * 100:.0f}%",
                "resets": iso(state.window_end).replace("T", " ").rstrip("Z"),
            }
        )
    return shown


def _dollars(value: float) -> str:
    """An axis value: ``$0.5``, ``$1.25``, ``$2,000``."""
    return "$" + f"{value:,.4f}".rstrip("0").rstrip(".")
