"""``httptrack export``: calls as JSON lines or CSV, streamed."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from .._format import plain_number
from ..log._schema import COLUMNS
from ._common import db_option, filter_options, filters_from, open_log_or_fail

__all__ = ["BODY_COLUMNS", "export"]

#: The columns that hold floats (costs, times), written as plain decimals in CSV.
_REAL_COLUMNS = frozenset(name for name, sqltype, _ in COLUMNS if sqltype == "REAL")
#: Left out by ``--no-bodies``.
BODY_COLUMNS = ("request_headers", "request_body", "response_headers", "response_body", "response_text")


@click.command()
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="JSON lines (one object per call) or CSV (one row per call, with a header).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default="-",
    help="Write to this file (default: standard output).",
)
@click.option("-c", "--columns", help="Comma-separated columns to export, in this order (default: all).")
@click.option("--no-bodies", is_flag=True, help="Leave out the bodies and headers (much smaller).")
@click.option("--newest-first", is_flag=True, help="Newest call first (default: oldest first).")
@click.option(
    "-n", "--limit", type=click.IntRange(min=0), default=0, help="At most this many calls (0: all)."
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="A progress bar on standard error (default: when it is a terminal and the output is not).",
)
@click.option(
    "--to",
    "to",
    type=click.Choice(["sqlite"]),
    default=None,
    help="Copy the calls into a SQLite call log FILE instead (created, or added to: calls already "
    "there are skipped), with its search index, rollups and views: `httptrack ui --db FILE` or "
    "datasette opens it. For a local look at a shared Postgres log.",
)
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@filter_options
@db_option
def export(
    to: str | None,
    file: Path | None,
    fmt: str,
    output: Path,
    columns: str | None,
    no_bodies: bool,
    newest_first: bool,
    limit: int,
    progress: bool | None,
    db: Path | None,
    **options: Any,
) -> None:
    """Export calls as JSON lines or CSV.

    Oldest first, with the same filters as `calls`. Rows are streamed: memory stays
    flat however many calls there are.

    \b
    Examples:
      httptrack export > calls.jsonl
      httptrack export --format csv --since 30d --no-bodies -o last-month.csv
      httptrack export -c id,started_at,model,cost_usd --format csv --user alice
      httptrack export --db postgresql://user:pass@host/db --since 7d --to sqlite week.db
    """
    from ..log._schema import COLUMN_NAMES

    filters = filters_from(options)
    if to == "sqlite":
        destination = file or (None if str(output) == "-" else output)
        if destination is None:
            raise click.UsageError(
                "--to sqlite needs a FILE to write (httptrack export --to sqlite calls.db)"
            )
        _to_sqlite(db, destination, filters)
        return
    if file is not None:
        raise click.UsageError(f"unexpected argument {file}: use -o FILE (or --to sqlite FILE)")
    chosen = [c.strip() for c in columns.split(",") if c.strip()] if columns else list(COLUMN_NAMES)
    unknown = [c for c in chosen if c not in COLUMN_NAMES]
    if unknown:
        raise click.BadParameter(
            f"no such column: {', '.join(unknown)} (see `httptrack export --help`)", param_hint="--columns"
        )
    if no_bodies:
        chosen = [c for c in chosen if c not in BODY_COLUMNS]
    to_stdout = str(output) == "-"
    with open_log_or_fail(db) as log:
        try:
            total = log.count(**filters)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        if limit:
            total = min(total, limit)
        rows = log.rows(
            limit=limit or None,
            newest_first=newest_first,
            columns=chosen,
            decode_json=fmt == "jsonl",
            **filters,
        )
        if progress is None:
            progress = sys.stderr.isatty() and not (to_stdout and sys.stdout.isatty())
        stream: IO[str]
        with (
            click.open_file("-", "w") if to_stdout else output.open("w", encoding="utf-8", newline="")
        ) as stream:
            if progress:
                with click.progressbar(
                    length=total,
                    label=f"Exporting {total:,} calls",
                    file=sys.stderr,
                    show_pos=True,
                    show_eta=True,
                ) as bar:
                    written = _write(stream, fmt, chosen, _ticking(rows, bar))
            else:
                written = _write(stream, fmt, chosen, rows)
    if not to_stdout:
        click.echo(f"Exported {written:,} calls to {output}", err=True)


def _ticking(rows: Iterator[dict[str, Any]], bar: Any) -> Iterator[dict[str, Any]]:
    pending = 0
    for row in rows:
        yield row
        pending += 1
        if pending == 1000:  # updating the bar per row would cost more than writing the row
            bar.update(pending)
            pending = 0
    bar.update(pending)


def _write(stream: IO[str], fmt: str, columns: list[str], rows: Iterator[dict[str, Any]]) -> int:
    written = 0
    if fmt == "csv":
        writer = csv.writer(stream)
        writer.writerow(columns)
        # Figures as decimals (0.000049, not 4.9e-05): what a spreadsheet reads as a number.
        decimal = [c in _REAL_COLUMNS for c in columns]
        for row in rows:
            writer.writerow(
                [plain_number(row[c]) if d else row[c] for c, d in zip(columns, decimal, strict=True)]
            )
            written += 1
    else:
        dumps = json.dumps
        for row in rows:
            stream.write(dumps(row, ensure_ascii=False))
            stream.write("\n")
            written += 1
    return written


def _to_sqlite(db: Any, destination: Path, filters: Any) -> None:
    """Copy the matching calls into the SQLite log at ``destination`` through its own
    backend (the writer's inserts: idempotent by id, so a second export adds only what is
    new), then index and roll them up."""
    from ..log._schema import COLUMN_NAMES
    from ..log._sqlite import Store

    if destination.exists() and destination.stat().st_size:
        open_log_or_fail(destination).close()  # an existing file must be a call log already
    with open_log_or_fail(db) as log:
        if str(log.path) == str(destination):
            raise click.UsageError("the destination is the log being exported")
        store = Store(destination)
        written = duplicates = 0
        try:
            store.open()
            batch: list[tuple[Any, ...]] = []
            for row in log.rows(newest_first=False, columns=COLUMN_NAMES, **filters):
                batch.append(tuple(row[c] for c in COLUMN_NAMES))
                if len(batch) == 1000:
                    result = store.write(batch)
                    written, duplicates = written + result.written, duplicates + result.duplicates
                    batch = []
            if batch:
                result = store.write(batch)
                written, duplicates = written + result.written, duplicates + result.duplicates
            store.catch_up()
            store.checkpoint()
        except Exception as exc:
            raise click.ClickException(f"cannot write {destination}: {exc}") from None
        finally:
            store.close()
    already = f" ({duplicates:,} already there)" if duplicates else ""
    click.echo(f"Copied {written:,} calls from {log.path} to {destination}{already}", err=True)
