"""``httptrack run -- COMMAND``: run a program with every httpx/httpx2 client tracked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from .._settings import CACHE_MODES, Settings, SettingsError

__all__ = ["run"]


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Record into this database (sets HTTPTRACK_DB).",
)
@click.option(
    "--cache",
    type=click.Choice(CACHE_MODES, case_sensitive=False),
    default=None,
    help="Response cache mode (sets HTTPTRACK_CACHE).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Response cache folder (sets HTTPTRACK_CACHE_DIR).",
)
@click.option("--user", default=None, help="Attribute every call to this user (sets HTTPTRACK_USER).")
@click.option(
    "--service", default=None, help="Attribute every call to this service (sets HTTPTRACK_SERVICE)."
)
@click.option(
    "--hosts",
    "hosts",
    multiple=True,
    metavar="HOST[:PORT]=PROVIDER",
    help="Also track this self-hosted or proxied endpoint (sets HTTPTRACK_HOSTS); repeatable, "
    "or comma-separated.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    db: Path | None,
    cache: str | None,
    cache_dir: Path | None,
    user: str | None,
    service: str | None,
    hosts: tuple[str, ...],
    command: tuple[str, ...],
) -> None:
    """Run COMMAND with tracking on: every LLM call made through httpx or httpx2 in it (and
    in the Python programs it starts) is recorded, with no change to its code.

    \b
        httptrack run -- python app.py --app-option
        httptrack run --db calls.db --user alice -- pytest tests/

    Options set the HTTPTRACK_* variables for COMMAND; variables already set fill in the
    rest. Python programs are tracked if they run in an environment where httptrack is
    installed (its start-up hook reads HTTPTRACK=1).
    """
    host_pairs = ",".join(hosts) or None
    try:  # fail here, once, rather than as a warning in every program COMMAND starts
        Settings(db=db, cache=cache, cache_dir=cache_dir, user=user, service=service, hosts=host_pairs)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    changes = {
        "HTTPTRACK": "1",
        "HTTPTRACK_DB": str(db.expanduser().resolve()) if db else None,
        "HTTPTRACK_CACHE": cache.lower() if cache else None,
        "HTTPTRACK_CACHE_DIR": str(cache_dir.expanduser().resolve()) if cache_dir else None,
        "HTTPTRACK_USER": user,
        "HTTPTRACK_SERVICE": service,
        "HTTPTRACK_HOSTS": host_pairs,
    }
    env = dict(os.environ)
    env.update({name: value for name, value in changes.items() if value is not None})
    if not _hook_installed():
        click.echo(
            "httptrack run: the start-up hook (httptrack.pth) is not installed in this Python "
            "environment; reinstall httptrack (pip install httptrack) or call httptrack.install() "
            "in the program.",
            err=True,
        )
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "nt":  # no real exec on Windows: run it and pass its exit status on
        try:
            sys.exit(subprocess.call(list(command), env=env))
        except FileNotFoundError:
            _not_found(command[0])
    try:
        os.execvpe(command[0], list(command), env)
    except FileNotFoundError:
        _not_found(command[0])
    except PermissionError:
        click.echo(f"httptrack run: {command[0]}: permission denied", err=True)
        sys.exit(126)


def _hook_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("_httptrack_boot") is not None


def _not_found(name: str) -> None:
    click.echo(f"httptrack run: {name}: command not found", err=True)
    sys.exit(127)
