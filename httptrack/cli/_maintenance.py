"""``httptrack prune`` (delete old calls, or only their bodies) and ``httptrack reindex``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from ..log._url import DatabaseURL
from ._common import WHEN, db_option, require_call_log

__all__ = ["prune", "reindex"]


@click.command()
@click.option(
    "--older-than",
    type=WHEN,
    help="Delete the calls older than this: 30d, 12h, 2w, or a date (2026-01-31).",
)
@click.option(
    "--keep-bodies",
    type=WHEN,
    metavar="WHEN",
    help="Drop the bodies (prompts, responses) of the calls older than this and keep the calls: "
    "a retention policy of its own or beside --older-than (--older-than 90d --keep-bodies 7d).",
)
@click.option(
    "--bodies-only",
    is_flag=True,
    help="With --older-than: keep those calls (figures, attribution) and drop only their request "
    "and response bodies and generated text.",
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
    older_than: str | None,
    keep_bodies: str | None,
    bodies_only: bool,
    vacuum: bool,
    dry_run: bool,
    yes: bool,
    db: Path | None,
) -> None:
    """Delete old calls, or only their bodies.

    Deletes the calls older than --older-than; with --bodies-only keeps them and drops
    only their bodies (prompts and responses), which take most of the space.
    --keep-bodies drops the bodies of the calls older than it, alone or beside
    --older-than: calls go after --older-than, their bodies after --keep-bodies.

    Safe while apps are recording: it works in short transactions. What is pruned is
    also removed from the full-text search index.

    \b
    Examples:
      httptrack prune --older-than 90d
      httptrack prune --older-than 7d --bodies-only --yes
      httptrack prune --older-than 90d --keep-bodies 7d --yes
      httptrack prune --older-than 2026-01-01 --vacuum
    """
    from ..log._maintenance import count_prunable
    from ..log._maintenance import prune as prune_log
    from ..log._reader import parse_when

    if keep_bodies is not None and bodies_only:
        raise click.UsageError(
            "--keep-bodies and --bodies-only do not go together: --keep-bodies keeps the calls already "
            "(--older-than 90d --keep-bodies 7d deletes calls after 90 days and their bodies after 7)"
        )
    if bodies_only and older_than is None:
        raise click.UsageError("--bodies-only needs --older-than (or use --keep-bodies)")
    if older_than is None and keep_bodies is None:
        raise click.UsageError("say what to prune: --older-than, --keep-bodies, or both")
    now = datetime.now(UTC)  # the same moment for both
    cutoff = None if older_than is None else parse_when(older_than, now=now)
    keep = None if keep_bodies is None else parse_when(keep_bodies, now=now)
    if cutoff is not None and keep is not None and keep < cutoff:
        raise click.UsageError(
            f"--keep-bodies {keep_bodies} is longer than --older-than {older_than}: "
            "the calls would be deleted before their bodies"
        )
    target = require_call_log(db)
    if isinstance(target, DatabaseURL):  # a Postgres log
        from ..log import _pgmaintenance

        count_prunable = _pgmaintenance.count_prunable  # type: ignore[assignment]
        prune_log = _pgmaintenance.prune  # type: ignore[assignment]
    cutoff, n, bodies_cutoff, n_bodies = count_prunable(
        target,  # type: ignore[arg-type]
        cutoff,
        bodies_only=bodies_only,
        keep_bodies=keep,
    )
    parts = []
    if cutoff is not None and n:
        parts.append(f"{'bodies of the ' if bodies_only else ''}{_calls(n)} that started before {cutoff}")
    if bodies_cutoff is not None and n_bodies:
        parts.append(f"bodies of {_calls(n_bodies)} that started before {bodies_cutoff}")
    described = "the " + ", and the ".join(parts)
    if dry_run or not parts:
        if parts:
            click.echo(f"Would prune {described}.")
        else:
            nothing = []
            if cutoff is not None:
                nothing.append(f"no calls before {cutoff}" + (" with bodies" if bodies_only else ""))
            if bodies_cutoff is not None:
                nothing.append(f"no calls before {bodies_cutoff} with bodies")
            click.echo(f"Nothing to prune: {', '.join(nothing)}.")
        if not (vacuum and not dry_run):
            return
    elif not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(f"this would prune {described}: pass --yes to go ahead")
        click.confirm(f"Prune {described}?", abort=True)
    result = prune_log(
        target,  # type: ignore[arg-type]
        cutoff,
        bodies_only=bodies_only,
        keep_bodies=bodies_cutoff,
        vacuum=vacuum,
    )
    if result.cutoff is not None:
        verb = "Dropped the bodies of" if bodies_only else "Deleted"
        click.echo(f"{verb} {_calls(result.calls)} that started before {result.cutoff}.")
    if result.bodies_cutoff is not None:
        what = _calls(result.bodies)
        click.echo(f"Dropped the bodies of {what} that started before {result.bodies_cutoff}.")
    if vacuum:
        click.echo(f"Database: {result.bytes_before / 1e6:,.1f} MB → {result.bytes_after / 1e6:,.1f} MB.")


def _calls(n: int) -> str:
    return f"{n:,} call{'s' if n != 1 else ''}"


@click.command()
@db_option
def reindex(db: Path | None) -> None:
    """Rebuild the search index and the daily totals from the calls.

    httptrack keeps both up to date as it records and prunes; run this after changing
    the `calls` table with another tool (deleting rows with sqlite3, say), so that `-q`
    and `stats` match the calls again. It also brings a log written by an older
    httptrack up to date. Safe while apps are recording.
    """
    from ..log._maintenance import reindex as reindex_log

    target = require_call_log(db)
    if isinstance(target, DatabaseURL):
        from ..log._pgmaintenance import reindex as reindex_pg

        n = reindex_pg(target)
    else:
        n = reindex_log(target)
    click.echo(f"Rebuilt the search index and the daily totals of {n:,} calls.")
