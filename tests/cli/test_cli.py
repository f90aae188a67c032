"""The ``httptrack`` command, run on a database filled through the transport: JSON output
checked exactly against the rows, tables by their content."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from recorded_log import age_calls, record_calls, rows, unique_prefix

import httptrack
from httptrack.cli import main
from httptrack.cli._calls import LIST_COLUMNS
from httptrack.log._reader import STAT_FIELDS
from httptrack.log._schema import COLUMN_NAMES
from httptrack.log._sqlite import SCHEMA_VERSION

README = Path(__file__).resolve().parents[2] / "README.md"
JSON_COLUMNS = ("properties", "request_headers", "response_headers")


@pytest.fixture
def ids(db: Path) -> list[str]:
    return record_calls(db)


def run(*args: Any, ok: bool = True, input: str | None = None) -> Result:
    result = CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def decoded(row: dict[str, Any], columns: tuple[str, ...] | list[str]) -> dict[str, Any]:
    out = {c: row[c] for c in columns}
    for key in JSON_COLUMNS:
        if isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    return out


# -- calls ------------------------------------------------------------------------------------


def test_calls_table(db: Path, ids: list[str]) -> None:
    out = run("calls", "--db", db).stdout
    lines = out.splitlines()
    assert lines[0].split() == [
        "id",
        "started",
        "(UTC)",
        "provider",
        "model",
        "op",
        "status",
        "in",
        "out",
        "cost",
        "latency",
        "user",
        "service",
    ]
    listed = [line.split()[0] for line in lines[2:]]
    assert listed == ids[::-1]
    by_id = {line.split()[0]: line for line in lines[2:]}
    assert re.search(
        r"openai\s+gpt-4o-mini\s+chat\s+success\s+14\s+12\s+\$0\.0000093\s+\S+ ms\s+alice\s+summarizer",
        by_id[ids[0]],
    )
    assert re.search(r"openai\s+rate-limited\s+chat\s+error 429\s+-\s+-\s+\$0\s", by_id[ids[7]])
    assert re.search(
        r"ollama\s+nomic-embed-text\s+embeddings\s+success\s+2\s+-\s+\$0\s.*carol\s+indexer", by_id[ids[4]]
    )


def test_calls_json_is_every_column_but_bodies(db: Path, ids: list[str]) -> None:
    data = json.loads(run("calls", "--json", "--db", db).stdout)
    assert data == [decoded(r, LIST_COLUMNS) for r in reversed(rows(db))]
    assert "request_body" not in data[0]


@pytest.mark.parametrize(
    ("args", "picked"),
    [
        (["-n", "3"], [7, 6, 5]),
        (["-n", "0"], [7, 6, 5, 4, 3, 2, 1, 0]),
        (["--provider", "anthropic"], [3, 2]),
        (["-m", "llama3.2", "-m", "claude-haiku-4-5"], [5, 2]),
        (["-u", "alice", "--status", "error"], [6]),
        (["-s", "indexer", "--operation", "embeddings"], [4]),
        (["--session", "s-1"], [1, 0]),
        (["--not-cached", "-n", "2"], [7, 6]),
        (["--cached"], []),
        (["-q", "umbrellas"], [5, 2]),
        (["-q", "france capital"], [0]),
        (["--since", "2h"], [7, 6, 5, 4, 3]),
        (["--until", "2h"], [2, 1, 0]),
    ],
)
def test_calls_filters(db: Path, ids: list[str], args: list[str], picked: list[int]) -> None:
    age_calls(db, {ids[0]: timedelta(days=2), ids[1]: timedelta(hours=5), ids[2]: timedelta(hours=3)})
    data = json.loads(run("calls", *args, "--json", "--db", db).stdout)
    assert [c["id"] for c in data] == [ids[i] for i in picked]


def test_search_lists_and_exports_by_start_time(db: Path) -> None:
    from recorded_log import record_overlapping_calls

    stream, call = record_overlapping_calls(db)  # the stream started first, was written last
    data = json.loads(run("calls", "-q", "overlap", "--json", "--db", db).stdout)
    assert [c["id"] for c in data] == [call, stream]
    data = json.loads(run("calls", "-q", "overlap", "-n", "1", "--json", "--db", db).stdout)
    assert [c["id"] for c in data] == [call]
    lines = run("export", "-q", "overlap", "-c", "id", "--db", db).stdout.splitlines()
    assert [json.loads(line) for line in lines] == [{"id": stream}, {"id": call}]
    lines = run("export", "-q", "overlap", "-c", "id", "--newest-first", "-n", "1", "--db", db).stdout
    assert [json.loads(line) for line in lines.splitlines()] == [{"id": call}]


def test_calls_messages(db: Path, tmp_path: Path) -> None:
    result = run("calls", "--db", tmp_path / "missing.db", ok=False)
    assert result.exit_code == 1
    assert result.stderr == f"Error: no such file: {tmp_path / 'missing.db'}\n"
    result = run("calls", ok=False)  # the default place, nothing recorded there yet
    assert result.exit_code == 1
    assert "no call log at" in result.stderr and "make a tracked call first" in result.stderr
    record_calls(db)
    result = run("calls", "-u", "nobody", "--db", db)
    assert result.stdout == "" and "No calls match." in result.stderr
    result = run("calls", "-n", "2", "--db", db)
    assert "(the newest 2; -n 0 for all)" in result.stderr
    result = run("calls", "--since", "yesterday", "--db", db, ok=False)
    assert result.exit_code == 2 and "not a time: 'yesterday'" in result.stderr


def test_db_defaults_to_httptrack_db(db: Path, ids: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPTRACK_DB", str(db))
    assert run("path").stdout == f"{db}\n"
    assert [c["id"] for c in json.loads(run("calls", "--json").stdout)] == ids[::-1]


def test_cache_hits_are_listed_and_counted(db: Path, tmp_path: Path) -> None:
    """A repeated call served from httptrack's response cache: listed with --cached, free,
    and what it would have cost counted as saved."""
    import httpx2

    from httptrack._fake import mock_transport

    transport = httptrack.TrackingTransport(mock_transport(httpx2), db=db, cache_dir=tmp_path / "cache")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Cache me"}]}
    with httpx2.Client(transport=transport, headers={"authorization": "Bearer sk-x"}) as client:
        first = client.post("https://api.openai.com/v1/chat/completions", json=body)
        httptrack.flush()  # stored in the cache once recorded
        second = client.post("https://api.openai.com/v1/chat/completions", json=body)
    assert second.headers["x-httptrack-cache"] == "HIT"
    assert httptrack.flush(10)
    hit = json.loads(run("calls", "--cached", "--json", "--db", db).stdout)
    assert [c["id"] for c in hit] == [second.headers["x-httptrack-call-id"]]
    paid = rows(db, "id = ?", (first.headers["x-httptrack-call-id"],))[0]
    assert (hit[0]["cached"], hit[0]["cost_usd"], hit[0]["cost_saved_usd"]) == (1, 0.0, paid["cost_usd"])
    totals = json.loads(run("stats", "--json", "--db", db).stdout)["totals"]
    assert (totals["calls"], totals["cache_hits"], totals["cost_usd"]) == (2, 1, paid["cost_usd"])
    assert totals["cost_saved_usd"] == paid["cost_usd"]
    out = run("stats", "--db", db).stdout
    assert "served from cache 1" in out and "saved by httptrack's cache $" in out
    assert "cached" in run("calls", "--db", db).stdout.splitlines()[2]


# -- show -------------------------------------------------------------------------------------


def test_show(db: Path, ids: list[str]) -> None:
    out = run("show", ids[1], "--db", db).stdout
    raw = rows(db, "id = ?", (ids[1],))[0]
    assert out.startswith(f"Call {ids[1]}  ")
    assert "request     POST https://api.openai.com/v1/chat/completions" in out
    assert "provider    openai (api.openai.com), chat, stream" in out
    assert "status      success, HTTP 200, finished: stop" in out
    assert f"tokens      {raw['input_tokens']} in + {raw['output_tokens']} out = {raw['total_tokens']}" in out
    assert "attribution user alice, service summarizer, session s-1" in out
    # The request pretty-printed, the stream reassembled into its text, then as received.
    request = json.dumps(json.loads(raw["request_body"]), indent=2)
    assert request in out
    assert "── Generated text" in out and "\nHello! You said: Tell me about Lyon\n" in out
    assert "── Response (as streamed)" in out and out.rstrip().endswith("data: [DONE]")
    assert "sk-test-not-real" not in out


def test_show_error_call_and_options(db: Path, ids: list[str]) -> None:
    out = run("show", ids[6], "--no-bodies", "--headers", "--db", db).stdout
    assert "status      error, HTTP 404" in out
    assert "error       [model_not_found]" in out
    assert "── Request headers" in out and "── Request ─" not in out
    assert "authorization: [redacted]" in out
    assert run("show", unique_prefix(ids[6], ids), "--db", db).stdout.startswith(f"Call {ids[6]}")
    assert run("show", "--db", db).stdout.startswith(f"Call {ids[7]}")  # the newest
    result = run("show", "01ZZZZ", "--db", db, ok=False)
    assert result.exit_code == 1 and "no call with id '01ZZZZ'" in result.stderr


@pytest.mark.parametrize(
    ("latency", "ttft", "line"),
    [
        # A buffered stream: every token arrived with the first, 1 ms of "generation".
        (181.0, 180.0, "latency     181 ms, first token after 180 ms\n"),
        (229.9, 180.0, "latency     230 ms, first token after 180 ms\n"),  # 49.9 ms: still too short
        (230.0, 180.0, "latency     230 ms, first token after 180 ms, 180 tokens/s\n"),  # 9 in 50 ms
        (1180.0, 180.0, "latency     1.18 s, first token after 180 ms, 9 tokens/s\n"),
    ],
)
def test_show_rate_only_over_a_real_generation_time(
    db: Path, ids: list[str], latency: float, ttft: float, line: str
) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "UPDATE calls SET latency_ms = ?, ttft_ms = ?, output_tokens = 9 WHERE id = ?",
            [latency, ttft, ids[1]],
        )
    conn.close()
    out = run("show", ids[1], "--no-bodies", "--db", db).stdout
    assert line in out
    assert out.count("latency ") == 1


def test_json_option_help_says_what_it_prints() -> None:
    assert "Print the call as JSON instead of text" in run("show", "--help").stdout
    assert "Print JSON instead of a table" not in run("show", "--help").stdout


def test_show_json(db: Path, ids: list[str]) -> None:
    data = json.loads(run("show", ids[2], "--json", "--db", db).stdout)
    raw = rows(db, "id = ?", (ids[2],))[0]
    expected = decoded(raw, [c for c in COLUMN_NAMES if c not in ("request_headers", "response_headers")])
    for key in ("stream", "tokens_estimated", "cached", "body_truncated"):
        expected[key] = bool(expected[key])
    expected["started_at"] = raw["started_at"].replace("Z", "Z")
    assert data.pop("started_at").replace("+00:00", "Z")[:23] == raw["started_at"][:23]
    expected.pop("started_at")
    assert data == expected
    lean = json.loads(run("show", ids[2], "--json", "--no-bodies", "--db", db).stdout)
    assert "request_body" not in lean and "response_text" not in lean and lean["id"] == ids[2]


# -- stats ------------------------------------------------------------------------------------


def test_stats_json(db: Path, ids: list[str]) -> None:
    data = json.loads(run("stats", "--json", "--db", db).stdout)
    all_rows = rows(db)
    totals = data["totals"]
    assert list(data) == ["totals", "by", "groups"] and data["by"] == "model"  # per model by default
    assert list(json.loads(run("stats", "--by", "none", "--json", "--db", db).stdout)) == ["totals"]
    assert (totals["calls"], totals["errors"], totals["error_rate"], totals["cache_hits"]) == (8, 2, 0.25, 0)
    assert totals["input_tokens"] == sum(r["input_tokens"] or 0 for r in all_rows)
    assert totals["output_tokens"] == sum(r["output_tokens"] or 0 for r in all_rows)
    assert totals["cost_usd"] == round(sum(r["cost_usd"] for r in all_rows), 9)
    with httptrack.open_log(db) as log:
        assert totals == log.totals()
        by_user = json.loads(run("stats", "--by", "user", "--json", "--db", db).stdout)
        assert by_user == {"totals": log.totals(), "by": "user", "groups": log.stats(by="user")}
    assert [(g["user"], g["calls"], g["errors"]) for g in by_user["groups"]] == [
        ("bob", 3, 1),
        ("alice", 3, 1),
        ("carol", 2, 0),
    ]


@pytest.mark.parametrize("by", ["model", "service", "operation", "status"])
def test_stats_by_json_matches_the_rows(db: Path, ids: list[str], by: str) -> None:
    """Each group's figures, summed here from the rows themselves (not through httptrack)."""
    from recorded_log import check_stats

    all_rows = rows(db)

    def key(r: dict[str, Any]) -> Any:
        return (r["response_model"] or r["model"]) if by == "model" else r[by]

    data = json.loads(run("stats", "--by", by, "--json", "--db", db).stdout)
    assert list(data) == ["totals", "by", "groups"] and data["by"] == by
    check_stats(data["totals"], all_rows)
    groups = data["groups"]
    assert [g[by] for g in groups] == sorted(
        {key(r) for r in all_rows},
        key=lambda k: (
            -sum(r["cost_usd"] or 0 for r in all_rows if key(r) == k),
            -sum(1 for r in all_rows if key(r) == k),
            "" if k is None else str(k),
        ),
    )
    for group in groups:
        assert list(group) == [by, *STAT_FIELDS]
        check_stats(group, [r for r in all_rows if key(r) == group[by]])
    if by == "service":
        assert {g["service"]: g["calls"] for g in groups} == {
            "summarizer": 3,
            "support": 2,
            "indexer": 2,
            None: 1,
        }
    if by == "status":
        assert {g["status"]: (g["calls"], g["errors"]) for g in groups} == {
            "success": (6, 0),
            "error": (2, 2),
        }


