"""``httptrack export --format otlp`` (stored calls sent as spans, original times) and
``--format parquet`` (a typed file DuckDB reads back)."""

from __future__ import annotations

import json
import math
import random
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import duckdb
import httpx2
import openai
import pytest
from click.testing import CliRunner
from helpers import read_rows

import httptrack
from httptrack._exchange import new_call_id
from httptrack._fake import mock_transport
from httptrack.cli import main as cli
from httptrack.log._schema import COLUMN_NAMES
from httptrack.log._sqlite import connect, migrate

from .expect import check_span
from .receiver import Receiver

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def record_some_calls(db: Path) -> list[dict[str, Any]]:
    """A chat, a stream, an error, an Anthropic call and an embedding, recorded (otel off)."""
    http = httpx2.Client(transport=httptrack.TrackingTransport(mock_transport(httpx2), db=db, cache=False))
    sdk = openai.OpenAI(api_key="sk-test-export-key", http_client=http, max_retries=0)
    with httptrack.attribute(user="alice", session="s-1", feature="faq"):
        sdk.chat.completions.create(model="gpt-4o", messages=QUESTION)
    for _ in sdk.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True):
        pass
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="rate-limited", messages=QUESTION)
    sdk.embeddings.create(model="text-embedding-3-small", input="hello")
    anthropic.Anthropic(api_key="sk-ant-x", http_client=http).messages.create(
        model="claude-haiku-4-5", max_tokens=20, messages=QUESTION
    )
    assert httptrack.flush()
    return read_rows(db)


def export(*args: str) -> Any:
    result = CliRunner().invoke(cli, ["export", *args], catch_exceptions=False)
    return result


# -- OTLP backfill ------------------------------------------------------------------------------


def test_backfill_sends_every_call_with_its_original_times(db: Path, receiver: Receiver) -> None:
    rows = record_some_calls(db)
    result = export("--format", "otlp", "--endpoint", receiver.url, "--db", str(db))
    assert result.exit_code == 0, result.output
    assert f"Sent {len(rows)} calls" in result.output
    assert len(receiver.spans) == len(rows)
    for row in rows:
        span = receiver.span_for(row["id"])
        provider = "anthropic" if row["provider"] == "anthropic" else "openai"
        check_span(span, row, provider, row["operation"])
        assert span.parent_span_id == ""
        if row["ttft_ms"] is not None:
            ((name, at, _),) = span.events
            assert name == "httptrack.first_token" and abs((at - span.start_ns) / 1e6 - row["ttft_ms"]) < 0.01
    assert len({s.trace_id for s in receiver.spans}) == len(rows)  # a trace per call
    assert "sk-test-export-key" not in repr(receiver.spans)


