"""``httptrack demo``."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

__all__ = ["demo"]


@click.command()
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Record into this database (default: a new temporary one, so your own log stays clean).",
)
def demo(db: Path | None) -> None:
    """Record a few demo calls against a built-in fake provider.

    OpenAI, Anthropic and Ollama calls, in-process: no API key, no network. Prints
    what was recorded."""
    from .._demo import run_demo
    from .._format import money
    from ..log._reader import open_log

    if db is None:
        db = Path(tempfile.mkdtemp(prefix="httptrack-demo-")) / "demo.db"
    # The demo's own cache folder, beside its database: your real cache stays clean too.
    click.echo(f"Recording demo calls into {db}:")
    run_demo(db, echo=click.echo, cache_dir=db.parent / "demo-cache")
    click.echo("")
    with open_log(db) as log:
        records = list(log.calls(newest_first=False))
        click.echo(
            f"{'provider':<10} {'model':<24} {'status':<7} {'in':>6} {'out':>5} {'cached':>6} "
            f"{'cost':>11} {'ms':>7}  user   from"
        )
        for r in records:
            cost = "n/a" if r.cost_usd is None else money(r.cost_usd)
            click.echo(
                f"{r.provider:<10} {(r.response_model or r.model or '-')[:24]:<24} {r.status:<7} "
                f"{_n(r.input_tokens):>6} {_n(r.output_tokens):>5} {_n(r.cached_input_tokens):>6} "
                f"{cost:>11} {r.latency_ms or 0:>7.2f}  {r.user or '-':<6} "
                f"{f'cache (saved {money(r.cost_saved_usd or 0)})' if r.cached else 'provider'}"
            )
        total = log.stats()[0]
    click.echo("")
    click.echo(
        f"{total['calls']} calls, {total['errors']} error(s), {total['total_tokens']} tokens, "
        f"{money(total['cost_usd'] or 0)} spent, {money(total['cost_saved_usd'] or 0)} saved by the cache."
    )
    click.echo(f"Look closer: httptrack calls --db {db}   |   httptrack show --db {db}")
    click.echo(_ui_hint(db))


def _ui_hint(db: Path) -> str:
    """How to see it in a browser: with the UI's extra installed, or how to install it."""
    import importlib.util

    if importlib.util.find_spec("datasette") is not None:
        return f"In your browser: httptrack ui --db {db}"
    return f"In your browser: pip install 'httptrack[ui]', then httptrack ui --db {db}"


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)