def test_stats_tables(db: Path, ids: list[str]) -> None:
    all_rows = rows(db)
    out = run("stats", "--db", db).stdout
    assert "calls       8   errors 2 (25.0%)   served from cache 0" in out
    tokens_in = sum(r["input_tokens"] or 0 for r in all_rows)
    tokens_out = sum(r["output_tokens"] or 0 for r in all_rows)
    assert f"tokens      {tokens_in} in + {tokens_out} out = {tokens_in + tokens_out}" in out
    assert re.search(r"latency     p50 [\d.]+ ms   p95 [\d.]+ ms", out)
    out = run("stats", "--by", "provider", "--db", db).stdout
    table = out.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == [
        "provider",
        "calls",
        "errors",
        "cached",
        "in",
        "out",
        "cost",
        "share",
        "saved",
        "p50",
        "p95",
    ]
    cells = {line.split()[0]: line.split() for line in table[2:]}
    assert set(cells) == {"anthropic", "openai", "ollama", "total"}
    assert cells["openai"][1:3] == ["4", "50.0%"]
    assert cells["ollama"][1:3] == ["2", "0.0%"]
    assert cells["total"][1] == "8" and cells["total"][7] == "100.0%"
    assert table[2].split()[0] == "anthropic"  # the most expensive first


def test_stats_by_day_since(db: Path, ids: list[str]) -> None:
    age_calls(db, {ids[0]: timedelta(days=3), ids[1]: timedelta(days=2)})
    days = {r["started_at"][:10]: 0 for r in rows(db)}
    for r in rows(db):
        days[r["started_at"][:10]] += 1
    data = json.loads(run("stats", "--by", "day", "--json", "--db", db).stdout)
    assert [(g["day"], g["calls"]) for g in data["groups"]] == sorted(days.items(), reverse=True)
    recent = json.loads(run("stats", "--since", "36h", "--json", "--db", db).stdout)
    assert recent["totals"]["calls"] == 6
    result = run("stats", "--by", "colour", "--db", db, ok=False)
    assert result.exit_code == 2 and "'colour' is not one of" in result.stderr


