"""``httptrack export``: calls as JSON lines, CSV or Parquet, or sent as OpenTelemetry spans
(OTLP), streamed."""

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
    type=click.Choice(["jsonl", "csv", "parquet", "otlp"]),
    default="jsonl",
    show_default=True,
    help="JSON lines (one object per call), CSV (one row per call, with a header), Parquet "
    "(typed columns; needs a file and pyarrow), or otlp: each call sent as an OpenTelemetry "
    "GenAI span with its original times to --endpoint (docs/export.md).",
)
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default="-",
    help="Write to this file (default: standard output).",
)
@click.option(
    "--endpoint",
    metavar="URL",
    help="otlp: the OTLP/HTTP endpoint (http://localhost:4318, or a URL ending /v1/traces; "
    "default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / $OTEL_EXPORTER_OTLP_ENDPOINT).",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="NAME=VALUE",
    help="otlp: a header sent with each request (authorization ...). Repeatable "
    "(default: $OTEL_EXPORTER_OTLP_HEADERS).",
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
@filter_options
@db_option
def export(
    to: str | None,
    fmt: str,
    file: Path | None,
    output: Path,
    endpoint: str | None,
    headers: tuple[str, ...],
    columns: str | None,
    no_bodies: bool,
    newest_first: bool,
    limit: int,
    progress: bool | None,
    db: Path | None,
    **options: Any,
) -> None:
    """Export calls as JSON lines, CSV or Parquet, or send them as OpenTelemetry spans.

    Oldest first, with the same filters as `calls`. Rows are streamed: memory stays
    flat however many calls there are.

    \b
    Examples:
      httptrack export > calls.jsonl
      httptrack export --format csv --since 30d --no-bodies -o last-month.csv
      httptrack export -c id,started_at,model,cost_usd --format csv --user alice
      httptrack export --format parquet calls.parquet
      httptrack export --format otlp --endpoint http://localhost:4318 --since 7d
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
        output = file
    header_map = dict(_header(h) for h in headers)
    if fmt != "otlp" and (endpoint or headers):
        raise click.UsageError("--endpoint and --header are for --format otlp")
    if fmt == "parquet" and str(output) == "-":
        raise click.UsageError("--format parquet writes a file: name it (-o calls.parquet)")

    chosen = [c.strip() for c in columns.split(",") if c.strip()] if columns else list(COLUMN_NAMES)
    unknown = [c for c in chosen if c not in COLUMN_NAMES]
    if unknown:
        raise click.BadParameter(
            f"no such column: {', '.join(unknown)} (see `httptrack export --help`)", param_hint="--columns"
        )
    if fmt == "otlp":  # a span says all it can of a call
        chosen = list(COLUMN_NAMES)
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
            progress = sys.stderr.isatty() and (fmt == "otlp" or not (to_stdout and sys.stdout.isatty()))
        if fmt in ("parquet", "otlp"):
            written = _export_to(fmt, output, chosen, rows, total, progress, endpoint, header_map)
            where = (endpoint or "the OTLP endpoint") if fmt == "otlp" else output
            click.echo(f"{'Sent' if fmt == 'otlp' else 'Exported'} {written:,} calls to {where}", err=True)
            return
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


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        # Not echoed: it may hold a token (``Authorization: Bearer …``, a colon for the ``=``).
        raise click.BadParameter("expected NAME=VALUE (e.g. authorization=Bearer …)", param_hint="--header")
    return name.strip(), value.strip()


def _export_to(
    fmt: str,
    output: Path,
    columns: list[str],
    rows: Iterator[dict[str, Any]],
    total: int,
    progress: bool,
    endpoint: str | None,
    headers: dict[str, str],
) -> int:
    """Parquet (``cli/_parquet``) or OTLP spans (``otel/_backfill``), with the optional extras
    they need named when missing."""
    try:
        if fmt == "parquet":
            import pyarrow  # noqa: F401

            from ._parquet import write_parquet as write
        else:
            from ..otel._backfill import ExportRefused, send_calls
    except ImportError as exc:
        extra = "parquet" if fmt == "parquet" else "otel"
        raise click.ClickException(
            f"--format {fmt} needs {exc.name}: pip install 'httptrack[{extra}]'"
        ) from None

    def run(rows: Iterator[dict[str, Any]]) -> int:
        if fmt == "parquet":
            return write(output, columns, rows)
        try:
            return send_calls(rows, endpoint=endpoint, headers=headers or None)
        except ExportRefused as exc:
            raise click.ClickException(str(exc)) from None

    if not progress:
        return run(rows)
    label = f"{'Sending' if fmt == 'otlp' else 'Exporting'} {total:,} calls"
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True, show_eta=True) as bar:
        return run(_ticking(rows, bar))


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
        dumps = _json_line()
        for row in rows:
            stream.write(dumps(row))
            written += 1
    return written


def _json_line() -> Any:
    """A row as one line of JSON (with its newline): msgspec's encoder (a dependency), 3x
    json.dumps' speed on rows with bodies, which made JSON, not reading, most of an
    export's time; json.dumps for what msgspec cannot encode, or without msgspec."""

    def with_json(row: dict[str, Any]) -> str:
        return json.dumps(row, ensure_ascii=False) + "\n"

    try:
        from msgspec import EncodeError
        from msgspec.json import Encoder
    except ImportError:  # pragma: no cover - msgspec is a dependency
        return with_json
    encode = Encoder().encode

    def line(row: dict[str, Any]) -> str:
        try:
            return (encode(row) + b"\n").decode()
        except (EncodeError, ValueError, TypeError, OverflowError):  # a lone surrogate: ValueError
            return with_json(row)

    return line


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
