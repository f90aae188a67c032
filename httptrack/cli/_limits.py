"""``httptrack limits``: each limit's counters in their current window, and recent events."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import click

from .._format import Column, count, limit_amount, render_table, short_time, time_left
from ..limits._counters import scope_text
from ._common import db_option, echo_json, json_option_saying, resolve_db

__all__ = ["limits"]


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
    from ..limits._counters import Counters
    from ..limits._sqlite import SqliteCounters
    from ..log._url import DatabaseURL

    target = resolve_db(db)
    counters: Counters
    if isinstance(target, DatabaseURL):  # counted in the Postgres log's database
        from ..limits._postgres import PostgresCounters

        counters = PostgresCounters(target, readonly=True)
    elif not target.exists():
        raise click.ClickException(f"no call log at {target} yet: make a tracked call first")
    else:
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
        rows.append(
            [
                state.limit,
                state.scope_text,
                limit_amount(state.metric, state.used),
                limit_amount(state.metric, state.reserved),
                limit_amount(state.metric, state.amount),
                limit_amount(state.metric, state.remaining),
                f"{state.share * 100:.0f}%",
                count(state.calls),
                f"{short_time(_iso(state.window_end))} (in {time_left(state.window_end - now)})",
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
            [
                short_time(e.at),
                e.kind,
                e.limit,
                scope_text(e.scope),
                e.call_id or "-",
                (e.message or "")[:200],
            ]
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
