"""``httptrack cache stats | clear | prune | path``: look after the response cache."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..log._url import LogTarget
from ._common import db_option, resolve_db

__all__ = ["cache"]

F = TypeVar("F", bound=Callable[..., Any])


def _cache_dir_option(func: F) -> F:
    return click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Cache folder (default: $HTTPTRACK_CACHE_DIR or ~/.cache/httptrack).",
    )(func)


def _cache_url_option(func: F) -> F:
    return click.option(
        "--cache-url",
        default=None,
        metavar="URL",
        help="A shared cache in Redis, redis://host:6379/0 (default: $HTTPTRACK_CACHE_URL).",
    )(func)


def _json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(func)


def _resolve_cache(cache_dir: Path | None, cache_url: str | None) -> tuple[Path | None, str | None]:
    """The cache the command is about: ``(folder, None)`` or ``(None, redis_url)``. A
    folder named on the command line wins, then a URL (``--cache-url``, then
    ``HTTPTRACK_CACHE_URL``), then the folder of the settings."""
    if cache_dir is not None:
        return cache_dir.expanduser(), None
    from .._settings import Settings, SettingsError, parse_cache_url

    try:
        if cache_url:
            return None, parse_cache_url(cache_url, "--cache-url")
        settings = Settings()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    if settings.cache_url:
        return None, settings.cache_url
    return settings.cache_dir, None


def _on_redis(action: Callable[[str], Any], url: str) -> Any:
    """``action(url)`` on the Redis cache; a server that cannot be reached is a clear error
    naming it (without its password)."""
    from .._redact import server_url

    try:
        return action(url)
    except ImportError:
        raise click.ClickException("redis-py is not installed: pip install 'httptrack[redis]'") from None
    except Exception as exc:
        raise click.ClickException(
            f"could not use the Redis cache at {server_url(url)}: {type(exc).__name__}: {exc}"
        ) from None


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    from .._settings import SettingsError, parse_duration

    try:
        return parse_duration(value, param.name or "duration")
    except SettingsError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
def cache() -> None:
    """Inspect and manage the response cache (identical requests answered locally)."""


@cache.command()
@_cache_dir_option
@_cache_url_option
def path(cache_dir: Path | None, cache_url: str | None) -> None:
    """Print the path of the cache folder (or the Redis URL, without its password)."""
    folder, url = _resolve_cache(cache_dir, cache_url)
    if url is not None:
        from .._redact import server_url

        click.echo(server_url(url))
        return
    click.echo(str(folder))


@cache.command()
@db_option
@_cache_dir_option
@_cache_url_option
@_json_option
def stats(db: Path | None, cache_dir: Path | None, cache_url: str | None, as_json: bool) -> None:
    """What the cache holds, and what it saved: entries and size on disk (or in Redis), and
    from the call log the hits, the tokens they did not spend and the money they saved."""
    folder, url = _resolve_cache(cache_dir, cache_url)
    if url is not None:
        from ..cache._redis import redis_cache_stats

        result = _on_redis(redis_cache_stats, url)
    else:
        from ..cache._store import cache_stats

        assert folder is not None
        result = cache_stats(folder)
    result.update(_savings(resolve_db(db)))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    if url is not None:
        limit = result["size_limit"]
        click.echo(f"Redis cache    {result['url']}")
        click.echo(f"Entries        {result['entries']:,} (Redis expires them itself)")
        click.echo(
            f"Server memory  {_bytes(result['size_bytes'])}"
            + (
                f" of {_bytes(limit)}, evicting {result['eviction_policy']}"
                if limit
                else " (no maxmemory set)"
            )
        )
    elif not result["exists"]:
        click.echo(f"No response cache at {folder} yet.")
    else:
        limit = result["size_limit"]
        click.echo(f"Cache folder   {folder}")
        click.echo(
            f"Entries        {result['entries']:,}"
            + (
                f" ({result['expired']:,} expired: `httptrack cache prune` removes them)"
                if result["expired"]
                else ""
            )
        )
        click.echo(
            f"Size           {_bytes(result['size_bytes'])}" + (f" of {_bytes(limit)}" if limit else "")
        )
        if result["newest"] is not None:
            click.echo(f"Stored         {_ago(result['oldest'])} to {_ago(result['newest'])}")
    calls = result["cacheable_calls"]
    if calls is None:
        click.echo("No call log yet: hits and savings appear once calls are recorded.")
        return
    rate = f" ({result['hits'] / calls:.0%} of {calls:,} cacheable calls)" if calls else ""
    click.echo(f"Hits           {result['hits']:,}{rate}")
    click.echo(f"Tokens saved   {result['tokens_saved']:,}")
    click.echo(f"Money saved    ${result['cost_saved_usd']:.6f}")


@cache.command()
@_cache_dir_option
@_cache_url_option
@_json_option
def clear(cache_dir: Path | None, cache_url: str | None, as_json: bool) -> None:
    """Remove every cached response. Running programs stop serving theirs within a second."""
    folder, url = _resolve_cache(cache_dir, cache_url)
    if url is not None:
        from .._redact import server_url
        from ..cache._redis import clear_redis_cache

        removed = _on_redis(clear_redis_cache, url)
        where: dict[str, str] = {"url": server_url(url)}
    else:
        from ..cache._store import clear_cache

        assert folder is not None
        removed = clear_cache(folder)
        where = {"directory": str(folder)}
    if as_json:
        click.echo(json.dumps({**where, "removed": removed}))
    else:
        place = next(iter(where.values()))
        click.echo(f"Removed {removed:,} cached response{'s' if removed != 1 else ''} from {place}.")


@cache.command()
@_cache_dir_option
@_cache_url_option
@click.option(
    "--older-than",
    callback=_duration,
    default=None,
    metavar="DURATION",
    help="Also remove entries stored longer ago than this (3600, 30m, 12h, 7d ...).",
)
@_json_option
def prune(cache_dir: Path | None, cache_url: str | None, older_than: float | None, as_json: bool) -> None:
    """Remove expired responses (and, with --older-than, older ones) to free space now
    rather than when the size limit is reached. (Redis needs none: it expires entries itself.)"""
    from ..cache._store import prune_cache

    folder, url = _resolve_cache(cache_dir, cache_url)
    if url is not None:
        from .._redact import server_url

        if as_json:
            click.echo(json.dumps({"url": server_url(url), "expired": 0, "old": 0}))
        else:
            click.echo(
                f"Nothing to prune in {server_url(url)}: Redis expires entries itself "
                "(`httptrack cache clear` removes them all)."
            )
        return
    assert folder is not None
    result = prune_cache(folder, older_than=older_than)
    if as_json:
        click.echo(json.dumps({"directory": str(folder), **result}))
        return
    text = f"Removed {result['expired']:,} expired"
    if older_than is not None:
        text += f" and {result['old']:,} older"
    click.echo(f"{text} cached response(s) from {folder}.")


def _savings(db: LogTarget) -> dict[str, Any]:
    """Hits and savings from the call log (``cached = 1`` rows)."""
    empty: dict[str, Any] = {
        "db": str(db),
        "hits": 0,
        "cacheable_calls": None,
        "tokens_saved": 0,
        "cost_saved_usd": 0.0,
        "by_model": [],
    }
    if not isinstance(db, Path) or not db.exists():  # (a Postgres log: not read here yet)
        return empty
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)) as conn:
            hits, calls, tokens, saved = conn.execute(
                "SELECT COALESCE(SUM(cached = 1), 0), COUNT(*),"
                " COALESCE(SUM(CASE WHEN cached = 1 THEN total_tokens END), 0),"
                " COALESCE(SUM(CASE WHEN cached = 1 THEN cost_saved_usd END), 0.0)"
                " FROM calls WHERE cache_key IS NOT NULL"
            ).fetchone()
            by_model = [
                {"model": model, "hits": n, "tokens_saved": t or 0, "cost_saved_usd": s or 0.0}
                for model, n, t, s in conn.execute(
                    "SELECT COALESCE(response_model, model), COUNT(*), SUM(total_tokens), SUM(cost_saved_usd)"
                    " FROM calls WHERE cached = 1 GROUP BY 1 ORDER BY 4 DESC, 2 DESC"
                )
            ]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return empty
        raise click.ClickException(f"could not read the call log at {db}: {exc}") from None
    return {
        "db": str(db),
        "hits": hits,
        "cacheable_calls": calls,
        "tokens_saved": tokens,
        "cost_saved_usd": saved,
        "by_model": by_model,
    }


def _bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GiB"  # pragma: no cover


def _ago(ts: float) -> str:
    seconds = max(0.0, time.time() - ts)
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"
