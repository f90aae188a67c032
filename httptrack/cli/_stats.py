"""``httptrack stats``: totals and breakdowns of calls, tokens, cost, errors and latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .._format import Column, count, duration, money, percent, render_table
from ..log._reader import STATS_GROUPS
from ._common import db_option, echo_json, filter_options, filters_from, json_option, open_log_or_fail

__all__ = ["stats"]


@click.command()
@click.option(
    "--by",
    type=click.Choice([*STATS_GROUPS, "none"]),
    default="model",
    show_default=True,
    help="Break the totals down by this (model: the one that answered; requested_model: the one "
    "asked for, which a failed call counts against); none: totals only.",
)
@filter_options
@json_option
@db_option
def stats(by: str, as_json: bool, db: Path | None, **options: Any) -> None:
    """Totals and breakdowns of calls, tokens, cost and latency.

    Calls, tokens, cost, what httptrack's cache saved, the error rate and latency
    (p50/p95), per model unless --by says otherwise.

    \b
    Examples:
      httptrack stats                          # everything recorded, per model
      httptrack stats --since 7d               # the last week
      httptrack stats --by day --since 30d
      httptrack stats --by user --json
      httptrack stats --by none                # the totals alone
    """
    by_group = None if by == "none" else by
    filters = filters_from(options)
    with open_log_or_fail(db) as log:
        try:
            if by_group:
                totals, groups = log.stats_and_totals(by=by_group, **filters)
            else:
                totals, groups = log.totals(**filters), None
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    if as_json:
        echo_json({"totals": totals, **({"by": by_group, "groups": groups} if by_group else {})})
        return
    if not totals["calls"]:
        click.echo("No calls match." if filters else "No calls recorded yet.")
        return
    click.echo(summary(totals))
    if groups is not None and by_group is not None:
        click.echo("")
        click.echo(breakdown(by_group, groups, totals))


def summary(t: dict[str, Any]) -> str:
    """The totals as a few labelled lines."""
    lines = [
        f"calls       {count(t['calls'])}   errors {count(t['errors'])} ({percent(t['error_rate'])})"
        f"   served from cache {count(t['cache_hits'])}",
        f"tokens      {count(t['input_tokens'])} in + {count(t['output_tokens'])} out"
        f" = {count(t['total_tokens'])}"
        + (
            f"   ({count(t['cached_input_tokens'])} read from prompt caches)"
            if t["cached_input_tokens"]
            else ""
        ),
        f"cost        {money(t['cost_usd'] or 0)}"
        + (f"   saved by httptrack's cache {money(t['cost_saved_usd'])}" if t["cost_saved_usd"] else "")
        + (f"   ({count(t['unpriced'])} calls could not be priced)" if t["unpriced"] else ""),
        f"latency     p50 {duration(t['p50_latency_ms'])}   p95 {duration(t['p95_latency_ms'])}"
        f"   average {duration(t['avg_latency_ms'])}",
    ]
    return "\n".join(lines)


def breakdown(by: str, groups: list[dict[str, Any]], totals: dict[str, Any]) -> str:
    columns = [
        Column(by, shrink=True, min_width=10),
        Column("calls", right=True),
        Column("errors", right=True),
        Column("cached", right=True),
        Column("in", right=True),
        Column("out", right=True),
        Column("cost", right=True),
        Column("share", right=True),
        Column("saved", right=True),
        Column("p50", right=True),
        Column("p95", right=True),
    ]
    total_cost = totals["cost_usd"] or 0

    def cells(g: dict[str, Any], label: str) -> list[str]:
        share = (g["cost_usd"] or 0) / total_cost if total_cost else None
        return [
            label,
            count(g["calls"]),
            percent(g["error_rate"]),
            count(g["cache_hits"]),
            count(g["input_tokens"]),
            count(g["output_tokens"]),
            money(g["cost_usd"]),
            percent(share),
            money(g["cost_saved_usd"]),
            duration(g["p50_latency_ms"]),
            duration(g["p95_latency_ms"]),
        ]

    rows = [cells(g, "(none)" if g[by] is None else str(g[by])) for g in groups]
    if len(groups) > 1:
        rows.append(cells(totals, "total"))
    return render_table(columns, rows)
