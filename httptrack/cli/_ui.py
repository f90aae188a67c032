"""``httptrack ui``: datasette over the call log, set up and opened in the browser."""

from __future__ import annotations

import threading
import time
import webbrowser
from pathlib import Path
from typing import Any

import click

from ._common import db_option, open_log_or_fail

__all__ = ["is_loopback", "make_datasette", "ui"]

MISSING = "httptrack ui needs datasette, an optional extra: pip install 'httptrack[ui]'"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (``127.0.0.1``, ``::1``, ``localhost``)."""
    import ipaddress

    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name, or an interface's address: reachable from elsewhere


def make_datasette(path: Path) -> Any:
    """A ``Datasette`` serving the call log at ``path`` read-only, with httptrack's plugin
    (facets, descriptions, search, canned queries, dashboard) registered."""
    from datasette.app import Datasette
    from datasette.plugins import pm

    from .. import _datasette
    from .._datasette._metadata import SETTINGS

    if not pm.is_registered(_datasette) and "httptrack" not in {name for name, _ in pm.list_name_plugin()}:
        pm.register(_datasette, name="httptrack")
    # Not immutable: the app's writer keeps adding calls, and every page shows the latest.
    # Datasette opens such files with mode=ro, so the UI never takes a write lock.
    return Datasette([str(path)], settings=dict(SETTINGS), metadata={"title": "httptrack"})


@click.command()
@click.option(
    "-p",
    "--port",
    type=click.IntRange(0, 65535),
    default=8001,
    show_default=True,
    help="Port to serve on (0: any free port).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on. The log holds prompts: think before exposing it.",
)
@click.option("--no-browser", is_flag=True, help="Do not open a browser window.")
@db_option
def ui(port: int, host: str, no_browser: bool, db: Path | None) -> None:
    """Browse the call log in datasette, with a dashboard.

    Every call with facets and search, views of cost per day, model, user and service,
    errors, slowest calls and cache savings, and a dashboard with charts. Read-only:
    safe while apps are recording.

    Needs the `ui` extra: pip install 'httptrack[ui]'.

    \b
    Examples:
      httptrack ui
      httptrack ui --port 8080 --no-browser
    """
    try:
        import uvicorn
        from datasette.app import Datasette  # noqa: F401
    except ImportError:
        raise click.ClickException(MISSING) from None
    with open_log_or_fail(db) as log:  # a call log? (read-only: nothing is written)
        path = log.path
    if not isinstance(path, Path):
        raise click.ClickException(
            f"the UI reads SQLite logs; {path} is a Postgres log: copy it with "
            "`httptrack export --db URL --to sqlite FILE` and open that, or point Grafana, Metabase "
            "or Superset at the same views (docs/scaling.md)"
        )
    if not is_loopback(host):
        click.echo(
            f"Warning: serving on {host}, beyond this machine: anyone who can reach it reads every "
            "prompt and answer in the log, with no password. Put authentication in front of it, "
            "or use the default --host 127.0.0.1.",
            err=True,
        )
    ds = make_datasette(path)
    server = uvicorn.Server(uvicorn.Config(ds.app(), host=host, port=port, log_level="warning"))

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.05)
        bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
        url = f"http://{'localhost' if host in ('127.0.0.1', '::1') else host}:{bound}/-/httptrack"
        click.echo(f"httptrack ui: {url}  (database {path}; Ctrl+C to stop)")
        if not no_browser:
            webbrowser.open(url)

    threading.Thread(target=announce, daemon=True).start()
    server.run()
