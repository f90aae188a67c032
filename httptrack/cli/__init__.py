"""The ``httptrack`` command: read the call log, run the demo, manage the cache.

Every command takes ``--db PATH`` (default: ``HTTPTRACK_DB`` or the default location).
"""

from __future__ import annotations

import click

from ._cache import cache
from ._calls import calls
from ._demo import demo
from ._export import export
from ._limits import limits
from ._maintenance import migrate, prune, reindex
from ._run import run
from ._show import show
from ._stats import stats
from ._status import path, status
from ._ui import ui

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="httptrack")
def main() -> None:
    """httptrack: see, price and cache every LLM API call your Python programs make.

    Calls are recorded into one SQLite file; open it with these commands, with
    `httptrack ui`, or with `datasette "$(httptrack path)"`.
    """


main.add_command(calls)
main.add_command(show)
main.add_command(stats)
main.add_command(limits)
main.add_command(export)
main.add_command(prune)
main.add_command(reindex)
main.add_command(migrate)
main.add_command(status)
main.add_command(path)
main.add_command(ui)
main.add_command(demo)
main.add_command(cache)
main.add_command(run)