def test_backfill_filters_batches_and_headers(
    db: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from httptrack.otel import _backfill

    rows = record_some_calls(db)
    monkeypatch.setattr(_backfill, "BATCH_SPANS", 2)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "backfilled")
    result = export(
        "--format", "otlp", "--endpoint", receiver.url + "/v1/traces", "--header", "Authorization=Bearer t0k",
        "--provider", "openai", "--db", str(db),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    openai_rows = [r for r in rows if r["provider"] == "openai"]
    assert sorted(s.attributes["httptrack.call_id"] for s in receiver.spans) == sorted(
        r["id"] for r in openai_rows
    )
    assert receiver.requests == ["/v1/traces"] * math.ceil(len(openai_rows) / 2)
    assert all(h["authorization"] == "Bearer t0k" for h in receiver.headers)
    assert {s.resource["service.name"] for s in receiver.spans} == {"backfilled"}


def test_backfill_to_an_endpoint_that_refuses(db: Path, receiver: Receiver) -> None:
    record_some_calls(db)
    result = CliRunner().invoke(
        cli, ["export", "--format", "otlp", "--endpoint", receiver.url + "/nope", "--db", str(db)]
    )
    assert result.exit_code == 1
    assert "/nope/v1/traces did not accept a batch of 5 spans (0 were sent)" in result.output


def test_a_malformed_header_is_not_echoed(db: Path) -> None:
    """``--header "Authorization: Bearer …"`` (a colon, not ``=``) is refused without
    printing its value: a token in the error would land in the terminal or the CI log."""
    record_some_calls(db)
    result = CliRunner().invoke(
        cli,
        ["export", "--format", "otlp", "--endpoint", "http://x", "--header", "Authorization: Bearer t0k-secret",
         "--db", str(db)],
    )  # fmt: skip
    assert result.exit_code == 2 and "NAME=VALUE" in result.output
    assert "t0k-secret" not in result.output


def test_endpoint_is_only_for_otlp(db: Path) -> None:
    record_some_calls(db)
    result = CliRunner().invoke(cli, ["export", "--endpoint", "http://x", "--db", str(db)])
    assert result.exit_code == 2 and "for --format otlp" in result.output


# -- Parquet -------------------------------------------------------------------------------------


def test_parquet_of_real_calls(db: Path, tmp_path: Path) -> None:
    rows = record_some_calls(db)
    out = tmp_path / "calls.parquet"
    result = export("--format", "parquet", str(out), "--db", str(db))
    assert result.exit_code == 0, result.output
    con = duckdb.connect()
    types = dict(
        con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{out}')").fetchall()
    )
    assert list(types) == list(COLUMN_NAMES)
    assert types["started_at"] == "TIMESTAMP WITH TIME ZONE"
    assert (types["input_tokens"], types["cost_usd"], types["properties"]) == ("BIGINT", "DOUBLE", "VARCHAR")
    got = con.execute(
        f"SELECT id, epoch_ms(started_at), input_tokens, cost_usd, properties, response_body FROM '{out}' ORDER BY id"
    ).fetchall()
    for (call_id, ms, tokens, cost, properties, body), row in zip(
        got, sorted(rows, key=lambda r: r["id"]), strict=True
    ):
        started = datetime.fromisoformat(row["started_at"].replace("Z", "+00:00"))
        assert (call_id, ms, tokens, cost, properties, body) == (
            row["id"], round(started.timestamp() * 1000), row["input_tokens"], row["cost_usd"],
            row["properties"], row["response_body"],
        )  # fmt: skip
    assert json.loads(got[0][4]) == {"feature": "faq"}


def test_parquet_needs_a_file(db: Path) -> None:
    record_some_calls(db)
    result = CliRunner().invoke(cli, ["export", "--format", "parquet", "--db", str(db)])
    assert result.exit_code == 2 and "-o calls.parquet" in result.output


def make_log(path: Path, n: int) -> None:
    """``n`` varied calls written straight into a call log (the real schema)."""
    rng = random.Random(21)
    conn = connect(path)
    migrate(conn)
    insert = f"INSERT INTO calls ({', '.join(COLUMN_NAMES)}) VALUES ({', '.join('?' * len(COLUMN_NAMES))})"
    base = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    index = {c: i for i, c in enumerate(COLUMN_NAMES)}
    batch = []
    for i in range(n):
        ts = base + i * 7.123
        row: list[Any] = [None] * len(COLUMN_NAMES)
        error = i % 40 == 0
        values = {
            "id": new_call_id(ts),
            "started_at": datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "provider": rng.choice(["openai", "anthropic", "gemini"]),
            "host": "api.example.com",
            "operation": "chat",
            "model": rng.choice(["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash"]),
            "status": "error" if error else "success",
            "input_tokens": None if error else rng.randrange(1, 5000),
            "output_tokens": None if error else rng.randrange(0, 900),
            "cost_usd": None if error else rng.random() / 100,
            "latency_ms": rng.uniform(50, 5000),
            "cached": int(i % 9 == 0),
            "user": f"u{rng.randrange(50)}",
            "properties": json.dumps({"n": i}) if i % 3 == 0 else None,
            "request_body": "x" * rng.randrange(0, 400),
        }
        for key, value in values.items():
            row[index[key]] = value
        batch.append(row)
        if len(batch) == 10_000 or i == n - 1:
            conn.execute("BEGIN")
            conn.executemany(insert, batch)
            conn.execute("COMMIT")
            batch.clear()
    conn.close()


def test_parquet_of_50k_calls_reads_back_equal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from httptrack.cli import _parquet

    monkeypatch.setattr(_parquet, "BATCH_ROWS", 7_000)  # several record batches, one short
    db = tmp_path / "big.db"
    make_log(db, 50_000)
    out = tmp_path / "big.parquet"
    result = export("--format", "parquet", "-o", str(out), "--db", str(db))
    assert result.exit_code == 0, result.output
    figures = "count(*), count(properties), sum(input_tokens), sum(output_tokens), sum(cost_usd), sum(latency_ms), sum(cached)"
    with sqlite3.connect(db) as conn:
        expected = conn.execute(f"SELECT {figures}, min(started_at), max(started_at) FROM calls").fetchone()
    con = duckdb.connect()
    got = con.execute(
        f"SELECT {figures}, strftime(min(started_at) AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%g') || 'Z',"
        f" strftime(max(started_at) AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%g') || 'Z' FROM '{out}'"
    ).fetchone()
    assert got[:4] == expected[:4] and got[6:] == expected[6:]
    assert got[4] == pytest.approx(expected[4], rel=1e-12) and got[5] == pytest.approx(expected[5], rel=1e-12)
    import pyarrow.parquet as pq

    assert pq.ParquetFile(out).metadata.num_row_groups >= 50_000 // 7_000


def test_parquet_columns_and_nothing_matching(db: Path, tmp_path: Path) -> None:
    rows = record_some_calls(db)
    one, none = tmp_path / "one.parquet", tmp_path / "none.parquet"
    assert export("-f", "parquet", "-c", "cost_usd", "-o", str(one), "--db", str(db)).exit_code == 0
    assert export("-f", "parquet", "-o", str(none), "--user", "nobody", "--db", str(db)).exit_code == 0
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*), sum(cost_usd) FROM '{one}'").fetchone() == (
        len(rows),
        pytest.approx(sum(r["cost_usd"] or 0 for r in rows)),
    )
    assert [c for c, *_ in con.execute(f"DESCRIBE SELECT * FROM '{one}'").fetchall()] == ["cost_usd"]
    assert con.execute(f"SELECT count(*) FROM '{none}'").fetchone() == (0,)
    assert len(con.execute(f"DESCRIBE SELECT * FROM '{none}'").fetchall()) == len(COLUMN_NAMES)
