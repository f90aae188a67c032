"""Options and helpers shared by the CLI's commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["db_option", "open_log_or_fail", "resolve_db"]

F = TypeVar("F", bound=Callable[..., Any])


def db_option(func: F) -> F:
    return click.option(
        "--db",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Database file (default: $HTTPTRACK_DB or ~/.local/share/httptrack/httptrack.db).",
    )(func)


def resolve_db(db: Path | None) -> Path:
    if db is not None:
        return db
    from .._settings import Settings, SettingsError

    try:
        return Settings().db
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


def open_log_or_fail(db: Path | None) -> Any:
    from .._log import open_log

    target = resolve_db(db)
    try:
        return open_log(target)
    except FileNotFoundError:
        raise click.ClickException(
            f"no call log at {target} yet: make a tracked call first (or try `httptrack demo`)"
        ) from None