def test_stats_on_an_empty_selection(db: Path, ids: list[str]) -> None:
    assert run("stats", "-u", "nobody", "--db", db).stdout == "No calls match.\n"
    data = json.loads(run("stats", "-u", "nobody", "--json", "--db", db).stdout)
    assert data["totals"]["calls"] == 0 and data["totals"]["cost_usd"] is None


# -- export -----------------------------------------------------------------------------------


def test_export_jsonl(db: Path, ids: list[str]) -> None:
    lines = run("export", "--db", db).stdout.splitlines()
    assert [json.loads(line) for line in lines] == [decoded(r, COLUMN_NAMES) for r in rows(db)]


def written(value: Any) -> str:
    """A value as a CSV export writes it: a float as a decimal, never in exponent form."""
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")
    return "" if value is None else str(value)


def test_export_csv(db: Path, ids: list[str]) -> None:
    out = run("export", "--format", "csv", "--db", db).stdout
    table = list(csv.reader(io.StringIO(out)))
    assert table[0] == list(COLUMN_NAMES)
    expected = [[written(r[c]) for c in COLUMN_NAMES] for r in rows(db)]
    assert table[1:] == expected
    costs = [line[COLUMN_NAMES.index("cost_usd")] for line in table[1:]]
    assert "0.0000093" in costs  # 9.3e-06, as a spreadsheet reads it
    assert not [c for c in costs if "e" in c.lower()]


