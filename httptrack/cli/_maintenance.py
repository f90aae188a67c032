"""``httptrack prune`` (delete old calls, or only their bodies) and ``httptrack reindex``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._common import WHEN, db_option, resolve_db

__all__ = ["prune", "reindex"]


@click.command()
@click.option(
    "--older-than",
    required=True,
    type=WHEN,
    help="Prune calls older than this: 30d, 12h, 2w, or a date (2026-01-31).",
)
@click.option(
    "--bodies-only",
    is_flag=True,
    help="Keep the calls (figures, attribution) and drop only their request and response bodies "
    "and generated text.",
)
@click.option(
    "--vacuum",
    is_flag=True,
    help="Then give the freed space back to the disk (rewrites the file; writers wait meanwhile).",
)
@click.option("--dry-run", is_flag=True, help="Only say how many calls would be pruned.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@db_option
def prune(
    older_than: str, bodies_only: bool, vacuum: bool, dry_run: bool, yes: bool, db: Path | None
) -> None:
    """Delete old calls, or only their bodies.

    Deletes the calls older than --older-than; with --bodies-only keeps them and drops
    only their bodies (prompts and responses), which take most of the space.

    Safe while apps are recording: it works in short transactions. What is pruned is
    also removed from the full-text search index.

    \b
    Examples:
      httptrack prune --older-than 90d
      httptrack prune --older-than 7d --bodies-only --yes
      httptrack prune --older-than 2026-01-01 --vacuum
    """
    from .._maintenance import count_prunable
    from .._maintenance import prune as prune_log

    target = resolve_db(db)
    if not target.exists():
        raise click.ClickException(f"no call log at {target}")
    cutoff, n = count_prunable(target, older_than, bodies_only=bodies_only)
    what = "bodies of" if bodies_only else ""
    described = f"{what} {n:,} call{'s' if n != 1 else ''} that started before {cutoff}".strip()
    if dry_run or n == 0:
        click.echo(
            f"Would prune the {described}."
            if n
            else f"Nothing to prune: no calls before {cutoff}" + (" with bodies." if bodies_only else ".")
        )
        if not (vacuum and not dry_run):
            return
    elif not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(f"this would prune the {described}: pass --yes to go ahead")
        click.confirm(f"Prune the {described}?", abort=True)
    result = prune_log(target, cutoff, bodies_only=bodies_only, vacuum=vacuum)
    verb = "Dropped the bodies of" if bodies_only else "Deleted"
    click.echo(
        f"{verb} {result.calls:,} call{'s' if result.calls != 1 else ''} that started before {cutoff}."
    )
    if vacuum:
        click.echo(f"Database: {result.bytes_before / 1e6:,.1f} MB → {result.bytes_after / 1e6:,.1f} MB.")


@click.command()
@db_option
def reindex(db: Path | None) -> None:
    """Rebuild the search index and the daily totals from the calls.

    httptrack keeps both up to date as it records and prunes; run this after changing
    the `calls` table with another tool (deleting rows with sqlite3, say), so that `-q`
    and `stats` match the calls again. Safe while apps are recording.
    """
    from .._maintenance import reindex as reindex_log

    target = resolve_db(db)
    if not target.exists():
        raise click.ClickException(f"no call log at {target}")
    n = reindex_log(target)
    click.echo(f"Rebuilt the search index and the daily totals of {n:,} calls.")
