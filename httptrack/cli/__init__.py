"""The ``httptrack`` command: read the call log, run the demo, manage the cache.

Every command takes ``--db PATH`` (default: ``HTTPTRACK_DB`` or the default location).
"""

from __future__ import annotations

from pathlib import Path

import click

from ._cache import cache
from ._common import db_option, resolve_db
from ._demo import demo
from ._run import run

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="httptrack")
def main() -> None:
    """httptrack: see, price and cache every LLM API call your Python programs make.

    Calls are recorded into one SQLite file; open it with these commands, with
    `httptrack ui`, or with `datasette "$(httptrack path)"`.
    """


@main.command()
@db_option
def path(db: Path | None) -> None:
    """Print the path of the call log database."""
    click.echo(str(resolve_db(db)))


main.add_command(demo)
main.add_command(cache)
main.add_command(run)