def test_export_options(db: Path, ids: list[str], tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    result = run(
        "export",
        "-f",
        "csv",
        "-c",
        "id,model,cost_usd",
        "-u",
        "bob",
        "--newest-first",
        "-o",
        target,
        "--db",
        db,
    )
    assert result.stderr == f"Exported 3 calls to {target}\n"
    assert list(csv.reader(io.StringIO(target.read_text()))) == [["id", "model", "cost_usd"]] + [
        [r["id"], r["model"], written(r["cost_usd"])] for r in reversed(rows(db, "user = 'bob'"))
    ]
    lean = [
        json.loads(line) for line in run("export", "--no-bodies", "-n", "2", "--db", db).stdout.splitlines()
    ]
    assert [r["id"] for r in lean] == ids[:2]
    assert not {"request_body", "response_body", "response_text", "request_headers"} & set(lean[0])
    result = run("export", "-c", "id,nope", "--db", db, ok=False)
    assert result.exit_code == 2 and "no such column: nope" in result.stderr


def test_export_progress_bar(db: Path, ids: list[str], tmp_path: Path) -> None:
    result = run("export", "--progress", "-o", tmp_path / "x.jsonl", "--db", db)
    assert "Exporting 8 calls" in result.stderr
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 8


def test_export_streams_in_constant_memory(tmp_path: Path) -> None:
    """Exporting 20,000 calls (about 30 MB of bodies) holds a few hundred of them at a time."""
    import sys
    import tracemalloc

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import bench_log

    from httptrack.log._bodies import register_functions

    db = tmp_path / "big.db"
    bench_log.generate(db, 20_000)
    conn = sqlite3.connect(db)
    register_functions(conn)  # the bodies' text (they are stored compressed, as the writer does)
    (total_bytes,) = conn.execute(
        "SELECT sum(length(httptrack_body(request_body)) + coalesce(length(httptrack_body(response_body)), 0))"
        " FROM calls"
    ).fetchone()
    conn.close()
    tracemalloc.start()
    try:
        out = tmp_path / "big.jsonl"
        run("export", "-o", out, "--db", db)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(out.read_text().splitlines()) == 20_000
    assert total_bytes > 25_000_000
    assert peak < total_bytes / 5, (peak, total_bytes)


# -- prune, status, path, demo, ui ------------------------------------------------------------


def test_prune_deletes_old_calls_everywhere(db: Path, ids: list[str]) -> None:
    age_calls(db, {ids[2]: timedelta(days=40), ids[5]: timedelta(days=31), ids[0]: timedelta(days=5)})
    assert run("prune", "--older-than", "30d", "--dry-run", "--db", db).stdout.startswith(
        "Would prune the 2 calls that started before "
    )
    result = run("prune", "--older-than", "30d", "--db", db, ok=False)  # no terminal: needs --yes
    assert result.exit_code == 2 and "pass --yes" in result.stderr
    assert len(rows(db)) == 8
    with httptrack.open_log(db) as log:
        by_user = log.stats(by="user")
        by_day = log.stats(by="day")
    out = run("prune", "--older-than", "30d", "--yes", "--db", db).stdout
    assert out.startswith("Deleted 2 calls that started before ")
    assert {r["id"] for r in rows(db)} == set(ids) - {ids[2], ids[5]}
    with httptrack.open_log(db) as log:
        assert list(log.calls(query="umbrellas")) == []  # both were the only umbrella calls
        assert log.count() == 6
        # The deleted calls still count in the daily totals: what was spent stays known.
        assert log.totals()["calls"] == 8
        assert log.stats(by="user") == by_user and log.stats(by="day") == by_day
    assert run("prune", "--older-than", "30d", "--yes", "--db", db).stdout.startswith("Nothing to prune")


def test_prune_bodies_only(db: Path, ids: list[str]) -> None:
    age_calls(db, {ids[2]: timedelta(days=10)})
    out = run("prune", "--older-than", "7d", "--bodies-only", "-y", "--db", db).stdout
    assert out.startswith("Dropped the bodies of 1 call that started before ")
    pruned = rows(db, "id = ?", (ids[2],))[0]
    assert (pruned["request_body"], pruned["response_body"], pruned["response_text"]) == (None, None, None)
    assert pruned["input_tokens"] == 16 and pruned["user"] == "bob"
    with httptrack.open_log(db) as log:
        assert [r.id for r in log.calls(query="umbrellas")] == [ids[5]]
        assert log.totals()["calls"] == 8


WHEN = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def test_prune_keep_bodies_beside_older_than(db: Path, ids: list[str]) -> None:
    """A retention policy in one command: calls go after 90 days, their bodies after 7."""
    age_calls(
        db,
        {
            ids[0]: timedelta(days=100),
            ids[2]: timedelta(days=40),
            ids[5]: timedelta(days=10),
            ids[1]: timedelta(days=3),
        },
    )
    before = {r["id"]: r for r in rows(db)}
    args = ("prune", "--older-than", "90d", "--keep-bodies", "7d", "--db", db)
    out = run(*args, "--dry-run").stdout
    assert re.fullmatch(
        f"Would prune the 1 call that started before ({WHEN}), "
        f"and the bodies of 2 calls that started before ({WHEN}).\n",
        out,
    ), out
    result = run(*args, ok=False)  # no terminal: needs --yes
    assert result.exit_code == 2 and "this would prune the 1 call that started before " in result.stderr
    assert "and the bodies of 2 calls" in result.stderr and rows(db) == list(before.values())
    out = run(*args, "--yes").stdout
    match = re.fullmatch(
        f"Deleted 1 call that started before ({WHEN}).\n"
        f"Dropped the bodies of 2 calls that started before ({WHEN}).\n",
        out,
    )
    assert match, out
    after = {r["id"]: r for r in rows(db)}
    assert set(after) == set(ids) - {ids[0]}
    bodies = ("request_body", "response_body", "response_text")
    for call_id, row in after.items():
        if call_id in (ids[2], ids[5]):  # older than 7 days: the call without its bodies
            assert [row[c] for c in bodies] == [None, None, None]
            assert {k: v for k, v in row.items() if k not in bodies} == {
                k: v for k, v in before[call_id].items() if k not in bodies
            }
        else:
            assert row == before[call_id]
    with httptrack.open_log(db) as log:
        assert list(log.calls(query="umbrellas")) == []  # ids[2] and ids[5] were the umbrella calls
        assert [r.id for r in log.calls(query="Lyon")] == [ids[4], ids[1]]
        assert log.count() == 7 and log.totals()["calls"] == 8  # the deleted call still counts
    conn = sqlite3.connect(db)
    try:  # the search index holds exactly the calls that still have text
        indexed = {r[0] for r in conn.execute("SELECT id FROM calls_fts_docsize")}
        kept = {
            r[0] for r in conn.execute("SELECT rowid FROM calls WHERE id NOT IN (?, ?)", [ids[2], ids[5]])
        }
        assert indexed == kept
    finally:
        conn.close()
    out = run(*args, "--yes").stdout
    assert re.fullmatch(
        f"Nothing to prune: no calls before {WHEN}, no calls before {WHEN} with bodies.\n", out
    )


def test_prune_keep_bodies_alone(db: Path, ids: list[str]) -> None:
    age_calls(db, {ids[2]: timedelta(days=10), ids[3]: timedelta(days=8), ids[1]: timedelta(days=1)})
    out = run("prune", "--keep-bodies", "7d", "--yes", "--db", db).stdout
    assert re.fullmatch(f"Dropped the bodies of 2 calls that started before {WHEN}.\n", out), out
    assert [r["id"] for r in rows(db, "request_body IS NULL")] == [ids[2], ids[3]]
    assert len(rows(db)) == 8
    with httptrack.open_log(db) as log:
        assert [r.id for r in log.calls(query="umbrellas")] == [ids[5]]
        assert list(log.calls(query="shipping")) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "say what to prune: --older-than, --keep-bodies, --max-size, or a mix"),
        (["--max-size", "lots"], "expected a size in bytes such as 10485760 or 10MiB, got 'lots'"),
        (["--older-than", "30d", "--keep-bodies", "7d", "--bodies-only"], "--keep-bodies and --bodies-only"),
        (["--keep-bodies", "7d", "--bodies-only"], "--keep-bodies and --bodies-only do not go together"),
        (["--bodies-only"], "--bodies-only needs --older-than"),
        (
            ["--older-than", "7d", "--keep-bodies", "30d"],
            "--keep-bodies 30d is longer than --older-than 7d: the calls would be deleted before their bodies",
        ),
        (["--keep-bodies", "soon"], "not a time: 'soon'"),
    ],
)
def test_prune_usage_errors(db: Path, ids: list[str], args: list[str], message: str) -> None:
    result = run("prune", *args, "--yes", "--db", db, ok=False)
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split()), result.stderr
    assert len(rows(db)) == 8 and not rows(db, "request_body IS NULL")


