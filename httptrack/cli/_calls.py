"""``httptrack calls``: recent calls, newest first, filtered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .._format import Column, count, duration, money, render_table, short_time
from ..log._schema import TOKEN_COLUMNS
from ._common import db_option, echo_json_array, filter_options, filters_from, json_option, open_log_or_fail

__all__ = ["LIST_COLUMNS", "calls"]

#: What ``calls --json`` gives per call: everything but the bodies and headers (``show``
#: and ``export`` have those).
LIST_COLUMNS = (
    "id",
    "started_at",
    "provider",
    "host",
    "operation",
    "model",
    "response_model",
    "stream",
    "status",
    "outcome",
    "http_status",
    "error_code",
    "error_message",
    *TOKEN_COLUMNS,
    "cost_usd",
    "cost_saved_usd",
    "cost_note",
    "latency_ms",
    "ttft_ms",
    "cached",
    "user",
    "service",
    "session",
    "properties",
    "finish_reason",
)


@click.command()
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="How many calls to show (0: all).",
)
@filter_options
@json_option
@db_option
def calls(limit: int, as_json: bool, db: Path | None, **options: Any) -> None:
    """List recorded calls, newest first.

    \b
    Examples:
      httptrack calls                       # the last 20 calls
      httptrack calls -n 0 --since 2h       # every call of the last two hours
      httptrack calls -u alice -m gpt-4o-mini --status error
      httptrack calls -q "refund policy"    # prompts or answers with both words
      httptrack calls --json | jq '.[].cost_usd'
    """
    filters = filters_from(options)
    with open_log_or_fail(db) as log:
        try:
            rows = log.rows(limit=limit or None, columns=LIST_COLUMNS, decode_json=True, **filters)
            if as_json:
                echo_json_array(rows)
                return
            listed = [_cells(row) for row in rows]
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    if not listed:
        click.echo("No calls match." if filters else "No calls recorded yet.", err=True)
        return
    click.echo(render_table(_COLUMNS, listed))
    if limit and len(listed) == limit:
        click.echo(f"(the newest {limit}; -n 0 for all)", err=True)


_COLUMNS = (
    Column("id"),
    Column("started (UTC)"),
    Column("provider", shrink=True),
    Column("model", shrink=True, min_width=10),
    Column("op", shrink=True, min_width=4),
    Column("status"),
    Column("in", right=True),
    Column("out", right=True),
    Column("cost", right=True),
    Column("latency", right=True),
    Column("user", shrink=True),
    Column("service", shrink=True),
)


def _cells(row: dict[str, Any]) -> list[str]:
    status = row["status"] or "-"
    if row["status"] == "error":
        status = f"error {row['http_status'] or row['error_code'] or ''}".strip()
    elif row["cached"]:
        status = "cached"
    estimated = "~" if row["tokens_estimated"] else ""
    return [
        row["id"],
        short_time(row["started_at"]),
        row["provider"] or "-",
        row["response_model"] or row["model"] or "-",
        row["operation"] or "-",
        status,
        estimated + count(row["input_tokens"]) if row["input_tokens"] is not None else "-",
        estimated + count(row["output_tokens"]) if row["output_tokens"] is not None else "-",
        money(row["cost_usd"])
        if row["cost_usd"] is not None
        else ("?" if row["status"] == "success" else "-"),
        duration(row["latency_ms"]),
        row["user"] or "-",
        row["service"] or "-",
    ]
