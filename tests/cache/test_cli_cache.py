"""``httptrack cache stats | clear | prune | path`` on a cache filled through the openai SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from click.testing import CliRunner, Result
from helpers import read_rows

import httptrack
from httptrack.cache import _store as _cache_store
from httptrack.cache._store import cache_stats, prune_cache
from httptrack.cli import main

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def run(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def client(db: Path, cache_dir: Path, **options: Any) -> openai.OpenAI:
    from httptrack._fake import mock_transport

    transport = httptrack.TrackingTransport(mock_transport(httpx2), db=db, cache_dir=cache_dir, **options)
    return openai.OpenAI(api_key="sk-test", http_client=httpx2.Client(transport=transport))


def fill(db: Path, cache_dir: Path) -> list[dict[str, Any]]:
    """Two chat calls and one embeddings call stored, then three chat hits and one embeddings hit."""
    sdk = client(db, cache_dir, cache_size_limit="50MiB")
    for model in ("gpt-4o-mini", "gpt-4o"):
        sdk.chat.completions.create(model=model, messages=QUESTION)
    sdk.embeddings.create(model="text-embedding-3-small", input="Paris")
    httptrack.flush()
    for model in ("gpt-4o-mini", "gpt-4o-mini", "gpt-4o"):
        sdk.chat.completions.create(model=model, messages=QUESTION)
    sdk.embeddings.create(model="text-embedding-3-small", input="Paris")
    return read_rows(db)


def test_stats_before_anything_was_cached(db: Path, cache_dir: Path) -> None:
    result = run("cache", "stats", "--db", str(db), "--cache-dir", str(cache_dir))
    assert result.exit_code == 0
    assert result.output == (
        f"No response cache at {cache_dir} yet.\n"
        "No call log yet: hits and savings appear once calls are recorded.\n"
    )
    data = json.loads(run("cache", "stats", "--db", str(db), "--cache-dir", str(cache_dir), "--json").output)
    assert (data["exists"], data["entries"], data["hits"], data["cacheable_calls"]) == (False, 0, 0, None)
    assert not cache_dir.exists()  # looking does not create it


def test_stats_counts_entries_hits_and_savings(db: Path, cache_dir: Path) -> None:
    rows = fill(db, cache_dir)
    hits = [r for r in rows if r["cached"]]
    assert len(rows) == 7 and len(hits) == 4
    saved = 0.0
    for row in rows:  # summed in table order, as SQLite does
        saved += row["cost_saved_usd"] or 0.0
    data = json.loads(run("cache", "stats", "--db", str(db), "--cache-dir", str(cache_dir), "--json").output)
    assert data["exists"] is True and data["directory"] == str(cache_dir)
    assert (data["entries"], data["expired"], data["size_limit"]) == (3, 0, 50 * 1024 * 1024)
    assert data["size_bytes"] > 0 and data["oldest"] <= data["newest"] <= time.time()
    assert (data["hits"], data["cacheable_calls"]) == (4, 7)
    assert data["tokens_saved"] == sum(r["total_tokens"] for r in hits)
    assert data["cost_saved_usd"] == saved > 0
    by_model = {m["model"]: m for m in data["by_model"]}
    mini = [r for r in hits if r["model"] == "gpt-4o-mini"]
    assert by_model[mini[0]["response_model"]]["hits"] == 2
    assert by_model[mini[0]["response_model"]]["cost_saved_usd"] == mini[0]["cost_saved_usd"] * 2

    text = run("cache", "stats", "--db", str(db), "--cache-dir", str(cache_dir)).output
    assert f"Cache folder   {cache_dir}\n" in text
    assert "Entries        3\n" in text
    assert " of 50.0 MiB\n" in text
    assert "Hits           4 (57% of 7 cacheable calls)\n" in text
    assert f"Tokens saved   {data['tokens_saved']:,}\n" in text
    assert f"Money saved    ${saved:.6f}\n" in text


def test_clear_removes_everything_and_running_transports_notice(db: Path, cache_dir: Path) -> None:
    fill(db, cache_dir)
    sdk = client(db, cache_dir)
    assert sdk.models.with_raw_response.list().headers["x-httptrack-cache"] == "MISS"
    httptrack.flush()
    assert sdk.models.with_raw_response.list().headers["x-httptrack-cache"] == "HIT"
    result = run("cache", "clear", "--cache-dir", str(cache_dir), "--json")
    assert json.loads(result.output) == {"directory": str(cache_dir), "removed": 4}
    assert cache_stats(cache_dir)["entries"] == 0
    assert sdk.models.with_raw_response.list().headers["x-httptrack-cache"] == "MISS"
    httptrack.flush()  # stored again
    assert run("cache", "clear", "--cache-dir", str(cache_dir)).output == (
        f"Removed 1 cached response from {cache_dir}.\n"
    )


def test_prune_expired_and_older_than(db: Path, cache_dir: Path) -> None:
    fill(db, cache_dir)
    # Two hours on, the chat answers (1 h) have expired; the embeddings (1 week) have not.
    later = time.time() + 7200
    assert cache_stats(cache_dir, now=later)["expired"] == 2
    assert prune_cache(cache_dir, now=later) == {"expired": 2, "old": 0}
    assert cache_stats(cache_dir)["entries"] == 1
    result = run("cache", "prune", "--cache-dir", str(cache_dir), "--older-than", "1d", "--json")
    assert json.loads(result.output) == {"directory": str(cache_dir), "expired": 0, "old": 0}
    result = run("cache", "prune", "--cache-dir", str(cache_dir), "--older-than", "0s")
    assert result.output == f"Removed 0 expired and 1 older cached response(s) from {cache_dir}.\n"
    assert cache_stats(cache_dir)["entries"] == 0


def test_prune_rejects_a_bad_duration(cache_dir: Path) -> None:
    result = CliRunner().invoke(
        main, ["cache", "prune", "--cache-dir", str(cache_dir), "--older-than", "soon"]
    )
    assert result.exit_code == 2
    assert "expected a duration such as 3600, 30m, 1h or 7d, got 'soon'" in result.output


def test_path_follows_settings(cache_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert run("cache", "path").output == f"{tmp_path / 'xdg-cache' / 'httptrack'}\n"
    monkeypatch.setenv("HTTPTRACK_CACHE_DIR", str(cache_dir))
    assert run("cache", "path").output == f"{cache_dir}\n"


def test_every_cache_command_has_help() -> None:
    for command in ("stats", "clear", "prune", "path"):
        result = run("cache", command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output
    assert all(c in run("cache", "--help").output for c in ("stats", "clear", "prune", "path"))


def test_a_clear_from_another_process_is_noticed(
    db: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        _cache_store, "GENERATION_CHECK_INTERVAL", 0.0
    )  # check on every lookup, not once a second
    sdk = client(db, cache_dir)
    sdk.models.list()
    httptrack.flush()
    assert sdk.models.with_raw_response.list().headers["x-httptrack-cache"] == "HIT"  # now held in memory
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-c", "from httptrack.cli import main; main()", "cache", "clear"]
    cleared = subprocess.run(
        [*command, "--cache-dir", str(cache_dir)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert cleared.stdout == f"Removed 1 cached response from {cache_dir}.\n"
    assert sdk.models.with_raw_response.list().headers["x-httptrack-cache"] == "MISS"
