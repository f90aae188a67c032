"""The CLI on a Postgres log (``--db postgresql://…`` or ``HTTPTRACK_DB``), on a real
throwaway server: ``calls``, ``show``, ``stats``, ``export`` (and ``--to sqlite``),
``limits``, ``prune``, ``status`` answer as they do on SQLite, and never print the password."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from click.testing import CliRunner

import httptrack
from httptrack._fake import mock_transport
from httptrack.cli import main

PASSWORD = "s3cret-pw"


def run(*args: Any, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    return result.output


def record(db: Any, users: tuple[str, ...] = ("alice", "bob", "alice"), limits: Any = None) -> None:
    transport = httptrack.TrackingTransport(mock_transport(httpx2), db=db, cache=False, limits=limits)
    client = openai.OpenAI(api_key="sk-test", max_retries=0, http_client=httpx2.Client(transport=transport))
    for user in users:
        with httptrack.attribute(user=user):
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": f"a question from {user} about tides"}],
            )
    assert httptrack.flush()


@pytest.fixture
def logs(pg_url: str, tmp_path: Path) -> tuple[str, Path]:
    """The same calls recorded into a Postgres log and a SQLite one."""
    lite = tmp_path / "calls.db"
    record(pg_url)
    record(lite)
    return pg_url, lite


def _stable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    drop = {"id", "started_at", "latency_ms", "ttft_ms", "pid", "request_id", "response_id"}
    return [{k: v for k, v in row.items() if k not in drop} for row in rows]


def _figures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Everything but the latencies (the two logs' calls took their own time)."""
    return [{k: v for k, v in row.items() if "latency" not in k} for row in rows]


def test_calls_stats_show_export_as_on_sqlite(logs: tuple[str, Path]) -> None:
    url, lite = logs
    pg_calls = json.loads(run("calls", "--db", url, "--json"))
    assert _stable(pg_calls) == _stable(json.loads(run("calls", "--db", lite, "--json")))
    assert len(pg_calls) == 3
    pg_stats = json.loads(run("stats", "--db", url, "--by", "user", "--json"))
    lite_stats = json.loads(run("stats", "--db", lite, "--by", "user", "--json"))
    assert _figures([pg_stats["totals"], *pg_stats["groups"]]) == _figures(
        [lite_stats["totals"], *lite_stats["groups"]]
    )
    assert [g["user"] for g in pg_stats["groups"]] == ["alice", "bob"]
    assert len(json.loads(run("calls", "--db", url, "--json", "-q", "tides", "-u", "alice"))) == 2
    shown = run("show", pg_calls[0]["id"], "--db", url)
    assert pg_calls[0]["id"] in shown and "tides" in shown
    exported = [json.loads(line) for line in run("export", "--db", url).splitlines()]
    assert [row["id"] for row in exported] == [row["id"] for row in reversed(pg_calls)]
    status = run("status", "--db", url)
    assert "127.0.0.1" in status and "***" in status


def test_environment_names_the_postgres_log(logs: tuple[str, Path]) -> None:
    url, _ = logs
    listed = run("calls", "--json", env={"HTTPTRACK_DB": url})
    assert len(json.loads(listed)) == 3
    assert PASSWORD not in run("path", env={"HTTPTRACK_DB": url})


def test_export_to_sqlite_makes_a_log_datasette_opens(logs: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = logs
    copy = tmp_path / "copy.db"
    result = CliRunner().invoke(main, ["export", "--db", url, "--to", "sqlite", str(copy)])
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    with httptrack.open_log(url) as pg, httptrack.open_log(copy) as local:
        assert list(local.rows()) == list(pg.rows())
        assert local.count(query="tides") == 3
        assert local.stats(by="user") == pg.stats(by="user")
    again = CliRunner().invoke(main, ["export", "--db", url, "--to", "sqlite", str(copy)])
    assert "3 already there" in again.output
    import asyncio

    from httptrack.cli._ui import make_datasette  # the UI's own datasette, on the copy

    ds = make_datasette(copy)
    response = asyncio.run(ds.client.get("/copy/calls.json?_shape=array"))
    assert response.status_code == 200 and len(response.json()) == 3


def test_limits_and_prune(pg_url: str) -> None:
    from httptrack import Limit

    record(pg_url, limits=[Limit(requests=100, per="day", by="user")])
    counters = json.loads(run("limits", "--db", pg_url, "--json"))["counters"]
    assert sorted((c["scope"]["user"], c["used"]) for c in counters) == [("alice", 2), ("bob", 1)]
    assert "Would prune the 3 calls" in run(
        "prune", "--db", pg_url, "--older-than", "2099-01-01", "--dry-run"
    )
    run("prune", "--db", pg_url, "--older-than", "2099-01-01", "--bodies-only", "--yes")
    with httptrack.open_log(pg_url) as log:
        assert [c.request_body for c in log.calls()] == [None] * 3
    run("prune", "--db", pg_url, "--older-than", "2099-01-01", "--yes")
    with httptrack.open_log(pg_url) as log:
        assert log.count() == 0


def test_unreachable_server_is_a_clear_error_without_the_password() -> None:
    result = CliRunner().invoke(main, ["calls", "--db", f"postgresql://u:{PASSWORD}@127.0.0.1:1/db"])
    assert result.exit_code == 1
    assert "cannot connect to postgresql://u:***@127.0.0.1:1/db" in result.output
    assert PASSWORD not in result.output
