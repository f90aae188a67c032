"""Options and helpers shared by the CLI's commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .._vocab import OPERATIONS, STATUSES

if TYPE_CHECKING:
    from ..log._reader import Filters, Log
    from ..log._url import LogTarget

__all__ = [
    "WHEN",
    "db_option",
    "echo_json",
    "filter_options",
    "filters_from",
    "json_option",
    "json_option_saying",
    "open_log_or_fail",
    "require_call_log",
    "resolve_db",
]

F = TypeVar("F", bound=Callable[..., Any])


class _LogTarget(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """A call log: a SQLite file (a ``Path``), or a ``postgresql://`` URL (a ``DatabaseURL``,
    which prints without its password)."""

    name = "path or postgresql:// URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from ..log._url import DatabaseURL, is_database_url, log_target

        if isinstance(value, Path | DatabaseURL):
            return value
        if is_database_url(value):
            try:
                return log_target(value)
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        return click.Path(dir_okay=False, path_type=Path).convert(value, param, ctx)


def db_option(func: F) -> F:
    return click.option(
        "--db",
        type=_LogTarget(),
        default=None,
        help="Database file (default: $HTTPTRACK_DB or ~/.local/share/httptrack/httptrack.db), "
        "or a shared Postgres log: postgresql://user:pass@host:5432/db.",
    )(func)


def json_option(func: F) -> F:
    return json_option_saying("Print JSON instead of a table.")(func)


def json_option_saying(help: str) -> Callable[[F], F]:
    """``--json`` (as ``as_json``) with its own help, for a command whose output is no table."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def resolve_db(db: LogTarget | None) -> LogTarget:
    if db is not None:
        return db
    from .._settings import Settings, SettingsError

    try:
        return Settings().db
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


def open_log_or_fail(db: LogTarget | None) -> Log:
    """The call log, opened read-only (never written: not even an older log's schema is
    brought up to date), or a clear error: no such file, not a call log, unreadable."""
    import os

    from ..log._reader import open_log

    target = resolve_db(db)
    try:
        return open_log(target)
    except FileNotFoundError:
        if db is None and not os.environ.get("HTTPTRACK_DB"):  # the default place: nothing recorded yet
            raise click.ClickException(
                f"no call log at {target} yet: make a tracked call first "
                f"(or try `httptrack demo --db {target}`)"
            ) from None
        assert isinstance(target, Path)  # (a Postgres log's absence is a LogError)
        where = "" if target.parent.is_dir() else f" (there is no folder {target.parent} either)"
        raise click.ClickException(f"no such file: {target}{where}") from None
    except IsADirectoryError:
        raise click.ClickException(f"{target} is a folder, not a call log") from None
    except ValueError as exc:  # not a database, or not httptrack's (LogError)
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot read {target}: {exc.strerror or exc}") from None


def require_call_log(db: LogTarget | None) -> LogTarget:
    """For the commands that write (``prune``, ``reindex``): the call log's path, after
    checking (read-only) that it is one, so that no other file ever gets httptrack's tables."""
    with open_log_or_fail(db) as log:
        return log.path


class _When(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """``2h``, ``7d``, ``30m``, ``1w`` ago, or an ISO date/datetime (UTC unless it says)."""

    name = "when"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        from ..log._reader import parse_when

        try:
            parse_when(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return value


WHEN = _When()


def filter_options(func: F) -> F:
    """The options that pick calls, shared by ``calls``, ``stats`` and ``export``."""
    options = [
        click.option(
            "--since", type=WHEN, help="Only calls since: 2h, 7d, 30m, 1w ago, or a date (2026-01-31)."
        ),
        click.option("--until", type=WHEN, help="Only calls before this (same forms as --since)."),
        click.option(
            "--provider", multiple=True, help="Only this provider (openai, anthropic, ...). Repeatable."
        ),
        click.option(
            "-m", "--model", multiple=True, help="Only this model (asked for or answering). Repeatable."
        ),
        click.option("-u", "--user", multiple=True, help="Only calls attributed to this user. Repeatable."),
        click.option("-s", "--service", multiple=True, help="Only calls from this service. Repeatable."),
        click.option("--session", multiple=True, help="Only calls in this session. Repeatable."),
        click.option(
            "--operation",
            multiple=True,
            type=click.Choice(OPERATIONS),
            help="Only this kind of call. Repeatable.",
        ),
        click.option("--status", type=click.Choice(STATUSES), help="Only successful or only failed calls."),
        click.option(
            "--cached/--not-cached",
            default=None,
            help="Only calls served from httptrack's cache, or only real ones.",
        ),
        click.option(
            "-q",
            "--query",
            help="Full-text search of prompts and responses: all words must occur; "
            '"a phrase" in quotes, pref* for a prefix.',
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def filters_from(params: dict[str, Any]) -> Filters:
    """The ``Filters`` for ``Log`` methods from a command's filter options (popped off)."""
    filters: dict[str, Any] = {}
    for name in (
        "since",
        "until",
        "provider",
        "model",
        "user",
        "service",
        "session",
        "operation",
        "status",
        "cached",
        "query",
    ):
        value = params.pop(name, None)
        if value is None or value == ():
            continue
        filters[name] = list(value) if isinstance(value, tuple) else value
    return filters  # type: ignore[return-value]


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def echo_json_array(items: Iterable[Any]) -> None:
    """A JSON array written item by item: constant memory however long it is."""
    out = sys.stdout
    first = True
    for item in items:
        out.write("[\n  " if first else ",\n  ")
        out.write(json.dumps(item, ensure_ascii=False, default=str).replace("\n", "\n  "))
        first = False
    out.write("[]\n" if first else "\n]\n")
    out.flush()
