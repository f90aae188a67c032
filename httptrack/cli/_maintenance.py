"""``httptrack prune`` (delete old calls, or only their bodies), ``httptrack reindex`` and
``httptrack migrate``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from ..log._url import DatabaseURL
from ._common import WHEN, db_option, require_call_log

__all__ = ["migrate", "prune", "reindex"]


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
    "--max-size",
    metavar="SIZE",
    help="Then, while the log uses more than this (2GB, 500MiB), drop the bodies of the oldest calls, "
    "and once none has a body left, delete the oldest calls.",
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
    max_size: str | None,
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

    --max-size bounds the space the log uses: the oldest bodies go first, then the
    oldest calls. (Deleted calls leave free pages that new calls reuse: the file stops
    growing, and shrinks only with --vacuum.)

    Safe while apps are recording: it works in short transactions. What is pruned is
    also removed from the full-text search index. Deleted calls still count in the
    daily totals (`stats`, the dashboard). HTTPTRACK_RETENTION does all this as the
    app records (docs/retention.md).

    \b
    Examples:
      httptrack prune --older-than 90d
      httptrack prune --older-than 7d --bodies-only --yes
      httptrack prune --older-than 90d --keep-bodies 7d --yes
      httptrack prune --older-than 2026-01-01 --vacuum
      httptrack prune --max-size 2GB --yes
    """
    from .._settings import SettingsError, parse_size
    from ..log._maintenance import count_prunable, estimate_size_prune
    from ..log._maintenance import prune as prune_log
    from ..log._reader import parse_when

    size_limit = None
    if max_size is not None:
        try:
            size_limit = parse_size(max_size, "--max-size")
        except SettingsError as exc:
            raise click.BadParameter(str(exc).removeprefix("--max-size: "), param_hint="--max-size") from None

    if keep_bodies is not None and bodies_only:
        raise click.UsageError(
            "--keep-bodies and --bodies-only do not go together: --keep-bodies keeps the calls already "
            "(--older-than 90d --keep-bodies 7d deletes calls after 90 days and their bodies after 7)"
        )
    if bodies_only and older_than is None:
        raise click.UsageError("--bodies-only needs --older-than (or use --keep-bodies)")
    if older_than is None and keep_bodies is None and size_limit is None:
        raise click.UsageError("say what to prune: --older-than, --keep-bodies, --max-size, or a mix")
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

        if size_limit is not None:
            raise click.UsageError(
                "--max-size is for a SQLite log (a Postgres log: --older-than / --keep-bodies)"
            )
        count_prunable = _pgmaintenance.count_prunable  # type: ignore[assignment]
        prune_log = _pgmaintenance.prune  # type: ignore[assignment]
    n = n_bodies = 0
    bodies_cutoff = None
    if cutoff is not None or keep is not None:
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
    if size_limit is not None:
        # Estimated on the log as it is (before the parts above): an upper bound.
        used, size_bodies, size_calls = estimate_size_prune(target, size_limit)  # type: ignore[arg-type]
        if size_bodies or size_calls:
            what = f"bodies of about {_calls(size_bodies)}" if size_bodies else ""
            if size_calls:
                what += (", and then about " if what else "about ") + _calls(size_calls)
            parts.append(f"{what} (oldest first), as the log uses {_mb(used)} of {_mb(size_limit)}")
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
            if size_limit is not None:
                nothing.append(f"the log uses less than {_mb(size_limit)}")
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
        **({} if size_limit is None else {"max_size": size_limit}),
    )
    if result.cutoff is not None:
        verb = "Dropped the bodies of" if bodies_only else "Deleted"
        click.echo(f"{verb} {_calls(result.calls)} that started before {result.cutoff}.")
    if result.bodies_cutoff is not None:
        what = _calls(result.bodies)
        click.echo(f"Dropped the bodies of {what} that started before {result.bodies_cutoff}.")
    if result.max_size is not None:
        done = []
        if result.size_bodies:
            done.append(f"dropped the bodies of {_calls(result.size_bodies)}")
        if result.size_calls:
            done.append(f"deleted {_calls(result.size_calls)}")
        said = ("Oldest first, " + " and ".join(done) + ": the") if done else "The"
        click.echo(f"{said} log uses {_mb(result.used_after)} (at most {_mb(result.max_size)}).")
    if vacuum:
        click.echo(f"Database: {result.bytes_before / 1e6:,.1f} MB → {result.bytes_after / 1e6:,.1f} MB.")


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


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


@click.command()
@db_option
def migrate(db: Path | None) -> None:
    """Bring the log to this version's schema now, new indexes included.

    httptrack upgrades a log by itself when it first writes to it; on a big log it leaves
    the new indexes to build when its writer is idle (indexing millions of calls takes tens
    of seconds or more, and calls would wait for it meanwhile). This builds them at once: run it at a
    quiet moment (writers wait while an index is built; readers do not).
    """
    from ..log._maintenance import upgrade

    target = require_call_log(db)
    if isinstance(target, DatabaseURL):
        raise click.ClickException("migrate is for SQLite logs: a Postgres log is upgraded by its writers")
    n, seconds = upgrade(target)
    if n:
        click.echo(
            f"Up to date: built what was left of the upgrade ({n} step{'s' if n != 1 else ''}, {seconds} s)."
        )
    else:
        click.echo("Up to date.")