def test_prune_keep_bodies_as_long_as_older_than(db: Path, ids: list[str]) -> None:
    age_calls(db, {ids[2]: timedelta(days=40)})
    out = run("prune", "--older-than", "30d", "--keep-bodies", "30d", "--yes", "--db", db).stdout
    assert re.fullmatch(
        f"Deleted 1 call that started before ({WHEN}).\nDropped the bodies of 0 calls that started before \\1.\n",
        out,
    ), out


def test_prune_vacuum(db: Path, ids: list[str]) -> None:
    age_calls(db, {i: timedelta(days=100) for i in ids[:4]})
    out = run("prune", "--older-than", "90d", "--vacuum", "--yes", "--db", db).stdout
    assert "Deleted 4 calls" in out and "MB →" in out
    with httptrack.open_log(db) as log:
        assert [r.id for r in log.calls(query="umbrellas")] == [ids[5]]
        assert log.count() == 4 and log.totals()["calls"] == 8


def test_reindex_after_editing_by_hand(db: Path, ids: list[str]) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM calls WHERE id = ?", [ids[2]])
        conn.execute("UPDATE calls SET user = 'zoe' WHERE id = ?", [ids[0]])
    conn.close()
    out = run("reindex", "--db", db).stdout
    assert out == "Rebuilt the search index and the daily totals of 7 calls.\n"
    with httptrack.open_log(db) as log:
        assert [r.id for r in log.calls(query="umbrellas")] == [ids[5]]
        assert {g["user"]: g["calls"] for g in log.stats(by="user")} == {
            "zoe": 1,
            "alice": 2,
            "bob": 2,
            "carol": 2,
        }
        assert log.totals()["calls"] == 7
    assert run("reindex", "--db", db.parent / "none.db", ok=False).exit_code == 1


