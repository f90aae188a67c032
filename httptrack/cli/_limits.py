"""``httptrack limits``: each limit's counters in their current window, and recent events."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from .._format import Column, count, money, render_table, short_time
from ._common import db_option, echo_json, json_option_saying, resolve_db

__all__ = ["limits"]


def _amount(metric: str, value: float) -> str:
    return money(value) if metric == "usd" else count(round(value))


def _until(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _scope(scope: Any) -> str:
    return ", ".join(f"{k}={v if v is not None else '(none)'}" for k, v in dict(scope).items()) or "all calls"


@click.command()
@click.option(
    "--events",
    "-e",
    "events",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Also show this many recent refusals and alerts (0: none).",
)
@json_option_saying("Print JSON ({counters, events}) instead of tables.")
@db_option
def limits(events: int, as_json: bool, db: Path | None) -> None:
    """Show spend and rate limits: used, reserved and left, per scope.

    Every limit a tracked app has used with this database, each scope (user, service ...)
    it counted in the current window, and when that window resets; then the latest calls
    refused and alerts fired. Limits are set in the app (TrackingTransport(limits=...) or
    HTTPTRACK_LIMITS); see docs/limits.md.
    """
    from ..limits._sqlite import SqliteCounters

    target = resolve_db(db)
    if not target.exists():
        raise click.ClickException(f"no call log at {target} yet: make a tracked call first")
    counters = SqliteCounters(target, readonly=True)
    now = time.time()
    try:
        states = counters.usage(now)
        recent = counters.events(events) if events else []
    except Exception as exc:
        raise click.ClickException(f"cannot read {target}: {exc}") from None
    finally:
        counters.close()
    if as_json:
        echo_json(
            {
                "counters": [state.as_dict() for state in states],
                "events": [{**asdict(event), "scope": dict(event.scope)} for event in recent],
            }
        )
        return
    if not states:
        click.echo(f"No limit has been used with {target}.")
        click.echo("Set limits with TrackingTransport(limits=...) or HTTPTRACK_LIMITS (docs/limits.md).")
        return
    rows = []
    for state in states:
        left = max(state.amount - state.used - state.reserved, 0.0)
        share = (state.used + state.reserved) / state.amount if state.amount else 1.0
        rows.append(
            [
                state.limit,
                _scope(state.scope),
                _amount(state.metric, state.used),
                _amount(state.metric, state.reserved),
                _amount(state.metric, state.amount),
                _amount(state.metric, left),
                f"{share * 100:.0f}%",
                count(state.calls),
                f"{short_time(_iso(state.window_end))} (in {_until(state.window_end - now)})",
            ]
        )
    columns = [
        Column("limit", shrink=True, min_width=12),
        Column("scope", shrink=True, min_width=10),
        Column("used", right=True),
        Column("reserved", right=True),
        Column("limit", right=True),
        Column("left", right=True),
        Column("%", right=True),
        Column("calls", right=True),
        Column("resets (UTC)"),
    ]
    click.echo(render_table(columns, rows))
    if recent:
        click.echo("")
        click.echo("Recent refusals and alerts")
        event_rows = [
            [short_time(e.at), e.kind, e.limit, _scope(e.scope), e.call_id or "-", (e.message or "")[:200]]
            for e in recent
        ]
        event_columns = [
            Column("at (UTC)"),
            Column("kind"),
            Column("limit", shrink=True, min_width=12),
            Column("scope", shrink=True, min_width=10),
            Column("call", shrink=True),
            Column("message", shrink=True, min_width=20),
        ]
        click.echo(render_table(event_columns, event_rows))


def _iso(seconds: float) -> str:
    from ..limits._counters import iso

    return iso(seconds)
