"""``httptrack path`` and ``httptrack status``: where the call log is and what is in it."""

from __future__ import annotations

from pathlib import Path

import click

from .._format import count, short_time
from ._common import db_option, echo_json, json_option_saying, open_log_or_fail, resolve_db

__all__ = ["path", "status"]


@click.command()
@db_option
def path(db: Path | None) -> None:
    """Print the path of the call log database.

    Handy for other tools: datasette "$(httptrack path)", sqlite-utils, sqlite3.
    """
    click.echo(str(resolve_db(db)))


@click.command()
@json_option_saying("Print JSON instead of text.")
@db_option
def status(as_json: bool, db: Path | None) -> None:
    """Show what the call log holds.

    Its path, size on disk, how many calls, the oldest and newest, schema version.
    """
    with open_log_or_fail(db) as log:
        info = log.status()
    if as_json:
        echo_json(info)
        return
    size = info["size_bytes"]
    click.echo(f"database    {info['path']}")
    click.echo(f"size        {size / 1e6:,.1f} MB" if size >= 100_000 else f"size        {size:,} bytes")
    click.echo(f"calls       {count(info['calls'])}")
    if info["calls"]:
        click.echo(f"oldest      {short_time(info['oldest'])} UTC")
        click.echo(f"newest      {short_time(info['newest'])} UTC")
    click.echo(
        f"schema      version {info['schema_version']}, full-text search "
        f"{'on' if info['search_index'] else 'unavailable (SQLite without FTS5)'}"
    )