def test_status_and_path(db: Path, ids: list[str]) -> None:
    info = json.loads(run("status", "--json", "--db", db).stdout)
    all_rows = rows(db)
    assert info["path"] == str(db) and info["calls"] == 8
    assert (info["oldest"], info["newest"]) == (all_rows[0]["started_at"], all_rows[-1]["started_at"])
    assert info["schema_version"] == SCHEMA_VERSION and info["search_index"] is True
    out = run("status", "--db", db).stdout
    assert f"database    {db}\n" in out and "calls       8\n" in out and "full-text search on" in out
    assert run("path", "--db", db).stdout == f"{db}\n"


def test_demo_records_into_its_own_database(tmp_path: Path) -> None:
    target = tmp_path / "demo.db"
    out = run("demo", "--db", target).stdout
    assert "8 calls, 1 error(s)" in out
    recorded = rows(target)
    assert len(recorded) == 8
    # The last call repeats the first: served from the demo's own cache, beside its database.
    first, last = recorded[0], recorded[-1]
    assert (first["cached"], last["cached"]) == (0, 1)
    assert last["cost_usd"] == 0.0 and last["cost_saved_usd"] == first["cost_usd"] > 0
    assert "X-Httptrack-Cache: HIT" in out
    assert (tmp_path / "demo-cache").is_dir()


def test_ui_without_datasette(db: Path, ids: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "datasette.app", None)
    result = run("ui", "--no-browser", "--db", db, ok=False)
    assert result.exit_code == 1
    assert "pip install 'httptrack[ui]'" in result.stderr


class FakeServer:
    """Stands in for uvicorn.Server: "binds" at once, then returns once the URL was
    announced (no socket, no event loop)."""

    instances: list[FakeServer] = []

    def __init__(self, config: Any) -> None:
        self.config = config
        self.started = False
        self.should_exit = False
        self.servers: list[Any] = []
        FakeServer.instances.append(self)

    def run(self) -> None:
        import threading
        from types import SimpleNamespace

        port = self.config.port or 54321  # port 0: the OS picks one
        socket = SimpleNamespace(getsockname=lambda: (self.config.host, port))
        self.servers = [SimpleNamespace(sockets=[socket])]
        self.started = True
        for thread in threading.enumerate():
            if thread.name.endswith("(announce)"):
                thread.join(5)


@pytest.mark.parametrize(
    ("args", "url", "opened"),
    [
        ([], "http://localhost:8001/-/httptrack", True),
        (["--port", "8080", "--no-browser"], "http://localhost:8080/-/httptrack", False),
        (["-p", "0", "--host", "0.0.0.0"], "http://0.0.0.0:54321/-/httptrack", True),
    ],
)
def test_ui_serves_the_log_and_opens_the_browser(
    db: Path, ids: list[str], monkeypatch: pytest.MonkeyPatch, args: list[str], url: str, opened: bool
) -> None:
    import uvicorn

    FakeServer.instances.clear()
    browsed: list[str] = []
    monkeypatch.setattr(uvicorn, "Server", FakeServer)
    monkeypatch.setattr("webbrowser.open", browsed.append)
    out = run("ui", *args, "--db", db).stdout
    assert out == f"httptrack ui: {url}  (database {db}; Ctrl+C to stop)\n"
    assert browsed == ([url] if opened else [])
    (server,) = FakeServer.instances
    host = args[args.index("--host") + 1] if "--host" in args else "127.0.0.1"
    assert (server.config.host, server.config.log_level) == (host, "warning")
    assert server.config.port == {"8080": 8080, "0": 0}.get(next((a for a in args if a.isdigit()), ""), 8001)


def test_ui_app_is_datasette_over_the_log(db: Path, ids: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """What `ui` hands the server is datasette over this log, read-only, with the plugin."""
    import uvicorn

    import httptrack.cli._ui as ui_module

    made: list[Any] = []
    real = ui_module.make_datasette
    monkeypatch.setattr(ui_module, "make_datasette", lambda path: made.append(real(path)) or made[-1])
    monkeypatch.setattr(uvicorn, "Server", FakeServer)
    run("ui", "--no-browser", "--db", db)
    (ds,) = made
    assert [d.path for d in ds.databases.values() if d.path] == [str(db)]
    assert ds.setting("suggest_facets") is False and ds.setting("allow_download") is False
    assert ds.databases[db.stem].is_mutable  # not immutable: calls recorded meanwhile show


# -- every command: help, --db, README ----------------------------------------------------------


def commands() -> dict[str, click.Command]:
    return dict(main.commands)


def test_every_command_has_help_and_a_db_option() -> None:
    for name, command in commands().items():
        help_text = run(name, "--help").stdout
        assert command.help and len(command.help.split()) >= 5, name
        assert "--db" in help_text or isinstance(command, click.Group), name
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and param.name != "help":
                assert param.help, f"httptrack {name} {param.opts[0]} has no help"


def test_every_command_is_in_the_readme() -> None:
    text = README.read_text()
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`httptrack ([a-z-]+)", section))
    assert set(commands()) <= listed, set(commands()) - listed


def test_every_command_is_in_the_cli_docs() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    for name in commands():
        assert f"## `httptrack {name}" in text, name


# -- reading never writes; clear errors -------------------------------------------------------

READ_COMMANDS = [
    ["calls"],
    ["calls", "--json"],
    ["show"],
    ["stats"],
    ["status"],
    ["export"],
    ["ui", "--no-browser"],
]


def fingerprint(path: Path) -> dict[str, bytes]:
    """The bytes of a database and of its journal files, whichever exist."""
    return {p.name: p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file()}


@pytest.mark.parametrize("args", [*READ_COMMANDS, ["prune", "--older-than", "1d"], ["reindex"]])
def test_a_file_that_is_not_a_call_log_is_refused_untouched(tmp_path: Path, args: list[str]) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    with conn:
        conn.execute("CREATE TABLE calls (name TEXT)")  # a table called calls, not httptrack's
    conn.close()
    before = fingerprint(other)
    result = run(*args, "--db", other, ok=False)
    assert result.exit_code == 1
    assert (
        result.stderr == f"Error: {other} is not an httptrack call log (its calls table is not httptrack's)\n"
    )
    assert fingerprint(other) == before
    text = tmp_path / "notes.txt"
    text.write_text("not a database, just notes\n" * 50)
    result = run(*args, "--db", text, ok=False)
    assert result.exit_code == 1 and f"{text} is not an httptrack call log" in result.stderr
    assert text.read_text() == "not a database, just notes\n" * 50
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    result = run(*args, "--db", empty, ok=False)
    assert result.stderr == f"Error: {empty} is not an httptrack call log (it has no calls table)\n"
    assert empty.read_bytes() == b""


@pytest.mark.parametrize("args", READ_COMMANDS)
def test_reading_an_older_log_writes_nothing(
    db: Path, ids: list[str], args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn
    from recorded_log import downgrade_to_v1

    monkeypatch.setattr(uvicorn, "Server", FakeServer)
    httptrack.flush()
    downgrade_to_v1(db)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = fingerprint(db)
    run(*args, "--db", db)
    assert fingerprint(db) == before


def test_wrong_path_and_folder_messages(tmp_path: Path) -> None:
    typo = tmp_path / "no-such-folder" / "calls.db"
    result = run("stats", "--db", typo, ok=False)
    assert result.stderr == f"Error: no such file: {typo} (there is no folder {typo.parent} either)\n"
    assert not typo.parent.exists()
    folder = tmp_path / "folder.db"
    folder.mkdir()
    result = run("calls", "--db", folder, ok=False)
    assert result.exit_code in (1, 2) and "folder.db" in result.stderr and "Traceback" not in result.stderr


def test_a_log_sqlite_cannot_open_read_only_is_read_as_a_snapshot(
    db: Path, ids: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only copy whose write-ahead log would need recovering makes SQLite refuse
    even to read it ("attempt to write a readonly database"): it is read as it is, the
    main file without its -wal."""
    from httptrack.log import _reader

    httptrack.flush()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    real = _reader.connect

    class Refusing:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def execute(self, sql: str, *args: Any) -> Any:
            raise sqlite3.OperationalError("attempt to write a readonly database")

        def close(self) -> None:
            self.conn.close()

    monkeypatch.setattr(
        _reader, "connect", lambda path, readonly=False: Refusing(real(path, readonly=readonly))
    )
    data = json.loads(run("calls", "--json", "--db", db).stdout)
    assert [c["id"] for c in data] == ids[::-1]
    assert json.loads(run("stats", "--json", "--db", db).stdout)["totals"]["calls"] == 8


def test_a_read_only_copy_is_read(db: Path, ids: list[str], tmp_path: Path) -> None:
    import os
    import shutil

    if os.geteuid() == 0:
        pytest.skip("root reads and writes any file: a read-only copy needs another user")
    httptrack.flush()
    folder = tmp_path / "copy"
    folder.mkdir()
    for path in db.parent.glob(db.name + "*"):
        shutil.copy(path, folder / path.name)
    for path in folder.iterdir():
        path.chmod(0o444)
    folder.chmod(0o555)
    try:
        data = json.loads(run("calls", "--json", "--db", folder / db.name).stdout)
        assert len(data) == 8
    finally:
        folder.chmod(0o755)


def test_huge_values_are_clear_errors_or_mean_everything(db: Path, ids: list[str]) -> None:
    result = run("calls", "--since", "99999999999d", "--db", db, ok=False)
    assert result.exit_code == 2 and "further back than the calendar goes" in result.stderr
    result = run("stats", "--until", "99999999999w", "--db", db, ok=False)
    assert result.exit_code == 2 and "further back than the calendar goes" in result.stderr
    listed = json.loads(run("calls", "-n", "99999999999999999999", "--json", "--db", db).stdout)
    assert len(listed) == 8
    lines = run("export", "-n", str(2**70), "--db", db).stdout.splitlines()
    assert len(lines) == 8


@pytest.mark.parametrize("args", [["export"], ["calls", "--json"], ["calls", "-n", "0"]])
def test_a_closed_pipe_ends_quietly(tmp_path: Path, args: list[str]) -> None:
    """``httptrack export | head``: the reader goes away; no traceback."""
    import os
    import subprocess
    import sys

    db = tmp_path / "big.db"
    record_calls(db)
    conn = sqlite3.connect(db)
    with conn:  # enough calls to fill a pipe many times over
        columns = [r[1] for r in conn.execute("PRAGMA table_info(calls)")]
        select = ", ".join("id || '-' || ?" if c == "id" else f'"{c}"' for c in columns)
        for n in range(300):
            conn.execute(f"INSERT INTO calls SELECT {select} FROM calls WHERE id NOT LIKE '%-%'", [n])
    conn.close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(
        [sys.executable, "-m", "httptrack.cli", *args, "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline()
    process.stdout.close()  # as `head` does once it has its lines
    try:
        errors = process.stderr.read()
        process.wait(timeout=60)
    finally:
        process.kill()
        process.stderr.close()
    assert errors == b"", errors.decode()
    assert process.returncode in (0, 1)


def test_stats_breaks_down_per_model_by_default(db: Path, ids: list[str]) -> None:
    out = run("stats", "--db", db).stdout
    table = out.split("\n\n", 1)[1].splitlines()
    assert table[0].split()[:2] == ["model", "calls"]
    models = {line.split()[0] for line in table[2:]}
    assert models >= {"gpt-4o-mini", "claude-haiku-4-5", "rate-limited", "total"}
    assert "\n\n" not in run("stats", "--by", "none", "--db", db).stdout.strip()
    asked = json.loads(run("stats", "--by", "requested_model", "--json", "--db", db).stdout)
    assert {g["requested_model"]: g["errors"] for g in asked["groups"]}["rate-limited"] == 1


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        ("127.0.0.1", False),
        ("localhost", False),
        ("::1", False),
        ("0.0.0.0", True),
        ("::", True),
        ("192.168.1.5", True),
        ("myhost", True),
    ],
)
def test_ui_warns_when_serving_beyond_this_machine(
    db: Path, ids: list[str], monkeypatch: pytest.MonkeyPatch, host: str, warned: bool
) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "Server", FakeServer)
    result = run("ui", "--no-browser", "--host", host, "--db", db)
    assert ("Warning: serving on" in result.stderr) is warned
    if warned:
        assert "every prompt and answer" in result.stderr and "authentication" in result.stderr


def test_demo_names_a_ui_this_install_can_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    out = run("demo", "--db", tmp_path / "a.db").stdout
    assert f"In your browser: httptrack ui --db {tmp_path / 'a.db'}" in out
    assert "datasette " not in out
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "datasette" else real(name, *a)
    )
    out = run("demo", "--db", tmp_path / "b.db").stdout
    assert "pip install 'httptrack[ui]', then httptrack ui --db" in out


def test_export_lines_are_the_json_of_each_row() -> None:
    """Each row one line of JSON (msgspec's encoder: quicker), the same values as json's;
    what it cannot encode (a lone surrogate) as json.dumps writes it."""
    from httptrack.cli._export import _json_line

    line = _json_line()
    row = {
        "id": "01J",
        "cost_usd": 4.9e-05,
        "n": 2**63 - 1,
        "text": 'é "quoted"\n',
        "none": None,
        "x": 0.1 + 0.2,
    }
    assert line(row).endswith("\n") and line(row).count("\n") == 1
    assert json.loads(line(row)) == row
    odd = {"text": "a\ud800b"}
    assert line(odd) == json.dumps(odd, ensure_ascii=False) + "\n"
